"""Every fop of the fop table that may change a file's contents drops what the data caches
(io-cache, read-ahead, quick-read) hold of that file, and waits for the writes
write-behind holds back for that file: the list is read from the table
(xlators.performance.fop_targets / data_changes), and this test reads the table on its
own, so a fop added to it that the caches or write-behind miss fails here."""
from __future__ import annotations

import os
import stat

import pytest

from xlators.core.fops import FOPS, Fop
from xlators.core.frame import Frame
from xlators.core.inode import Fd, Inode, Loc
from xlators.core.types import Attr, Entry, SetAttr
from xlators.performance.fop_targets import METADATA_ONLY_FOPS, data_changes_of
from xlators.performance.io_cache import IoCache
from xlators.performance.quick_read import QuickRead
from xlators.performance.read_ahead import ReadAhead
from xlators.performance.write_behind import WriteBehind
from xlators.testing import RecordingLeaf

CACHES = (IoCache, ReadAhead, QuickRead)
_EXISTING = ("inode", "fd", "fd_out")


def data_changing_fops() -> list[Fop]:
    """From the table: a modifying fop naming an existing inode (an inode or an fd it
    writes through) changes its contents unless it is declared metadata-only; an open
    may truncate."""
    out = [f for f in FOPS if f.modifies and f.name not in METADATA_ONLY_FOPS
           and any(p in _EXISTING for p in f.param_names)]
    return out + [f for f in FOPS if f.name == "open"]


def test_metadata_only_fops_are_modifying_fops_of_the_table():
    names = {f.name: f for f in FOPS}
    for n in METADATA_ONLY_FOPS:
        assert n in names and names[n].modifies, n


def _call(fop: Fop, inode: Inode, other: Inode, root: Inode) -> tuple:
    """Arguments that make ``fop`` change ``inode``'s data."""
    args = []
    for p in fop.param_names:
        if p == "inode":
            v = inode
        elif p in ("fd", "fd_out"):
            v = Fd(inode, os.O_RDWR)
        elif p == "fd_in":
            v = Fd(other, os.O_RDONLY)
        elif p == "changes":
            v = SetAttr(size=0)
        elif p == "flags":
            v = os.O_RDWR | os.O_TRUNC
        elif p in ("loc", "oldloc", "newloc"):
            v = Loc(root, b"name")
        elif p in ("data", "value", "name", "target"):
            v = b"x"
        elif p == "mode":
            v = stat.S_IFREG | 0o644
        else:
            v = 0
        args.append(v)
    return tuple(args)


def _attr(ino: int) -> Attr:
    return Attr(ino=ino, size=0, mode=stat.S_IFREG | 0o644, nlink=1)


@pytest.mark.parametrize("cls", CACHES, ids=lambda c: c.type)
@pytest.mark.parametrize("fop", data_changing_fops(), ids=lambda f: f.name)
async def test_every_data_changing_fop_invalidates(cls, fop):
    leaf = RecordingLeaf()
    xl = cls(cls.type.split("/")[-1], [leaf], {}, itable=leaf.itable)
    xl.init()
    root = leaf.itable.root
    inode, other = Inode(7, 7), Inode(8, 8)
    leaf.result = {"Entry": Entry(inode, _attr(7)), "Attr": _attr(7)}.get(fop.result, 0)
    dropped: list[Inode] = []
    xl._data_changed = dropped.append
    try:
        args = _call(fop, inode, other, root)
        assert inode in data_changes_of(fop.name, args, {}, leaf.result), fop.name
        await getattr(xl, fop.name)(Frame(unique=1), *args)
    finally:
        xl.fini()
    assert [c[0] for c in leaf.calls] == [fop.name]
    assert any(i is inode for i in dropped), f"{cls.type}: {fop.name} did not invalidate"
    assert not any(i is other for i in dropped), f"{cls.type}: {fop.name} dropped its source"


@pytest.mark.parametrize("cls", CACHES, ids=lambda c: c.type)
async def test_a_utimes_or_plain_open_keeps_the_data(cls):
    leaf = RecordingLeaf()
    xl = cls(cls.type.split("/")[-1], [leaf], {}, itable=leaf.itable)
    xl.init()
    inode = Inode(7, 7)
    dropped: list[Inode] = []
    xl._data_changed = dropped.append
    try:
        await xl.open(Frame(unique=1), inode, os.O_RDWR, Fd(inode, os.O_RDWR))
        leaf.result = _attr(7)
        if cls is not QuickRead:            # quick-read drops on any setattr, as GlusterFS
            await xl.setattr(Frame(unique=2), inode, SetAttr(mode=0o600))
    finally:
        xl.fini()
    assert dropped == []


@pytest.mark.parametrize("fop", [f for f in data_changing_fops() if f.name != "writev"],
                         ids=lambda f: f.name)
async def test_every_data_changing_fop_waits_for_the_held_writes(fop):
    """write-behind winds a change of an inode's data only after the writes it holds for
    that inode (writev itself queues behind them)."""
    leaf = RecordingLeaf()
    xl = WriteBehind("wb", [leaf], {}, itable=leaf.itable)
    xl.init()
    inode, other = Inode(7, 7), Inode(8, 8)
    leaf.result = {"Entry": Entry(inode, _attr(7)), "Attr": _attr(7)}.get(fop.result, 0)
    awaited: list[tuple[Inode, int]] = []       # (inode, child calls made so far)

    async def await_held(i):
        awaited.append((i, len(leaf.calls)))
    xl._await_held_data = await_held
    try:
        args = _call(fop, inode, other, leaf.itable.root)
        await getattr(xl, fop.name)(Frame(unique=1), *args)
    finally:
        xl.fini()
    assert [c[0] for c in leaf.calls] == [fop.name]
    if fop.result != "Entry":               # a create names no existing inode
        assert inode in data_changes_of(fop.name, args, {}), fop.name
        assert (inode, 0) in awaited, f"write-behind: {fop.name} did not wait"
