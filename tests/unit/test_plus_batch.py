"""A readdirp batch kept as columns (xlators.core.dir_batch.PlusBatch) reads as the
list of DirEntry it stands for, made once (a translator that keeps or changes them sees
the same objects later), and the READDIRPLUS reply the bridge packs from its columns
(fuse_bridge.ops_dir.pack_plus_batch) is byte for byte the one packed from that list,
with the same entries in it: stat results and Attrs mixed, times before 1970, names of
every length, any byte budget."""
from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st

from fuse_bridge.encode import Timeouts
from fuse_bridge.ops_dir import pack_plus, pack_plus_batch
from tests.unit.test_dirent_batch import one_by_one_plus
from xlators.core.dir_batch import PlusBatch
from xlators.core.inode import Inode
from xlators.core.types import Attr, DirEntry, Entry

U32 = st.integers(0, 0xFFFFFFFF)
names = st.binary(min_size=1, max_size=300).filter(lambda n: b"/" not in n and b"\0" not in n)
times = st.one_of(st.integers(0, 1 << 62), st.integers(-(1 << 62), 1 << 62))
T = Timeouts(1.5, 0.25, 0)


@st.composite
def stats(draw):
    """An os.stat_result as os.stat makes it (its items' whole seconds are the
    nanoseconds' floor), or an Attr."""
    at, mt, ct = draw(times), draw(times), draw(times)
    mode = draw(st.integers(0, 0xFFFFFFFF))
    fields = (mode, draw(st.integers(1, (1 << 63) - 1)), 1, draw(U32), draw(U32),
              draw(U32), draw(st.integers(0, 1 << 50)), at // 10**9, mt // 10**9,
              ct // 10**9)
    r = os.stat_result(fields, {"st_atime_ns": at, "st_mtime_ns": mt, "st_ctime_ns": ct,
                                "st_blksize": draw(U32),
                                "st_blocks": draw(st.integers(0, 1 << 40)),
                                "st_rdev": draw(st.integers(0, 1 << 40))})
    if draw(st.booleans()):
        return r
    return Attr.from_stat(r, draw(st.integers(1, (1 << 63) - 1)))


@st.composite
def batches(draw):
    """The arguments of a PlusBatch: the dots (or not), then looked-up entries."""
    head = []
    if draw(st.booleans()):
        head = [DirEntry(b".", 10, 4, 1), DirEntry(b"..", 11, 4, 2)][:draw(st.integers(1, 2))]
    n = draw(st.integers(0, 25))
    cols: list = [[], [], [], [], []]
    for k in range(n):
        s = draw(stats())
        ino = s.ino if type(s) is Attr else draw(st.integers(1, (1 << 63) - 1))
        inode = Inode(draw(st.integers(2, 1 << 60)), ino)
        inode.generation = draw(st.integers(0, 1 << 60))
        for col, v in zip(cols, (draw(names), 3 + k, inode, ino, s)):
            col.append(v)
    return head, *cols


@settings(max_examples=300, deadline=None)
@given(batches(), st.integers(0, 8192))
def test_packed_from_the_columns_as_from_the_entries(args, size):
    listed = PlusBatch(*args).listed()
    want, want_sent = one_by_one_plus(listed, T, size)
    assert pack_plus(listed, T, size) == (want, want_sent)
    batch = PlusBatch(*args)
    data, k = pack_plus_batch(batch, T, size)
    assert data == want
    assert batch.unread()
    if want_sent:
        assert k == len(want_sent)
    else:               # nothing looked up went out: the dots may not have fit either
        assert k == 0


@given(batches())
def test_reads_as_the_entries_it_stands_for_made_once(args):
    head, names_, offs, inodes, inos, stats_ = args
    batch = PlusBatch(*args)
    assert len(batch) == len(head) + len(names_)
    assert batch.unread()
    want = list(head) + [
        DirEntry(n, ino, a.mode >> 12 & 0o17, off, Entry(inode, a))
        for n, off, inode, ino, a in zip(
            names_, offs, inodes, inos,
            (s if type(s) is Attr else Attr.from_stat(s, i) for s, i in zip(stats_, inos)))]
    assert batch == want and list(batch) == want
    assert not batch.unread()
    if want:
        first = batch[0]
        assert batch[0] is first and batch[-1] is batch[len(batch) - 1]
        assert list(batch)[0] is first
        assert batch[:1] == want[:1] and batch + [] == want and [] + batch == want


def test_an_attr_changed_by_a_reader_is_what_goes_out():
    """md-cache and the like read the batch and may change what they read: the bridge
    then packs what they made, not the columns."""
    r = os.stat(".")
    inode = Inode(5, r.st_ino)
    batch = PlusBatch([], [b"x"], [3], [inode], [r.st_ino], [r])
    e = batch[0]
    e.entry.attr.size = 12345                       # a translator's change
    assert not batch.unread()
    assert [x.entry.attr.size for x in batch] == [12345]
    data, sent = pack_plus(batch, T, 4096)
    assert sent == [e] and data == one_by_one_plus([e], T, 4096)[0]
