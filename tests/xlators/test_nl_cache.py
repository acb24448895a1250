"""performance/nl-cache: negative entries served, made names and upcalls invalidate."""
from __future__ import annotations

import errno
import os

import pytest
import trio

from xlators import FopError, default_registry
from xlators.core.inode import Fd, Loc
from xlators.core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from xlators.performance.nl_cache import NlCache
from xlators.testing import check_passthrough

from tests.xlators.cachelib import Clock, counting, holding, over

NLC = "performance/nl-cache"


def build(**options):
    h, counter, leaf = over(NLC, counting("lookup"), options)
    h.top.clock = clock = Clock()
    return h, counter, leaf, clock


async def missing(h, parent, name):
    with pytest.raises(FopError) as ei:
        await h.top.lookup(h.frame(), Loc(parent, name))
    assert ei.value.errno == errno.ENOENT


async def test_negative_lookup_is_answered_until_the_timeout():
    h, c, _, clock = build(nl_cache_timeout="10")
    for _ in range(3):
        await missing(h, h.root, b"nope")
    assert c.counts["lookup"] == 1
    clock.now += 10
    await missing(h, h.root, b"nope")
    assert c.counts["lookup"] == 2


async def test_create_through_it_makes_the_name_visible():
    h, c, _, _ = build()
    await missing(h, h.root, b"f")
    await h.write_file("/f", b"x")
    assert (await h.top.lookup(h.frame(), Loc(h.root, b"f"))).attr.size == 1
    await missing(h, h.root, b"d")
    await h.mkdir("/d")
    await h.top.lookup(h.frame(), Loc(h.root, b"d"))
    await missing(h, h.root, b"s")
    await h.symlink("/f", "/s")
    await h.top.lookup(h.frame(), Loc(h.root, b"s"))
    await missing(h, h.root, b"l")
    f = await h.lookup("/f")
    await h.top.link(h.frame(), f.inode, Loc(h.root, b"l"))
    await h.top.lookup(h.frame(), Loc(h.root, b"l"))


async def test_rename_and_unlink_through_it():
    h, c, _, _ = build()
    await h.write_file("/a", b"x")
    await missing(h, h.root, b"b")
    await h.rename("/a", "/b")
    await h.top.lookup(h.frame(), Loc(h.root, b"b"))
    await missing(h, h.root, b"a")            # asked below: it may remain (see next)
    n = c.counts["lookup"]
    await missing(h, h.root, b"a")            # and then known to be missing
    assert c.counts["lookup"] == n
    await h.unlink("/b")
    await missing(h, h.root, b"b")            # known gone: not asked
    assert c.counts["lookup"] == n


async def test_rename_between_links_of_one_inode_leaves_both_names():
    h, c, _, _ = build()
    await h.write_file("/a", b"x")
    a = await h.lookup("/a")
    await h.top.link(h.frame(), a.inode, Loc(h.root, b"b"))
    await h.rename("/a", "/b")                # POSIX: nothing happens
    await h.top.lookup(h.frame(), Loc(h.root, b"a"))
    await h.rename("/b", "/b")
    await h.top.lookup(h.frame(), Loc(h.root, b"b"))


async def test_failed_mkdir_forgets_the_name():
    """EEXIST proves the cached negative entry wrong: it is dropped."""
    h, c, leaf, _ = build()
    await missing(h, h.root, b"d")
    await leaf.mkdir(h.frame(), Loc(h.root, b"d"), 0o40755, 0)    # behind nl-cache
    with pytest.raises(FopError) as ei:
        await h.mkdir("/d")
    assert ei.value.errno == errno.EEXIST
    await h.top.lookup(h.frame(), Loc(h.root, b"d"))


async def test_upcalls_drop_the_directory():
    for msg in ("entry", "delete", "inode"):
        h, c, leaf, _ = build()
        await missing(h, h.root, b"f")
        await leaf.create(h.frame(), Loc(h.root, b"f"), os.O_RDWR, 0o100644, 0,
                          __import__("xlators").core.inode.Fd(h.root))
        await missing(h, h.root, b"f")          # still cached
        if msg == "entry":
            leaf.upcall(InvalidateEntry(h.root, b"f"))
        elif msg == "delete":
            leaf.upcall(DeleteEntry(h.root, None, b"f"))
        else:
            leaf.upcall(InvalidateInode(h.root, -1, 0))
        await h.top.lookup(h.frame(), Loc(h.root, b"f"))


async def test_positive_entries_make_a_new_directory_complete():
    h, c, _, _ = build(nl_cache_positive_entry="on")
    d = await h.mkdir("/d")
    n = c.counts["lookup"]
    await missing(h, d.inode, b"anything")
    assert c.counts["lookup"] == n                      # a new directory is empty
    await h.write_file("/d/f", b"x")
    await h.top.lookup(h.frame(), Loc(d.inode, b"f"))
    n = c.counts["lookup"]
    await missing(h, d.inode, b"g")
    assert c.counts["lookup"] == n
    h2, c2, _, _ = build()                     # without positive entries: wound
    d2 = await h2.mkdir("/d")
    await missing(h2, d2.inode, b"anything")
    assert c2.counts["lookup"] == 1


