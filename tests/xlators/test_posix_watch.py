"""storage/posix ``watch-brick``: inotify events in the brick become upcalls (no mount).

The upcalls are recorded by a stand-in parent.  Most tests feed the watcher's pending
events through ``dispatch(read_available())`` so they are deterministic; one runs the real
reader task."""
from __future__ import annotations

import os
import struct

import pytest
import trio

from xlators.core.events import Event
from xlators.core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from xlators.storage import posix_watch
from xlators.storage.posix_watch import IN_CREATE, IN_Q_OVERFLOW, parse_events
from xlators.testing import Harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")


class Recorder:
    """Stands where the graph (and the bridge) would be: records UPCALL messages."""

    def __init__(self) -> None:
        self.msgs: list = []

    def notify(self, event, data=None, source=None) -> None:
        if event is Event.UPCALL:
            self.msgs.append(data)

    def take(self) -> list:
        out, self.msgs = self.msgs, []
        return out


@pytest.fixture
def brick(tmp_path):
    d = tmp_path / "brick"
    d.mkdir()
    (d / "d").mkdir()
    (d / "d" / "f").write_bytes(b"hello")
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {
        "directory": str(d), "reserve": "0", "watch-brick": "on"}})
    rec = Recorder()
    h.top.parents.append(rec)
    yield h, d, rec
    h.fini()


def pump(h) -> None:
    w = h.top._watch
    w.dispatch(w.read_available())


async def test_off_by_default(tmp_path):
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {
        "directory": str(tmp_path), "reserve": "0"}})
    try:
        assert h.top._watch is None
        await h.lookup("/")
        assert "watch.directories" not in h.top.dump()
    finally:
        h.fini()


async def test_root_and_looked_up_directories_are_watched(brick):
    h, d, rec = brick
    w = h.top._watch
    assert h.itable.root.ino in w.ino_wd              # the root, from init
    dent = await h.lookup("/d")
    assert dent.inode.ino in w.ino_wd
    await h.lookup("/d/f")                             # files are not watched
    assert len(w.ino_wd) == 2
    assert h.top.dump()["watch.directories"] == 2


async def test_new_file_in_the_brick_invalidates_the_entry(brick):
    h, d, rec = brick
    dent = await h.lookup("/d")
    (d / "d" / "new").write_bytes(b"x")
    pump(h)
    msgs = rec.take()
    assert InvalidateEntry(dent.inode, b"new") in msgs
    assert InvalidateInode(dent.inode, -1, 0) in msgs    # the directory's mtime/nlink
    # the writes to the new file concern an inode nobody looked up: nothing more
    assert len(msgs) == 2


async def test_appends_invalidate_the_file_once_per_batch(brick):
    h, d, rec = brick
    await h.lookup("/d")
    fent = await h.lookup("/d/f")
    with open(d / "d" / "f", "ab") as f:
        for _ in range(50):
            f.write(b"more")
            f.flush()
    pump(h)
    assert rec.take() == [InvalidateInode(fent.inode, 0, 0)]


async def test_attribute_change_invalidates_attributes_only(brick):
    h, d, rec = brick
    await h.lookup("/d")
    fent = await h.lookup("/d/f")
    os.chmod(d / "d" / "f", 0o600)
    pump(h)
    assert rec.take() == [InvalidateInode(fent.inode, -1, 0)]


async def test_delete_of_a_known_name_is_a_delete_notification(brick):
    h, d, rec = brick
    dent = await h.lookup("/d")
    fent = await h.lookup("/d/f")
    (d / "d" / "g").write_bytes(b"")
    pump(h)
    rec.take()
    os.unlink(d / "d" / "f")
    os.unlink(d / "d" / "g")                 # never looked up: only its dentry
    pump(h)
    msgs = rec.take()
    assert DeleteEntry(dent.inode, fent.inode, b"f") in msgs
    assert InvalidateEntry(dent.inode, b"g") in msgs
    assert not any(isinstance(m, DeleteEntry) and m.name == b"g" for m in msgs)


