"""performance/md-cache: a cached absence of security.capability outlives writes and
passthrough writers (a write can end a capability, never make one); a cached value does
not, and everything else that drops xattrs drops the absence too."""
from __future__ import annotations

import errno
import os

import pytest

from xlators import FopError
from xlators.core.upcall import InvalidateInode

from xlators.testing import Harness, make_translator

from tests.xlators.cachelib import Clock, counting, over

MDC = "performance/md-cache"
CAP = b"security.capability"
Counter = counting("getxattr")


def build(leaf="storage/memory", leaf_options=None, **options):
    h, counter, leaf_xl = over(MDC, Counter, options, leaf, leaf_options)
    h.top.clock = clock = Clock()
    return h, counter, leaf_xl, clock


async def _capability(h, inode):
    """The capability md-cache answers: its value, or None for ENODATA."""
    try:
        return await h.top.getxattr(h.frame(), inode, CAP)
    except OSError as exc:                     # FopError, or posix's own OSError
        assert exc.errno == errno.ENODATA
        return None


async def _exclusive_create(h, path):
    """An exclusive create through md-cache (it records the capability as absent): the
    new inode and its fd."""
    fd = await h.create(path, flags=os.O_RDWR | os.O_CREAT | os.O_EXCL)
    return fd.inode, fd


def _asked(counter):
    return counter.counts.get("getxattr", 0)


async def test_absence_is_served_after_a_write_through_md_cache():
    h, c, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    fd = await h.create("/f")
    e = await h.lookup("/f")
    assert await _capability(h, e.inode) is None
    assert _asked(c) == 1
    await h.write(fd, b"12345")
    await h.top.fallocate(h.frame(), fd, 0, 0, 8192)
    assert await _capability(h, e.inode) is None
    assert _asked(c) == 1                      # the storage was not asked again
    assert (await h.top.getattr(h.frame(), e.inode)).size == 8192   # attributes were dropped
    await h.close(fd)


async def test_absence_from_an_exclusive_create_is_served_with_a_passthrough_writer(tmp_path):
    """The small-file create: create(O_EXCL), the bridge registers the passthrough fd,
    the kernel asks security.capability, writes, releases."""
    h, c, _, _ = build("storage/posix", {"directory": str(tmp_path)},
                       md_cache_timeout="600", cache_invalidation="on")
    inode, fd = await _exclusive_create(h, "/new")
    assert h.top.passthrough_fd(fd) is not None
    assert await _capability(h, inode) is None
    assert _asked(c) == 0
    with open(tmp_path / "new", "ab") as f:         # the kernel's write, past the graph
        f.write(b"x" * 4096)
    assert await _capability(h, inode) is None
    await h.close(fd)
    assert await _capability(h, inode) is None    # kept at release too
    assert _asked(c) == 0


async def test_absence_learnt_while_a_passthrough_writer_is_open_is_served(tmp_path):
    h, c, _, _ = build("storage/posix", {"directory": str(tmp_path)},
                       md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"abc")
    fd = await h.open("/f", os.O_WRONLY)
    assert h.top.passthrough_fd(fd) is not None
    inode = fd.inode
    assert await _capability(h, inode) is None
    assert await _capability(h, inode) is None
    assert _asked(c) == 1
    await h.close(fd)


async def test_a_present_capability_is_not_kept_across_a_write():
    h, c, leaf, _ = build(md_cache_timeout="600", cache_invalidation="on")
    fd = await h.create("/f")
    e = await h.lookup("/f")
    await leaf.setxattr(h.frame(), e.inode, CAP, b"caps", 0)   # below md-cache
    assert await _capability(h, e.inode) == b"caps"
    assert await _capability(h, e.inode) == b"caps"
    assert _asked(c) == 1
    await h.write(fd, b"12345")
    await _capability(h, e.inode)
    assert _asked(c) == 2                      # asked again: the write may have ended it
    await h.close(fd)


