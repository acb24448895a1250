"""The client state (xlators/core/client.py) the FUSE bridge and the harness share: lookup
counts, handles holding their inode, forget going down the stack, the LRU."""
import os

from fuse_bridge.client import FuseClient
from xlators.core.client import ClientState
from xlators.testing import ForgetRecorder, Harness, make_translator


def stack():
    leaf = make_translator("storage/memory")
    top = ForgetRecorder("forgets", [leaf], {}, itable=leaf.itable)
    h = Harness(top)
    h.init()
    return h, top


def test_the_bridge_and_the_harness_count_with_the_same_class():
    h, _ = stack()
    assert type(h.client) is ClientState and issubclass(FuseClient, ClientState)
    assert h.itable is h.client.itable and h.client.top is h.top


async def test_lookups_are_counted_and_forget_goes_down_the_stack():
    h, top = stack()
    await h.mkdir("/d")
    fd = await h.create("/d/f")
    await h.close(fd)
    inode = (await h.lookup("/d/f")).inode
    assert inode.nlookup == 2                      # create and this lookup
    assert h.client.fds == {} and inode.refs == 0
    await h.forget(inode, 1)
    assert inode.nodeid in h.itable.by_nodeid and not top.forgotten
    await h.forget(inode, 1)
    assert inode.nodeid not in h.itable.by_nodeid and top.forgotten == [inode]


async def test_an_open_handle_holds_its_inode_past_the_last_forget():
    h, top = stack()
    await h.write_file("/f", b"abc")
    fd = await h.open("/f", os.O_RDONLY)
    assert fd.fh and h.client.fds[fd.fh] is fd and fd.inode.refs == 1
    await h.forget("/f", fd.inode.nlookup)
    assert fd.inode.nodeid in h.itable.by_nodeid and not top.forgotten
    assert await h.read(fd, 10) == b"abc"
    await h.close(fd)
    assert h.client.fds == {} and top.forgotten == [fd.inode]
    assert fd.inode.nodeid not in h.itable.by_nodeid


async def test_the_lru_invalidates_the_oldest_names():
    h, _ = stack()
    h.client.lru_limit = 2
    dropped = []
    h.client.invalidate = lambda parent, name: dropped.append(name)
    for name in (b"a", b"b", b"c"):
        await h.write_file(name.decode(), b"")
    assert dropped == [b"a"] and list(h.client.lru) == [
        h.itable.by_ino[(await h.lookup(n)).attr.ino].nodeid for n in ("/b", "/c")]
    assert h.client.lru_invalidations == 1


# -- deferred forgets (the bridge's: fuse_bridge.forget_backlog) -----------------------

async def test_deferred_forgets_wait_and_then_apply_in_order_in_chunks():
    h, top = stack()
    inodes = []
    for name in ("a", "b", "c"):
        await h.write_file("/" + name, b"x")
        inodes.append((await h.lookup("/" + name)).inode)
    pairs = [(i.nodeid, i.nlookup) for i in inodes]
    h.client.defer_forgets(iter(pairs), 3)
    assert h.client.forgets_pending == 3 and all(i.nodeid in h.itable.by_nodeid
                                                 for i in inodes)
    await h.client.apply_forgets(2)
    assert top.forgotten == inodes[:2] and h.client.forgets_pending == 1
    assert inodes[2].nodeid in h.itable.by_nodeid
    await h.client.apply_forgets()
    assert top.forgotten == inodes and h.client.forgets_pending == 0
    assert len(h.itable) == 1


async def test_a_lookup_while_the_forget_waits_adds_one_and_keeps_the_inode():
    h, top = stack()
    await h.write_file("/f", b"x")
    inode = (await h.lookup("/f")).inode
    n = inode.nlookup
    h.client.defer_forgets(iter([(inode.nodeid, n)]), 1)
    again = (await h.lookup("/f")).inode           # the kernel looks it up anew
    assert again is inode and inode.nlookup == n + 1
    await h.client.apply_forgets()
    assert inode.nlookup == 1 and h.itable.by_nodeid[inode.nodeid] is inode
    assert top.forgotten == []


async def test_the_table_settles_without_the_graph_and_the_graph_hears_later():
    h, top = stack()
    await h.write_file("/f", b"x")
    inode = (await h.lookup("/f")).inode
    h.client.defer_forgets(iter([(inode.nodeid, inode.nlookup)]), 1)
    assert h.client.dump()["inodes"] == 1           # dump settles the table first
    assert top.forgotten == [] and h.client.forgets_pending == 1
    await h.client.apply_forgets()
    assert top.forgotten == [inode] and h.client.forgets_pending == 0


async def test_the_lru_settles_waiting_forgets_before_it_evicts():
    h, _ = stack()
    h.client.lru_limit = 2
    dropped = []
    h.client.invalidate = lambda parent, name: dropped.append(name)
    a = (await h.create("/a"))
    await h.close(a)
    b = (await h.create("/b"))
    await h.close(b)
    # the kernel forgot a and b (its names are gone): nothing to invalidate for them
    h.client.defer_forgets(iter([(a.inode.nodeid, a.inode.nlookup),
                                 (b.inode.nodeid, b.inode.nlookup)]), 2)
    c = (await h.create("/c"))
    await h.close(c)
    assert dropped == [] and list(h.client.lru) == [c.inode.nodeid]
    assert h.client.lru_invalidations == 0
