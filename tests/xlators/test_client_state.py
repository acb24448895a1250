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