async def test_a_present_capability_is_not_served_with_a_passthrough_writer(tmp_path):
    h, c, leaf, _ = build("storage/posix", {"directory": str(tmp_path)},
                          md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    try:
        await leaf.setxattr(h.frame(), e.inode, CAP, b"\x01\x00\x00\x02" + b"\0" * 16, 0)
    except OSError as exc:                     # a brick that cannot hold one (no root)
        pytest.skip(f"security.capability not settable here: {exc}")
    assert await _capability(h, e.inode) is not None
    fd = await h.open("/f", os.O_WRONLY)
    assert h.top.passthrough_fd(fd) is not None
    before = _asked(c)
    await _capability(h, e.inode)
    await _capability(h, e.inode)
    assert _asked(c) == before + 2             # never from the cache while the writer is open
    await h.close(fd)
    await _capability(h, e.inode)
    assert _asked(c) == before + 3             # the release dropped what it learnt


async def test_setxattr_of_the_capability_forgets_its_absence():
    h, c, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    inode, fd = await _exclusive_create(h, "/new")
    await h.write(fd, b"abc")
    assert await _capability(h, inode) is None
    await h.top.setxattr(h.frame(), inode, CAP, b"v", 0)
    assert await _capability(h, inode) == b"v"
    await h.close(fd)


async def test_an_upcall_drops_the_absence():
    """Someone else may have set a capability: an invalidation upcall (posix watch-brick)
    drops the absence even after writes kept it."""
    h, c, leaf, _ = build(md_cache_timeout="600", cache_invalidation="on")
    inode, fd = await _exclusive_create(h, "/new")
    await h.write(fd, b"abc")
    assert await _capability(h, inode) is None
    assert _asked(c) == 0
    leaf.upcall(InvalidateInode(inode, -1, 0))
    assert await _capability(h, inode) is None
    assert _asked(c) == 1                      # asked the storage again
    await h.close(fd)


async def test_the_absence_kept_across_writes_still_times_out():
    h, c, _, clock = build(md_cache_timeout="5")
    inode, fd = await _exclusive_create(h, "/new")
    await h.write(fd, b"abc")
    clock.now += 4
    await h.write(fd, b"def")
    assert await _capability(h, inode) is None
    assert _asked(c) == 0
    clock.now += 1                             # 5 s since the create recorded it
    assert await _capability(h, inode) is None
    assert _asked(c) == 1
    await h.close(fd)


async def test_other_xattrs_are_dropped_by_a_write():
    h, c, leaf, _ = build(md_cache_timeout="600", cache_invalidation="on",
                          xattr_cache_list="user.x")
    fd = await h.create("/f")
    e = await h.lookup("/f")
    await _capability(h, e.inode)
    with pytest.raises(FopError):
        await h.top.getxattr(h.frame(), e.inode, b"user.x")
    assert _asked(c) == 2
    await h.write(fd, b"1")
    with pytest.raises(FopError):
        await h.top.getxattr(h.frame(), e.inode, b"user.x")   # anyone can add one
    assert _asked(c) == 3
    await h.close(fd)


# -- over write-behind (perf.vol's order): writes acknowledged before they land ------------

def _over_write_behind():
    """md-cache over a getxattr counter over write-behind over storage/memory."""
    leaf = make_translator("storage/memory", (), {})
    wb = make_translator("performance/write-behind", (leaf,), {}, itable=leaf.itable)
    counter = Counter("mid", [wb], {}, itable=leaf.itable)
    top = make_translator(MDC, (counter,),
                          {"md-cache-timeout": "600", "cache-invalidation": "on"},
                          itable=leaf.itable)
    h = Harness(top)
    h.init()
    return h, counter, leaf


async def test_over_write_behind_the_absence_is_kept_and_a_value_ends_with_the_write():
    h, c, leaf = _over_write_behind()
    inode, fd = await _exclusive_create(h, "/new")
    await h.write(fd, b"abc")                       # queued in write-behind
    assert await _capability(h, inode) is None
    assert _asked(c) == 0
    # a capability set below, then a write acknowledged by write-behind before it lands:
    # the storage ends the capability where the write lands, and md-cache must not
    # serve the value from before it
    await leaf.setxattr(h.frame(), inode, CAP, b"caps", 0)
    h.top._invalidate(inode)                        # as an upcall would
    assert await _capability(h, inode) == b"caps"
    await h.write(fd, b"def")
    assert await _capability(h, inode) is None      # write-behind let the write land first
    assert await _capability(h, inode) is None      # and that absence is cached
    assert _asked(c) == 2
    await h.close(fd)
