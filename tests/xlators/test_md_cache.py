"""performance/md-cache: what it serves, what invalidates it (own fops, upcalls, time)."""
from __future__ import annotations

import errno
import os

import pytest
import trio

from xlators import FopError, Translator, default_registry
from xlators.core.events import Event
from xlators.core.inode import Fd, Loc
from xlators.core.translator import forget_path
from xlators.core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from xlators.performance.fop_targets import MODIFYING_FOPS
from xlators.performance.md_cache import MdCache
from xlators.testing import check_passthrough

from tests.xlators.cachelib import Clock, counting, holding, over

MDC = "performance/md-cache"


Counter = counting("lookup", "getattr", "getxattr", "statfs", "readdirp")


def build(leaf="storage/memory", leaf_options=None, **options):
    h, counter, leaf_xl = over(MDC, Counter, options, leaf, leaf_options)
    h.top.clock = clock = Clock()
    return h, counter, leaf_xl, clock


async def test_stat_is_served_from_the_cache_until_the_timeout():
    h, c, _, clock = build(md_cache_timeout="5")
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    c.counts.clear()
    a1 = await h.top.getattr(h.frame(), e.inode)
    a2 = await h.top.getattr(h.frame(), e.inode)
    assert a1 == a2 and a1.size == 3
    assert c.counts.get("getattr", 0) == 0          # the lookup reply was cached
    clock.now += 5
    await h.top.getattr(h.frame(), e.inode)
    assert c.counts["getattr"] == 1


async def test_lookup_is_served_from_cached_entry_and_attributes():
    h, c, _, clock = build(md_cache_timeout="5")
    await h.write_file("/f", b"abc")
    root = h.root
    first = await h.top.lookup(h.frame(), Loc(root, b"f"))
    c.counts.clear()
    again = await h.top.lookup(h.frame(), Loc(root, b"f"))
    assert again.inode is first.inode and again.attr == first.attr
    assert c.counts.get("lookup", 0) == 0
    clock.now += 6
    await h.top.lookup(h.frame(), Loc(root, b"f"))
    assert c.counts["lookup"] == 1


async def test_own_write_invalidates():
    h, c, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    fd = await h.create("/f")
    e = await h.lookup("/f")
    assert (await h.top.getattr(h.frame(), e.inode)).size == 0
    await h.write(fd, b"12345")
    assert (await h.top.getattr(h.frame(), e.inode)).size == 5
    await h.top.setattr(h.frame(), e.inode, __import__("xlators").SetAttr(size=2))
    assert (await h.top.getattr(h.frame(), e.inode)).size == 2
    await h.close(fd)


async def test_open_with_trunc_invalidates():
    h, _, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"12345")
    e = await h.lookup("/f")
    assert (await h.top.getattr(h.frame(), e.inode)).size == 5
    fd = await h.open("/f", os.O_RDWR | os.O_TRUNC)
    assert (await h.top.getattr(h.frame(), e.inode)).size == 0
    await h.close(fd)


async def test_unlink_invalidates_the_victim_and_the_entry():
    h, c, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/a", b"x")
    a = await h.lookup("/a")
    await h.top.link(h.frame(), a.inode, Loc(h.root, b"b"))
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 2
    await h.unlink("/b")
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 1
    with pytest.raises(FopError) as ei:
        await h.top.lookup(h.frame(), Loc(h.root, b"b"))
    assert ei.value.errno == errno.ENOENT


async def test_rename_over_a_name_invalidates_both():
    h, _, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/a", b"aaa")
    await h.write_file("/b", b"bbbbbb")
    b = await h.lookup("/b")
    assert (await h.top.lookup(h.frame(), Loc(h.root, b"b"))).attr.size == 6
    await h.rename("/a", "/b")
    got = await h.top.lookup(h.frame(), Loc(h.root, b"b"))
    assert got.attr.size == 3 and got.inode is not b.inode
    assert (await h.top.getattr(h.frame(), b.inode)).nlink == 0


