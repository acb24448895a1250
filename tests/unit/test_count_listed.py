"""ClientState.count_listed (a READDIRPLUS reply's entries counted in one loop) leaves
the lookup counts, the LRU's order and its evictions exactly as count_lookup called
for each entry in turn does."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from xlators.core.client import ClientState
from xlators.core.inode import Inode, InodeTable


def client(limit: int) -> tuple[ClientState, list]:
    c = ClientState(object(), InodeTable(), lru_limit=limit)
    evicted: list = []
    c.invalidate = lambda parent, name: evicted.append((parent.nodeid, name))
    return c, evicted


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(2, 30),
                                   st.sampled_from([b".", b"..", b"a", b"b", b"c"])),
                         max_size=12), max_size=6),
       st.sampled_from([0, 1, 3, 5, 16]))
def test_the_same_as_count_lookup_entry_by_entry(replies, limit):
    one, one_evicted = client(limit)
    many, many_evicted = client(limit)
    parent = Inode(1, 1)
    inodes = {}
    for reply in replies:
        got = []
        for nodeid, name in reply:
            pair = inodes.setdefault(nodeid, (Inode(nodeid, nodeid), Inode(nodeid, nodeid)))
            one.count_lookup(pair[0], parent, name)
            got.append((pair[1], name))
        many.count_listed(parent, [i for i, _ in got], [n for _, n in got])
    assert [(k, v[1]) for k, v in one.lru.items()] == [(k, v[1]) for k, v in many.lru.items()]
    assert {n: p[0].nlookup for n, p in inodes.items()} == \
        {n: p[1].nlookup for n, p in inodes.items()}
    assert one_evicted == many_evicted
