"""performance/open-behind: deferred read-only opens, made when needed, never lost."""
from __future__ import annotations

import errno
import os

import pytest
import trio
import trio.testing

from xlators import FopError, SetAttr, Translator, default_registry
from xlators.core.inode import Fd, Loc
from xlators.performance.open_behind import OpenBehind
from xlators.testing import Harness, check_passthrough, make_translator

OB = "performance/open-behind"


class Counter(Translator):
    type = "test/counter"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[str] = []
        self.open_error = 0

    async def open(self, frame, inode, flags, fd):
        self.calls.append("open")
        if self.open_error:
            raise FopError(self.open_error)
        return await self.child.open(frame, inode, flags, fd)

    async def release(self, frame, fd):
        self.calls.append("release")
        return await self.child.release(frame, fd)

    async def flush(self, frame, fd):
        self.calls.append("flush")
        return await self.child.flush(frame, fd)


def build(leaf="storage/memory", leaf_options=None, **options):
    leaf_xl = make_translator(leaf, (), leaf_options or {})
    counter = Counter("counter", [leaf_xl], {}, itable=leaf_xl.itable)
    opts = {k.replace("_", "-"): v for k, v in options.items()}
    ob = make_translator(OB, (counter,), opts, itable=leaf_xl.itable)
    h = Harness(ob)
    h.init()
    return h, counter, leaf_xl


async def test_open_close_without_io_never_reaches_the_child():
    h, c, _ = build()
    await h.write_file("/f", b"data")
    c.calls.clear()
    fd = await h.open("/f", os.O_RDONLY)
    st = await h.top.getattr(h.frame(), fd.inode, fd)       # fstat
    assert st.size == 4
    await h.close(fd)
    assert c.calls == []
    assert h.top.dump()["never_opened"] == 1 and h.top.dump()["pending"] == 0


async def test_read_opens_first_then_reads():
    h, c, _ = build()
    await h.write_file("/f", b"data")
    c.calls.clear()
    fd = await h.open("/f", os.O_RDONLY)
    assert c.calls == []
    assert await h.read(fd, 10) == b"data"
    assert await h.read(fd, 10, 2) == b"ta"
    await h.close(fd)
    assert c.calls == ["open", "flush", "release"]


@pytest.mark.parametrize("flags", [os.O_RDWR, os.O_WRONLY, os.O_RDONLY | os.O_TRUNC])
async def test_writing_or_truncating_opens_are_not_deferred(flags):
    h, c, _ = build()
    await h.write_file("/f", b"data")
    c.calls.clear()
    fd = await h.open("/f", flags)
    assert c.calls == ["open"]
    await h.close(fd)


async def test_unlink_makes_the_deferred_open_first():
    """The file stays readable through an fd opened before its last name went."""
    h, c, _ = build()
    await h.write_file("/f", b"precious")
    fd = await h.open("/f", os.O_RDONLY)
    assert "open" not in c.calls
    await h.unlink("/f")
    assert c.calls.count("open") == 1 and h.top.dump()["forced_by_unlink"] == 1
    assert await h.read(fd, 100) == b"precious"
    await h.close(fd)