async def test_every_modifying_fop_of_the_table_invalidates():
    """Each fop marked ``modifies`` in the fop table drops the cached attributes of the
    inode it names (checked with a leaf that answers anything)."""
    from xlators.testing import RecordingLeaf
    leaf = RecordingLeaf()
    mdc = MdCache("mdc", [leaf], {"md-cache-timeout": "600",
                                  "cache-invalidation": "on"}, itable=leaf.itable)
    from xlators.core.inode import Fd
    from xlators.core.types import Attr
    inode = leaf.itable.link(77)
    fd = Fd(inode)
    for fop in MODIFYING_FOPS:
        mdc._store_attr(inode, Attr(ino=77, size=1), mdc._gen)
        mdc._state(leaf.itable.root).names[b"n"] = (77, mdc.clock())
        assert mdc._cached_attr(inode) is not None
        args = []
        for p in fop.param_names:
            args.append({"inode": inode, "fd": fd, "fd_out": fd, "fd_in": fd,
                         "loc": Loc(leaf.itable.root, b"n"),
                         "oldloc": Loc(leaf.itable.root, b"n"),
                         "newloc": Loc(leaf.itable.root, b"n"),
                         "newdir": None}.get(p, 0))
        await getattr(mdc, fop.name)(h_frame(), *args)
        assert mdc._cached_attr(inode) is None, fop.name


def h_frame():
    from xlators.core.frame import Frame
    return Frame(unique=2)


async def test_upcall_from_the_storage_invalidates():
    h, c, leaf, _ = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    await h.top.getattr(h.frame(), e.inode)
    # change the file below md-cache, then the storage tells about it
    fd = await h.open("/f")
    await leaf.writev(h.frame(), fd, b"123456", 0)
    assert (await h.top.getattr(h.frame(), e.inode)).size == 3        # still cached
    leaf.upcall(InvalidateInode(e.inode, -1, 0))
    assert (await h.top.getattr(h.frame(), e.inode)).size == 6
    await h.close(fd)


async def test_entry_upcalls_invalidate_the_name():
    h, c, leaf, _ = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"abc")
    e = await h.top.lookup(h.frame(), Loc(h.root, b"f"))
    await leaf.unlink(h.frame(), Loc(h.root, b"f"))
    assert (await h.top.lookup(h.frame(), Loc(h.root, b"f"))).inode is e.inode   # cached
    leaf.upcall(InvalidateEntry(h.root, b"f"))
    with pytest.raises(FopError):
        await h.top.lookup(h.frame(), Loc(h.root, b"f"))
    await h.write_file("/g", b"abc")
    g = await h.top.lookup(h.frame(), Loc(h.root, b"g"))
    await h.top.getattr(h.frame(), g.inode)
    await leaf.unlink(h.frame(), Loc(h.root, b"g"))
    leaf.upcall(DeleteEntry(h.root, g.inode, b"g"))
    assert (await h.top.getattr(h.frame(), g.inode)).nlink == 0


async def test_upcalls_are_ignored_without_cache_invalidation_and_passed_up():
    h, c, leaf, clock = build(md_cache_timeout="10")
    seen = []

    class Parent:
        def notify(self, event, data=None, source=None):
            seen.append((event, data))
    h.top.parents.append(Parent())
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    fd = await h.open("/f")
    await leaf.writev(h.frame(), fd, b"123456", 0)
    msg = InvalidateInode(e.inode, -1, 0)
    leaf.upcall(msg)
    assert seen == [(Event.UPCALL, msg)]
    assert (await h.top.getattr(h.frame(), e.inode)).size == 3      # until the timeout
    clock.now += 10
    assert (await h.top.getattr(h.frame(), e.inode)).size == 6
    await h.close(fd)


async def test_reply_of_a_fop_wound_before_an_invalidation_is_not_cached():
    h, c, leaf, _ = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    h.top._invalidate(e.inode)
    since = h.top._gen
    h.top._invalidate(e.inode)             # an upcall arrived while the fop was wound
    from xlators.core.types import Attr
    h.top._store_attr(e.inode, Attr(ino=e.inode.ino, size=99), since)
    assert (await h.top.getattr(h.frame(), e.inode)).size == 3


