"""Whole-batch dirent packing (abi.pack_dirents, ops_dir.pack_plus) gives exactly the
bytes of packing record by record (abi.pack_dirent, abi.pack_direntplus), stops at the
last whole record that fits, and reports which READDIRPLUS entries went out."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from fuse_bridge import abi
from fuse_bridge.encode import Timeouts, attr_values
from fuse_bridge.ops_dir import pack_plus
from xlators.core.inode import Inode
from xlators.core.types import Attr, DirEntry, Entry

U64 = st.integers(0, (1 << 64) - 1)
names = st.binary(min_size=1, max_size=300).filter(lambda n: b"/" not in n and b"\0" not in n)
plain = st.builds(DirEntry, names, U64, st.integers(0, 15), st.integers(0, (1 << 63) - 1),
                  st.none())
times = st.integers(-(1 << 62), 1 << 62)
attrs = st.builds(Attr, st.integers(1, (1 << 63) - 1), st.integers(0, 1 << 50),
                  st.integers(0, 1 << 40), times, times, times, st.integers(0, 0xFFFFFFFF),
                  st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
                  st.integers(0, 0xFFFFFFFF), st.integers(0, 1 << 40),
                  st.integers(0, 0xFFFFFFFF))


@st.composite
def plus_entries(draw):
    e = draw(plain)
    if draw(st.booleans()):
        return e
    a = draw(attrs)
    inode = Inode(draw(st.integers(2, 1 << 60)), a.ino)
    inode.generation = draw(st.integers(0, 1 << 60))
    return DirEntry(e.name, a.ino, a.mode >> 12 & 0o17, e.off, Entry(inode, a))


def one_by_one_plain(entries, size):
    buf = bytearray(size)
    pos = 0
    for e in entries:
        end = abi.pack_dirent(buf, pos, e.ino, e.off, e.type, e.name)
        if end < 0:
            break
        pos = end
    return bytes(buf[:pos])


def one_by_one_plus(entries, t, size):
    buf = bytearray(size)
    pos = 0
    sent = []
    for e in entries:
        if e.entry is None:
            attr = (e.ino,) + (0,) * 8 + (e.type << 12,) + (0,) * 6
            end = abi.pack_direntplus(buf, pos, 0, 0, 0, 0, 0, 0, attr, e.off, e.type, e.name)
        else:
            i = e.entry.inode
            end = abi.pack_direntplus(buf, pos, i.nodeid, i.generation, t.entry, t.attr,
                                      t.entry_ns, t.attr_ns, attr_values(e.entry.attr),
                                      e.off, e.type, e.name)
        if end < 0:
            break
        pos = end
        if e.entry is not None:
            sent.append(e)
    return bytes(buf[:pos]), sent


@settings(max_examples=200, deadline=None)
@given(st.lists(plain, max_size=40), st.integers(0, 8192))
def test_pack_dirents_matches_record_by_record(entries, size):
    assert abi.pack_dirents(entries, size) == one_by_one_plain(entries, size)


@settings(max_examples=200, deadline=None)
@given(st.lists(plus_entries(), max_size=25), st.integers(0, 8192))
def test_pack_plus_matches_record_by_record(entries, size):
    t = Timeouts(1.5, 0.25, 0)
    data, sent = pack_plus(entries, t, size)
    want, want_sent = one_by_one_plus(entries, t, size)
    assert data == want
    assert sent == want_sent


def test_batch_stops_at_the_last_whole_record():
    entries = [DirEntry(b"a" * 8, 10 + i, 8, i + 1) for i in range(4)]   # 32 bytes each
    assert len(abi.pack_dirents(entries, 127)) == 96
    assert len(abi.pack_dirents(entries, 128)) == 128
    assert abi.pack_dirents(entries, 31) == b""
    long = [DirEntry(b"n" * 300, 1, 8, 1)]                 # past the precompiled layouts
    assert abi.pack_dirents(long, 4096) == one_by_one_plain(long, 4096)
