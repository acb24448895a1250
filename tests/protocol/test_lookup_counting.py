"""LOOKUP counts the kernel's lookups inline (fuse_bridge/ops_entry.py, ``lookup``):
the counts, the LRU's order and its evictions must stay exactly what
``ClientState.count_lookup`` makes of the same replies.  The bridge is driven over a
fake kernel; a second ClientState, started equal to the bridge's client, is given
``count_lookup`` for each entry the bridge answered, and the two are compared after
every request."""
from __future__ import annotations

import random

import pytest

from xlators.core.client import ClientState
from xlators.core.inode import Inode, InodeTable

from tests.protocol.kernel import serve


FILES = (b"a", b"b", b"c", b"e")


class Shadow:
    """A ClientState holding its own Inodes, one per nodeid of the bridge's table."""

    def __init__(self, real: ClientState) -> None:
        self.c = ClientState(object(), InodeTable(), lru_limit=real.lru_limit)
        self.evicted: list[tuple[int, bytes]] = []
        self.c.invalidate = lambda parent, name: self.evicted.append((parent.nodeid, name))
        self.inodes: dict[int, Inode] = {}
        for nodeid, inode in real.nodes.items():
            self.inode(nodeid).nlookup = inode.nlookup
        for nodeid, (parent, name) in real.lru.items():
            self.c.lru[nodeid] = (self.inode(parent.nodeid), name)

    def inode(self, nodeid: int) -> Inode:
        inode = self.inodes.get(nodeid)
        if inode is None:
            inode = self.inodes[nodeid] = Inode(nodeid, nodeid)
            self.c.nodes[nodeid] = inode        # _lru_evict invalidates live nodeids only
        return inode


def state(c: ClientState, nodeids) -> tuple:
    return ({n: c.nodes[n].nlookup for n in nodeids},
            [(n, parent.nodeid, name) for n, (parent, name) in c.lru.items()])


@pytest.mark.parametrize("limit", [0, 1, 3, 6])
@pytest.mark.parametrize("seed", range(4))
async def test_inline_lookup_counting_is_count_lookup(limit: int, seed: int) -> None:
    rng = random.Random(seed)
    async with serve() as (k, s):
        d = (await k.mkdir(1, b"d")).entry().nodeid
        for name in FILES:
            (await k.mknod(1, name)).entry()
            (await k.mknod(d, name)).entry()
        c = s.client
        c.lru_limit = limit
        evicted: list[tuple[int, bytes]] = []
        c.invalidate = lambda parent, name: evicted.append((parent.nodeid, name))
        shadow = Shadow(c)
        # names in the root and in d, "..", "." (counted through count_lookup itself)
        # and a missing name (ENOENT: counts nothing)
        asks = [(p, n) for p in (1, d) for n in FILES + (b"..", b".", b"missing")]
        asks.append((1, b"d"))
        answered = 0
        for _ in range(60):
            parent, name = rng.choice(asks)
            reply = await k.lookup(parent, name)
            if reply.errno:
                assert name == b"missing"
            else:
                answered += 1
                shadow.c.count_lookup(shadow.inode(reply.entry().nodeid),
                                      shadow.inode(parent), name)
            assert state(c, shadow.inodes) == state(shadow.c, shadow.inodes)
            assert evicted == shadow.evicted
        assert answered > 30
        if limit:
            assert evicted                      # the eviction path was taken