async def test_xattrs_cached_including_absence_and_invalidated_by_setxattr():
    h, c, leaf, clock = build(md_cache_timeout="5")
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    for _ in range(2):
        with pytest.raises(FopError) as ei:
            await h.top.getxattr(h.frame(), e.inode, b"security.capability")
        assert ei.value.errno == errno.ENODATA
    assert c.counts["getxattr"] == 1
    await h.top.setxattr(h.frame(), e.inode, b"security.capability", b"v", 0)
    assert await h.top.getxattr(h.frame(), e.inode, b"security.capability") == b"v"
    assert await h.top.getxattr(h.frame(), e.inode, b"security.capability") == b"v"
    assert c.counts["getxattr"] == 2
    # names not chosen by the options always go down
    await h.top.setxattr(h.frame(), e.inode, b"user.x", b"1", 0)
    await h.top.getxattr(h.frame(), e.inode, b"user.x")
    await h.top.getxattr(h.frame(), e.inode, b"user.x")
    assert c.counts["getxattr"] == 4


async def test_xattr_cache_list_wildcards():
    h, c, leaf, clock = build(md_cache_timeout="5", xattr_cache_list="user.a*, user.zz")
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    await h.top.setxattr(h.frame(), e.inode, b"user.abc", b"1", 0)
    for _ in range(3):
        assert await h.top.getxattr(h.frame(), e.inode, b"user.abc") == b"1"
    assert c.counts["getxattr"] == 1
    assert b"user.zz" in h.top.xattr_names and b"user.b" not in h.top.xattr_names


async def test_statfs_cached_only_when_asked():
    h, c, _, _ = build(md_cache_timeout="5")
    await h.top.statfs(h.frame(), h.root)
    await h.top.statfs(h.frame(), h.root)
    assert c.counts["statfs"] == 2
    h2, c2, _, _ = build(md_cache_timeout="5", md_cache_statfs="on")
    await h2.top.statfs(h2.frame(), h2.root)
    await h2.top.statfs(h2.frame(), h2.root)
    assert c2.counts["statfs"] == 1


async def test_readdirp_fills_the_cache():
    h, c, _, _ = build(md_cache_timeout="5")
    for n in ("a", "b"):
        await h.write_file(f"/{n}", n.encode())
    await h.listdir("/", plus=True)
    c.counts.clear()
    got = await h.top.lookup(h.frame(), Loc(h.root, b"b"))
    assert got.attr.size == 1 and c.counts.get("lookup", 0) == 0


async def test_timeout_zero_and_pass_through_cache_nothing():
    for opts in ({"md_cache_timeout": "0"}, {"pass_through": "on"}):
        h, c, _, _ = build(**opts)
        await h.write_file("/f", b"abc")
        e = await h.lookup("/f")
        await h.top.getattr(h.frame(), e.inode)
        await h.top.getattr(h.frame(), e.inode)
        assert c.counts["getattr"] >= 2, opts


async def test_forget_passes_md_cache_by_and_the_record_goes_with_the_inode():
    """md-cache has no forget (no cost per forget): its record is found only through the
    table, so an inode the kernel forgot leaves it with the inode."""
    h, c, leaf, _ = build(md_cache_timeout="5")
    assert MdCache.forget is Translator.forget
    assert forget_path(h.top) == (frozenset(), leaf)    # forgets go straight below it
    await h.write_file("/f", b"abc")
    e = await h.lookup("/f")
    assert e.inode.ctx.get(h.top) is not None
    await h.forget(e.inode, e.inode.nlookup)
    assert h.itable.find(e.inode.ino) is None
    looked = c.counts.get("lookup", 0)
    again = await h.lookup("/f")
    assert again.inode is not e.inode
    assert c.counts["lookup"] == looked + 1             # not answered from the old record


def test_options_follow_glusterfs():
    h, _, _, _ = build()
    o = h.top.opts
    assert o.md_cache_timeout == 1 and o.cache_invalidation is False
    assert o.cache_capability_xattrs and o.cache_ima_xattrs and not o.cache_selinux
    assert h.top.timeout == 1.0
    h2, _, _, _ = build(md_cache_timeout="600")
    assert h2.top.timeout == 60.0                      # needs cache-invalidation
    h3, _, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    assert h3.top.timeout == 600.0
    with pytest.raises(ValueError):
        build(md_cache_timeout="601")
    assert default_registry().get(MDC) is MdCache


async def test_passthrough():
    checked = await check_passthrough(MdCache)
    for fop in ("lookup", "getattr", "getxattr", "readdirp", "writev", "setattr",
                "unlink", "rename", "open"):
        assert fop not in checked
    assert "readv" in checked and "readdir" in checked and "lk" in checked
    assert "forget" in checked