async def test_rename_over_makes_the_deferred_open_first(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("storage/posix tests run as root")
    (tmp_path / "old").write_bytes(b"old contents")
    (tmp_path / "new").write_bytes(b"new")
    h, c, _ = build("storage/posix", {"directory": str(tmp_path), "reserve": "0"})
    try:
        fd = await h.open("/old", os.O_RDONLY)
        await h.rename("/new", "/old")
        assert await h.read(fd, 100) == b"old contents"
        await h.close(fd)
        fd = await h.open("/old", os.O_RDONLY)          # unlink by posix, for real
        await h.unlink("/old")
        assert await h.read(fd, 100) == b"new"
        await h.close(fd)
    finally:
        h.fini()


async def test_open_error_reaches_the_fop_that_needed_it():
    h, c, _ = build()
    await h.write_file("/f", b"data")
    fd = await h.open("/f", os.O_RDONLY)
    c.open_error = errno.EIO
    with pytest.raises(FopError) as ei:
        await h.read(fd, 10)
    assert ei.value.errno == errno.EIO
    c.open_error = 0
    assert await h.read(fd, 10) == b"data"             # tried again
    await h.close(fd)


async def test_unprivileged_open_is_checked_before_it_is_answered():
    h, c, _ = build()
    await h.write_file("/f", b"data", mode=0o600)
    with pytest.raises(FopError) as ei:
        await h.open("/f", os.O_RDONLY, frame=h.frame(uid=1000, gid=1000))
    assert ei.value.errno == errno.EACCES


async def test_lazy_open_off_opens_in_the_background():
    h, c, _ = build(lazy_open="off")
    await h.write_file("/f", b"data")
    c.calls.clear()
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        await trio.testing.wait_all_tasks_blocked()
        assert c.calls == ["open"]
        assert await h.read(fd, 10) == b"data"
        await h.close(fd)
    assert c.calls == ["open", "flush", "release"]


async def test_release_during_a_background_open_releases_below():
    h, c, _ = build(lazy_open="off")
    await h.write_file("/f", b"data")
    c.calls.clear()
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        await h.close(fd)                  # before the background open ran
    assert c.calls in ([], ["open", "release"]) and h.top.dump()["pending"] == 0


async def test_pass_through_defers_nothing():
    h, c, _ = build(pass_through="on")
    await h.write_file("/f", b"data")
    c.calls.clear()
    fd = await h.open("/f", os.O_RDONLY)
    assert c.calls == ["open"]
    await h.close(fd)


def test_options_follow_glusterfs():
    h, _, _ = build()
    o = h.top.opts
    assert o.lazy_open is True and o.read_after_open is True
    assert o.use_anonymous_fd is False
    assert default_registry().get(OB) is OpenBehind


async def test_passthrough():
    checked = await check_passthrough(OpenBehind)
    for fop in ("open", "readv", "flush", "release", "getattr", "unlink", "rename",
                "lk", "fsync"):
        assert fop not in checked
    assert "lookup" in checked and "getxattr" in checked


async def test_closing_a_deferred_fd_drops_the_callers_locks_taken_through_another():
    """POSIX: closing any fd of a file drops the process's record locks on it."""
    import fcntl
    from xlators import LK_GET, LK_SET, Lock
    leaf = make_translator("storage/memory")
    locks = make_translator("features/locks", (leaf,), {}, itable=leaf.itable)
    ob = make_translator(OB, (locks,), {}, itable=leaf.itable)
    h = Harness(ob)
    h.init()
    await h.write_file("/f", b"data")
    owner = 7
    rw = await h.open("/f", os.O_RDWR, frame=h.frame(lk_owner=owner))
    await ob.lk(h.frame(lk_owner=owner), rw, LK_SET, Lock(fcntl.F_WRLCK, 0, 9, 1, owner))
    ro = await h.open("/f", os.O_RDONLY)
    assert h.top.dump()["pending"] == 1                  # deferred
    await h.top.flush(h.frame(lk_owner=owner), ro)         # close(ro) by the same process
    await h.top.release(h.frame(lk_owner=owner), ro)
    got = await ob.lk(h.frame(lk_owner=8), rw, LK_GET, Lock(fcntl.F_WRLCK, 0, 9, 2, 8))
    assert got.type == fcntl.F_UNLCK
    await h.close(rw)


@pytest.mark.parametrize("change,leaf", [("chmod", "memory"), ("chown", "memory"),
                                         ("chmod", "posix"), ("chown", "posix"),
                                         ("acl", "posix")])
async def test_a_permission_change_after_the_open_leaves_the_fd_readable(change, leaf,
                                                                        tmp_path):
    # POSIX: permissions are checked at open; a descriptor stays readable after a
    # chmod 000 (or a chown, or an ACL that denies).  A deferred open made only at the
    # first read, with the opener's credentials, failed with EACCES.
    from xlators import SetAttr
    if leaf == "posix":
        if os.geteuid() != 0:
            pytest.skip("storage/posix with caller credentials needs root")
        os.chmod(tmp_path, 0o755)                # the brick root: searchable by all
        h, c, _ = build("storage/posix", {"directory": str(tmp_path)})
    else:
        h, c, _ = build()
    await h.write_file("/f", b"data", mode=0o644)
    f = await h.lookup("/f")
    await h.top.setattr(h.frame(), f.inode, SetAttr(uid=1000, gid=1000))
    user = h.frame(uid=1000, gid=1000)
    fd = await h.open("/f", os.O_RDONLY, frame=user)
    assert "open" not in c.calls[-1:]                    # deferred
    if change == "chmod":
        await h.top.setattr(user, f.inode, SetAttr(mode=0o000))
    elif change == "chown":
        await h.top.setattr(h.frame(), f.inode, SetAttr(mode=0o600, uid=2000))
    else:
        await h.top.setxattr(user, f.inode, b"system.posix_acl_access",
                             _acl_denying_owner(), 0)
    assert await h.top.readv(user, fd, 10, 0) == b"data"
    await h.close(fd)


def _acl_denying_owner() -> bytes:
    import struct
    # version 2; ACL_USER_OBJ ---, ACL_GROUP_OBJ ---, ACL_OTHER ---
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, 0, 0xFFFFFFFF) for tag in (0x01, 0x04, 0x20))


@pytest.mark.parametrize("fop", ["chmod", "unlink"])
async def test_a_deferred_open_that_fails_does_not_fail_the_owners_change(fop):
    # another process's deferred open that can no longer be made (permissions changed
    # through another client, EMFILE) is that process's error, not the owner's
    h, c, _ = build()
    await h.write_file("/f", b"data", mode=0o644)
    f = await h.lookup("/f")
    fd = await h.open("/f", os.O_RDONLY, frame=h.frame(uid=1000, gid=1000))   # deferred
    c.open_error = errno.EACCES
    if fop == "chmod":
        await h.top.setattr(h.frame(), f.inode, SetAttr(mode=0o600))
        assert (await h.stat("/f")).mode & 0o777 == 0o600
    else:
        await h.unlink("/f")
        with pytest.raises(OSError):
            await h.lookup("/f")
    with pytest.raises(OSError) as info:        # the opener sees its open's error
        await h.read(fd, 4, 0)
    assert info.value.errno == errno.EACCES
    c.open_error = 0
    await h.close(fd)
