"""A listing kept as columns (xlators.core.dir_batch) reads as the list of DirEntry it
stands for, and the READDIR reply packed from it a run at a time
(fuse_bridge.dirent_pack) is byte for byte the record-by-record one, whatever the name
lengths (1..255, sorted or not, runs of every length), the batch's start and end, the
byte budget and the host's cached cookies."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fuse_bridge import abi, dirent_pack
from tests.unit.test_dirent_batch import one_by_one_plain
from xlators.core.dir_batch import DirBatch, DirColumns
from xlators.core.types import DirEntry



U64 = st.integers(0, (1 << 64) - 1)
name_bytes = st.binary(min_size=1, max_size=255).filter(
    lambda n: b"/" not in n and b"\0" not in n)


@st.composite
def columns(draw, max_size=60):
    """Columns with names drawn from a few lengths (so that runs form), sorted by
    length or not."""
    lengths = draw(st.lists(st.integers(1, 255), min_size=1, max_size=4))
    n = draw(st.integers(0, max_size))
    names = [bytes([97 + i % 26]) * draw(st.sampled_from(lengths)) for i in range(n)]
    names = [draw(name_bytes) if draw(st.integers(0, 9)) == 0 else x for x in names]
    if draw(st.booleans()):
        names.sort(key=len)
    inos = [draw(U64) for _ in names]
    types = bytes(draw(st.integers(0, 15)) for _ in names)
    return DirColumns(names, inos, types)


def entries_of(cols: DirColumns, a: int, b: int) -> list:
    return [DirEntry(cols.names[i], cols.inos[i], cols.types[i], i + 1) for i in range(a, b)]


@settings(max_examples=300, deadline=None)
@given(columns(), st.data(), st.integers(0, 12000))
def test_a_batch_packs_as_record_by_record(cols, data, size):
    n = len(cols)
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(a, n))
    batch = DirBatch(cols, a, b)
    want = one_by_one_plain(entries_of(cols, a, b), size)
    assert dirent_pack.pack_readdir(batch, size) == want
    assert dirent_pack.pack_readdir(entries_of(cols, a, b), size) == want


@pytest.mark.parametrize("namelen", [1, 6, 7, 8, 9, 16, 17, 100, 254, 255])
@pytest.mark.parametrize("count", [1, 7, 8, 9, 1000])
def test_every_name_length_in_long_runs(namelen, count):
    names = [bytes([65 + i % 50]) * namelen for i in range(count)]
    cols = DirColumns(names, [(i * 7919) << 40 | i for i in range(count)],
                      bytes(i % 16 for i in range(count)))
    want = one_by_one_plain(entries_of(cols, 0, count), 1 << 22)
    assert dirent_pack.pack_readdir(DirBatch(cols, 0, count), 1 << 22) == want
    # a budget ending inside a record keeps only the whole records before it
    record = (24 + namelen + 7) & ~7
    for size in (record - 1, record, record * count - 1):
        got = dirent_pack.pack_readdir(DirBatch(cols, 0, count), size)
        assert got == want[:size // record * record]


def test_cookies_past_the_cached_ones():
    names = [b"x" * 6] * 20
    cols = DirColumns(names, list(range(20)), bytes([8]) * 20)
    for first in (0, (1 << 16) - 5, (1 << 18) - 3, (1 << 18) + 7, 1 << 40):
        got = dirent_pack.pack_columns(names, cols.inos, cols.types, first + 1, 4096)
        want = one_by_one_plain([DirEntry(x, i, 8, first + 1 + i)
                                 for i, x in enumerate(names)], 4096)
        assert got == want


def test_names_longer_than_255_bytes_go_record_by_record():
    names = [b"a" * 300, b"b" * 300, b"c"]
    got = dirent_pack.pack_columns(names, [1, 2, 3], bytes([8, 8, 4]), 5, 4096)
    assert got == one_by_one_plain([DirEntry(x, i + 1, t, 5 + i) for i, (x, t)
                                    in enumerate(zip(names, [8, 8, 4]))], 4096)
    cols = DirColumns([b"c"] + names, [9, 1, 2, 3], bytes([4, 8, 8, 4]))
    assert cols.shape is None
    assert dirent_pack.pack_readdir(DirBatch(cols, 1, 4), 4096) == \
        dirent_pack.pack_columns(names, [1, 2, 3], bytes([8, 8, 4]), 2, 4096)


@settings(max_examples=200, deadline=None)
@given(columns(max_size=20), st.data())
def test_a_batch_reads_as_its_list_of_direntries(cols, data):
    n = len(cols)
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(a, n))
    batch = DirBatch(cols, a, b)
    want = entries_of(cols, a, b)
    assert list(batch) == want and batch == want and want == batch
    assert len(batch) == len(want) and bool(batch) == bool(want)
    for i in range(-len(want), len(want)):
        assert batch[i] == want[i]
    i = data.draw(st.integers(-30, 30))
    j = data.draw(st.integers(-30, 30))
    step = data.draw(st.sampled_from([None, 1, 2, -1]))
    assert list(batch[i:j:step]) == want[i:j:step]
    assert batch + [DirEntry(b"z", 1, 8, 99)] == want + [DirEntry(b"z", 1, 8, 99)]
    assert [DirEntry(b"z", 1, 8, 99)] + batch == [DirEntry(b"z", 1, 8, 99)] + want
    out: list = []
    out += batch
    assert out == want
    assert all(e.entry is None for e in batch)
    with pytest.raises(IndexError):
        batch[len(want)]
    assert batch.columns() == (cols.names[a:b], cols.inos[a:b], cols.types[a:b],
                               cols.shape[a:b] if cols.shape is not None else None, a + 1)


def test_bad_columns_and_bounds_are_refused():
    with pytest.raises(ValueError, match="2 names, 1 inode numbers, 2 types"):
        DirColumns([b"a", b"b"], [1], b"\x08\x08")
    cols = DirColumns([b"a"], [1], b"\x08")
    with pytest.raises(ValueError, match="2 names, 1 lengths"):
        DirColumns([b"a", b"b"], [1, 2], b"\x08\x08", b"\x01")
    with pytest.raises(ValueError, match="entries 0..2 of 1"):
        DirBatch(cols, 0, 2)
    assert abi.pack_dirents([], 4096) == dirent_pack.pack_readdir(DirBatch(cols, 1, 1), 4096)