async def test_over_posix_watch_brick(tmp_path):
    """A change made in the brick reaches md-cache as an upcall from storage/posix."""
    if os.geteuid() != 0:
        pytest.skip("storage/posix tests run as root")
    brick = tmp_path / "brick"
    brick.mkdir()
    (brick / "f").write_bytes(b"abc")
    h, c, posix, _ = build("storage/posix", {"directory": str(brick), "reserve": "0",
                                               "watch-brick": "on"},
                           md_cache_timeout="600", cache_invalidation="on")
    try:
        e = await h.lookup("/f")
        assert (await h.top.getattr(h.frame(), e.inode)).size == 3
        (brick / "f").write_bytes(b"abcdef")
        assert (await h.top.getattr(h.frame(), e.inode)).size == 3    # cached
        w = posix._watch
        w.dispatch(w.read_available())
        assert (await h.top.getattr(h.frame(), e.inode)).size == 6
    finally:
        h.fini()


async def test_unlink_of_a_name_md_cache_never_saw_invalidates_its_inode():
    h, c, _, _ = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/a", b"x")
    a = await h.lookup("/a")
    await h.top.link(h.frame(), a.inode, Loc(h.root, b"b"))
    fd = await h.open("/a")
    h.top._state(h.root).names.clear()          # as after an upcall on the directory
    await h.top.getattr(h.frame(), a.inode)
    await h.unlink("/a")
    await h.top.unlink(h.frame(), Loc(h.root, b"b"))
    assert (await h.top.getattr(h.frame(), a.inode, fd)).nlink == 0
    await h.close(fd)


async def test_keep_cache_hint_only_for_a_file_unchanged_since_its_last_open():
    h, c, leaf, clock = build(md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"abc")
    first = await h.open("/f", os.O_RDONLY)
    assert "keep_cache" not in first.open_flags           # nothing known yet
    await h.close(first)
    again = await h.open("/f", os.O_RDONLY)
    assert "keep_cache" in again.open_flags                # unchanged
    await h.close(again)
    fd = await h.open("/f")                                # changed through the graph
    await h.write(fd, b"xyz", 1)
    await h.close(fd)
    after_write = await h.open("/f", os.O_RDONLY)
    assert "keep_cache" not in after_write.open_flags
    await h.close(after_write)
    # changed below md-cache; the storage's upcall makes md-cache look again
    e = await h.lookup("/f")
    wfd = await h.open("/f")
    await leaf.setattr(h.frame(), e.inode, __import__("xlators").SetAttr(size=1))
    leaf.upcall(InvalidateInode(e.inode, -1, 0))
    below = await h.open("/f", os.O_RDONLY)
    assert "keep_cache" not in below.open_flags
    await h.close(below)
    await h.close(wfd)


async def test_opendir_hints_cache_dir_and_keeps_an_unchanged_listing():
    h, c, leaf, clock = build(md_cache_timeout="600", cache_invalidation="on")
    from xlators.core.inode import Fd
    d = await h.mkdir("/d")

    async def opendir():
        fd = Fd(d.inode, os.O_RDONLY, is_dir=True)
        await h.top.opendir(h.frame(), d.inode, fd)
        await h.top.releasedir(h.frame(), fd)
        return fd.open_flags
    assert await opendir() == {"cache_dir"}
    assert await opendir() == {"cache_dir", "keep_cache"}
    await h.write_file("/d/new", b"")
    assert await opendir() == {"cache_dir"}
    h2, _, _, _ = build(md_cache_timeout="0")
    d2 = await h2.mkdir("/d")
    fd = Fd(d2.inode, os.O_RDONLY, is_dir=True)
    await h2.top.opendir(h2.frame(), d2.inode, fd)
    assert fd.open_flags == set()


# -- FUSE passthrough: the kernel writes the brick file without a fop ----------------------

async def test_passthrough_writer_stops_serving_cached_attributes(tmp_path):
    h, counter, _leaf, _clock = build("storage/posix", {"directory": str(tmp_path)},
                                      md_cache_timeout="600", cache_invalidation="on")
    assert h.top.passthrough_blocker() is None
    await h.write_file("/f", b"abc")
    assert (await h.stat("/f")).size == 3          # cached now
    fd = await h.open("/f", os.O_WRONLY)
    assert h.top.passthrough_fd(fd) is not None     # the bridge registers the brick file
    with open(tmp_path / "f", "ab") as f:           # the kernel's write, past the graph
        f.write(b"defg")
    assert (await h.stat("/f")).size == 7
    assert (await h.stat("/f")).size == 7           # not cached while the writer is open
    with open(tmp_path / "f", "ab") as f:
        f.write(b"h")
    assert (await h.stat("/f")).size == 8
    await h.close(fd)
    assert (await h.stat("/f")).size == 8           # dropped at release, cached again
    before = counter.counts.get("getattr", 0)
    assert (await h.stat("/f")).size == 8
    assert counter.counts.get("getattr", 0) == before