async def test_rename_invalidates_both_names(brick):
    h, d, rec = brick
    dent = await h.lookup("/d")
    root = h.itable.root
    await h.lookup("/d/f")
    os.rename(d / "d" / "f", d / "moved")
    pump(h)
    msgs = rec.take()
    assert InvalidateEntry(dent.inode, b"f") in msgs
    assert InvalidateEntry(root, b"moved") in msgs
    assert not any(isinstance(m, DeleteEntry) for m in msgs)   # the inode lives on


async def test_forget_removes_the_watch(brick):
    h, d, rec = brick
    dent = await h.lookup("/d")
    w = h.top._watch
    inode = dent.inode
    await h.top.forget(h.frame(), inode)
    assert inode.ino not in w.ino_wd
    (d / "d" / "late").write_bytes(b"")
    pump(h)
    assert not any(getattr(m, "parent", None) is inode for m in rec.take())


async def test_removed_directory(brick):
    """rmdir in the brick: its entry is invalidated (a DELETE once looked up by name).  The
    inode lives on while posix holds its descriptor, so the watch goes with the forget,
    and the IN_IGNORED that follows is absorbed."""
    h, d, rec = brick
    root = h.itable.root
    (d / "e").mkdir()
    eent = await h.lookup("/e")
    w = h.top._watch
    wd = w.ino_wd[eent.inode.ino]
    os.rmdir(d / "e")
    pump(h)
    assert DeleteEntry(root, eent.inode, b"e") in rec.take()
    await h.top.forget(h.frame(), eent.inode)
    assert wd not in w.wd_ino and eent.inode.ino not in w.ino_wd
    pump(h)                                          # IN_DELETE_SELF, IN_IGNORED
    assert rec.take() == []


async def test_unknown_inodes_are_ignored(brick):
    h, d, rec = brick
    # d/ was never looked up: it has no watch; its changes are nobody's business
    (d / "d" / "quiet").write_bytes(b"")
    pump(h)
    assert rec.take() == []


async def test_overflow_invalidates_every_held_inode(brick):
    h, d, rec = brick
    dent = await h.lookup("/d")
    w = h.top._watch
    w.dispatch(struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0))
    msgs = rec.take()
    assert InvalidateInode(dent.inode, -1, 0) in msgs
    assert InvalidateInode(h.itable.root, -1, 0) in msgs
    assert w.stats["overflows"] == 1


def test_parse_events():
    data = (struct.pack("iIII", 1, IN_CREATE, 0, 16) + b"name\0".ljust(16, b"\0")
            + struct.pack("iIII", 2, 0x2, 0, 0))
    assert parse_events(data) == [(1, IN_CREATE, b"name"), (2, 0x2, b"")]


async def test_the_reader_task_delivers_upcalls(brick, nursery):
    h, d, rec = brick
    h.attach_nursery(nursery)
    dent = await h.lookup("/d")                 # the first fop starts the reader
    assert h.top._watch.task_started
    (d / "d" / "live").write_bytes(b"")
    with trio.fail_after(5):
        while InvalidateEntry(dent.inode, b"live") not in rec.msgs:
            await trio.sleep(0.01)


async def test_reconfigure_turns_the_watch_on_and_off(tmp_path):
    (tmp_path / "sub").mkdir()
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {
        "directory": str(tmp_path), "reserve": "0"}})
    try:
        sub = await h.lookup("/sub")
        xl = h.top
        xl.reconfigure({"directory": str(tmp_path), "reserve": "0", "watch-brick": "on"})
        assert xl._watch is not None
        assert {h.itable.root.ino, sub.inode.ino} <= set(xl._watch.ino_wd)  # held dirs
        watch = xl._watch
        xl.reconfigure({"directory": str(tmp_path), "reserve": "0", "watch-brick": "off"})
        assert xl._watch is None and watch.closed
    finally:
        h.fini()


async def test_fini_closes_the_inotify_descriptor(tmp_path):
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {
        "directory": str(tmp_path), "reserve": "0", "watch-brick": "on"}})
    fd = h.top._watch.fd
    h.fini()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert posix_watch.BrickWatch   # the module stays importable without a watch


async def test_a_listing_alone_starts_the_reader(brick, nursery):
    h, d, rec = brick
    (d / "top").write_bytes(b"")
    h.attach_nursery(nursery)
    await h.listdir("/", plus=True)            # READDIRPLUS: new inodes, no lookup
    assert h.top._watch.task_started