async def test_positive_entry_completeness_is_dropped_by_an_upcall():
    h, c, leaf, _ = build(nl_cache_positive_entry="on")
    d = await h.mkdir("/d")
    await leaf.mkdir(h.frame(), Loc(d.inode, b"e"), 0o40755, 0)
    await missing(h, d.inode, b"e")
    leaf.upcall(InvalidateEntry(d.inode, b"e"))
    await h.top.lookup(h.frame(), Loc(d.inode, b"e"))


async def test_limit_evicts_least_recently_used_directories():
    h, c, _, _ = build(nl_cache_limit="200")
    a = await h.mkdir("/a")
    b = await h.mkdir("/b")
    await missing(h, a.inode, b"x" * 50)
    await missing(h, b.inode, b"y" * 50)       # 2 * (50 + 64) > 200: /a goes
    assert h.top.size <= 200
    assert a.inode.ctx.get(h.top) is None and b.inode.ctx.get(h.top) is not None
    assert h.top.dump()["evictions"] == 1


async def test_pass_through_and_zero_timeout_cache_nothing():
    for opts in ({"pass_through": "on"}, {"nl_cache_timeout": "0"}):
        h, c, _, _ = build(**opts)
        await missing(h, h.root, b"n")
        await missing(h, h.root, b"n")
        assert c.counts["lookup"] == 2


def test_options_follow_glusterfs():
    h, _, _, _ = build()
    o = h.top.opts
    assert o.nl_cache_timeout == 60 and o.nl_cache_limit == 131072
    assert o.nl_cache_positive_entry is False
    assert default_registry().get(NLC) is NlCache


async def test_passthrough():
    checked = await check_passthrough(NlCache)
    for fop in ("lookup", "create", "mkdir", "mknod", "symlink", "link", "unlink",
                "rmdir", "rename", "forget"):
        assert fop not in checked
    assert "getattr" in checked and "writev" in checked


async def test_failed_mkdir_in_a_complete_directory_drops_completeness():
    h, c, leaf, _ = build(nl_cache_positive_entry="on")
    d = await h.mkdir("/d")
    await leaf.mkdir(h.frame(), Loc(d.inode, b"e"), 0o40755, 0)      # behind nl-cache
    with pytest.raises(FopError):
        await h.top.mkdir(h.frame(), Loc(d.inode, b"e"), 0o40755, 0)
    await h.top.lookup(h.frame(), Loc(d.inode, b"e"))


async def test_complete_directory_leaves_too_long_names_to_the_child():
    h, c, _, _ = build(nl_cache_positive_entry="on")
    d = await h.mkdir("/d")
    with pytest.raises(FopError) as ei:
        await h.top.lookup(h.frame(), Loc(d.inode, b"L" * 256))
    assert ei.value.errno == errno.ENAMETOOLONG


@pytest.mark.parametrize("msg", ["entry", "delete", "inode"])
async def test_a_miss_answered_before_an_upcall_is_not_kept_in_a_new_record(msg):
    # The directory has no record yet when the upcall comes: the ENOENT that left
    # before it must still not be cached.
    h, hold, leaf = over(NLC, holding("lookup"))
    async with trio.open_nursery() as n:
        n.start_soon(missing, h, h.root, b"f")
        await hold.answered.wait()                  # ENOENT, on its way up
        await leaf.create(h.frame(), Loc(h.root, b"f"), os.O_RDWR, 0o100644, 0, Fd(h.root))
        leaf.upcall({"entry": InvalidateEntry(h.root, b"f"),
                     "delete": DeleteEntry(h.root, None, b"f"),
                     "inode": InvalidateInode(h.root, -1, 0)}[msg])
        hold.go.set()
    await h.top.lookup(h.frame(), Loc(h.root, b"f"))


@pytest.mark.parametrize("fop", ["create", "mkdir", "symlink", "link", "rename"])
async def test_a_miss_answered_before_a_name_made_here_is_not_kept(fop):
    # A lookup that found the name missing, answered while a fop through nl-cache made
    # the name, must not cache a negative entry for it.
    h, hold, leaf = over(NLC, holding("lookup"))
    hold.go.set()
    await h.write_file("/other", b"o")
    await missing(h, h.root, b"g")                      # the directory has a record now
    hold.rearm()
    async with trio.open_nursery() as n:
        n.start_soon(missing, h, h.root, b"f")
        await hold.answered.wait()
        hold.go.set()
        hold.go = trio.Event()                          # the fop's own lookups pass
        if fop == "create":
            await h.top.create(h.frame(), Loc(h.root, b"f"), os.O_RDWR, 0o644, 0,
                               Fd(h.root))
        elif fop == "mkdir":
            await h.top.mkdir(h.frame(), Loc(h.root, b"f"), 0o755, 0)
        elif fop == "symlink":
            await h.top.symlink(h.frame(), b"other", Loc(h.root, b"f"))
        elif fop == "link":
            other = await leaf.lookup(h.frame(), Loc(h.root, b"other"))
            await h.top.link(h.frame(), other.inode, Loc(h.root, b"f"))
        else:
            await h.top.rename(h.frame(), Loc(h.root, b"other"), Loc(h.root, b"f"))
    hold.go.set()
    await h.top.lookup(h.frame(), Loc(h.root, b"f"))