async def test_passthrough_reader_keeps_the_cache(tmp_path):
    h, counter, _leaf, _clock = build("storage/posix", {"directory": str(tmp_path)},
                                      md_cache_timeout="600", cache_invalidation="on")
    await h.write_file("/f", b"abc")
    await h.stat("/f")
    fd = await h.open("/f", os.O_RDONLY)
    assert h.top.passthrough_fd(fd) is not None
    before = counter.counts.get("getattr", 0)
    await h.stat("/f")
    assert counter.counts.get("getattr", 0) == before   # a reader changes nothing
    await h.close(fd)


async def test_exclusive_create_answers_the_capability_question():
    """The kernel asks security.capability before the first write of every file; a file
    md-cache saw made by an exclusive create has none, so no getxattr reaches the child."""
    h, counter, _leaf, _clock = build(md_cache_timeout="600", cache_invalidation="on")
    loc = await h.parent_loc("/new")
    from xlators.core.inode import Fd
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
    fd = Fd(loc.parent, flags)
    entry = await h.top.create(h.frame(), loc, flags, 0o100644, 0o022, fd)
    with pytest.raises(FopError) as err:
        await h.top.getxattr(h.frame(), entry.inode, b"security.capability")
    assert err.value.errno == errno.ENODATA
    assert counter.counts.get("getxattr", 0) == 0
    # without O_EXCL the storage may have opened an existing file: ask
    loc2 = await h.parent_loc("/other")
    flags = os.O_RDWR | os.O_CREAT
    e2 = await h.top.create(h.frame(), loc2, flags, 0o100644, 0o022, Fd(loc2.parent, flags))
    with pytest.raises(FopError):
        await h.top.getxattr(h.frame(), e2.inode, b"security.capability")
    assert counter.counts.get("getxattr", 0) == 1


# -- names a lookup found missing (MdState.absent) -----------------------------------------

async def test_rename_to_a_name_a_lookup_just_found_missing_looks_up_nothing_more():
    """The kernel looks the new name up (ENOENT) before RENAME: md-cache then knows the
    name holds no inode of its own and winds the rename without a lookup of its own."""
    h, c, _, _ = build(md_cache_timeout="5")
    await h.write_file("/a", b"x")
    await h.top.lookup(h.frame(), Loc(h.root, b"a"))
    with pytest.raises(FopError):
        await h.top.lookup(h.frame(), Loc(h.root, b"new"))
    c.counts.clear()
    await h.top.rename(h.frame(), Loc(h.root, b"a"), Loc(h.root, b"new"), 0)
    assert c.counts.get("lookup", 0) == 0
    got = await h.top.lookup(h.frame(), Loc(h.root, b"new"))
    assert got.attr.size == 1
    with pytest.raises(FopError):
        await h.top.lookup(h.frame(), Loc(h.root, b"a"))


async def file_a_and_missing_b(h):
    """/a written and looked up, and a lookup of /b that found nothing (md-cache now
    remembers it missing): /a's Entry."""
    await h.write_file("/a", b"x")
    a = await h.lookup("/a")
    with pytest.raises(FopError):
        await h.top.lookup(h.frame(), Loc(h.root, b"b"))
    return a


async def test_a_missing_name_is_trusted_only_for_the_timeout():
    """A name made below md-cache after a lookup found it missing (a hard link to a file
    whose attributes are cached): once md-cache-timeout has passed, unlinking it looks
    the name up, and the file's link count is asked again."""
    h, c, leaf, clock = build(md_cache_timeout="5")
    a = await file_a_and_missing_b(h)
    await leaf.link(h.frame(), a.inode, Loc(h.root, b"b"))       # below md-cache
    clock.now += 6
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 2
    await h.top.unlink(h.frame(), Loc(h.root, b"b"))
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 1


async def test_a_missing_name_is_forgotten_when_the_directory_is_invalidated():
    h, c, leaf, clock = build(md_cache_timeout="600", cache_invalidation="on")
    a = await file_a_and_missing_b(h)
    await leaf.link(h.frame(), a.inode, Loc(h.root, b"b"))
    leaf.upcall(InvalidateEntry(h.root, b"b"))                  # the storage tells
    leaf.upcall(InvalidateInode(a.inode, -1, 0))
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 2
    await h.top.unlink(h.frame(), Loc(h.root, b"b"))
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 1


async def test_a_missing_name_made_through_md_cache_is_known_again():
    h, c, leaf, clock = build(md_cache_timeout="600", cache_invalidation="on")
    a = await file_a_and_missing_b(h)
    await h.top.link(h.frame(), a.inode, Loc(h.root, b"b"))
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 2
    await h.top.unlink(h.frame(), Loc(h.root, b"b"))
    assert (await h.top.getattr(h.frame(), a.inode)).nlink == 1


MD_CACHE_600 = {"md-cache-timeout": "600", "cache-invalidation": "on"}


@pytest.mark.parametrize("what", ["inode", "entry"])
async def test_a_reply_that_left_before_an_upcall_is_not_cached_in_a_new_record(what):
    # Neither the file nor its directory has a record of md-cache's yet when the
    # upcall comes: the lookup reply on its way up still carries the old state.
    h, hold, leaf = over(MDC, holding("lookup"), MD_CACHE_600)
    f = Fd(h.root, os.O_RDWR)
    old = await leaf.create(h.frame(), Loc(h.root, b"f"), os.O_RDWR, 0o100644, 0, f)
    await leaf.writev(h.frame(), f, b"abc", 0)
    async with trio.open_nursery() as n:
        n.start_soon(h.top.lookup, h.frame(), Loc(h.root, b"f"))
        await hold.answered.wait()                   # size 3, on its way up
        if what == "inode":
            await leaf.writev(h.frame(), f, b"defg", 3)
            leaf.upcall(InvalidateInode(old.inode, 0, 0))
        else:                                        # another file takes the name
            g = Fd(h.root, os.O_RDWR)
            await leaf.create(h.frame(), Loc(h.root, b"g"), os.O_RDWR, 0o100644, 0, g)
            await leaf.writev(h.frame(), g, b"other file", 0)
            await leaf.rename(h.frame(), Loc(h.root, b"g"), Loc(h.root, b"f"))
            leaf.upcall(InvalidateEntry(h.root, b"f"))
            leaf.upcall(InvalidateEntry(h.root, b"g"))
        hold.go.set()
    e = await h.top.lookup(h.frame(), Loc(h.root, b"f"))
    assert e.attr.size == (7 if what == "inode" else 10)
    assert (await h.top.getattr(h.frame(), e.inode)).size == e.attr.size


@pytest.mark.parametrize("record", ["kept", "none"])
@pytest.mark.parametrize("fop", ["setattr", "link"])
async def test_a_reply_older_than_a_write_that_crossed_it_is_not_cached(fop, record):
    # The kernel does not serialise a chmod or a link with the WRITEs of mmap
    # writeback: a write that lands after the reply was made, and returns first, must
    # not be hidden by that reply (cached as fresh for md-cache-timeout).  The same
    # for an inode md-cache holds no record of (record "none": a new graph's md-cache
    # after a switch), whose crossing write's invalidation has no record to mark.
    from xlators import SetAttr
    h, hold, _ = over(MDC, holding("setattr", "link"), MD_CACHE_600)
    mdc = h.top
    hold.go.set()
    fd = await h.create("/f")
    await h.write(fd, b"abc", 0)
    if record == "none":
        fd.inode.ctx.pop(mdc, None)
    hold.rearm()
    async with trio.open_nursery() as n:
        if fop == "setattr":
            n.start_soon(mdc.setattr, h.frame(), fd.inode, SetAttr(mode=0o600))
        else:
            n.start_soon(mdc.link, h.frame(), fd.inode, Loc(h.root, b"g"))
        await hold.answered.wait()                   # size 3, on its way up
        await h.write(fd, b"defg", 3)                # lands and returns first
        hold.go.set()
    assert (await mdc.getattr(h.frame(), fd.inode)).size == 7
