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


async def test_a_new_name_of_a_known_inode_invalidates_its_attributes(brick):
    """A hard link made in the brick changes the link count of an inode the kernel may
    hold under another name; a move its ctime.  inotify gives only the name's event."""
    h, d, rec = brick
    dent = await h.lookup("/d")
    fent = await h.lookup("/d/f")
    os.link(d / "d" / "f", d / "d" / "link")
    pump(h)
    msgs = rec.take()
    assert InvalidateEntry(dent.inode, b"link") in msgs
    assert InvalidateInode(fent.inode, -1, 0) in msgs
    os.rename(d / "d" / "f", d / "d" / "g")
    pump(h)
    assert InvalidateInode(fent.inode, -1, 0) in rec.take()
    (d / "d" / "fresh").write_bytes(b"")          # a new inode: nobody holds it
    pump(h)
    assert all(not isinstance(m, InvalidateInode) or m.inode is dent.inode
               for m in rec.take())


async def test_removing_a_name_nobody_looked_up_invalidates_the_multi_linked(brick):
    """inotify names only the removed name; the held files that have (had) several
    names get their attributes invalidated (one of them lost a link), no others."""
    h, d, rec = brick
    os.link(d / "d" / "f", d / "d" / "g")       # before the lookup: f has 2 names
    dent = await h.lookup("/d")
    fent = await h.lookup("/d/f")
    (d / "d" / "single").write_bytes(b"")
    sent = await h.lookup("/d/single")
    pump(h)
    rec.take()
    os.unlink(d / "d" / "g")                    # never looked up
    pump(h)
    msgs = rec.take()
    assert InvalidateEntry(dent.inode, b"g") in msgs
    assert InvalidateInode(fent.inode, -1, 0) in msgs
    assert InvalidateInode(sent.inode, -1, 0) not in msgs
    os.mkdir(d / "d" / "sub")
    os.rmdir(d / "d" / "sub")                   # a directory: no file lost a link
    pump(h)
    assert InvalidateInode(fent.inode, -1, 0) not in rec.take()


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


# -- posix's own namespace changes: matched to their events, no upcall -----------------------

def node_of(h, inode):
    return inode.ctx[h.top]


async def test_own_namespace_changes_send_nothing(brick):
    """create, mknod, mkdir, symlink, link, rename, unlink and rmdir made through posix
    make their inotify events, which the watcher takes as its own: no upcall, not even
    the parent's attributes (the kernel invalidates those itself after each reply)."""
    h, d, rec = brick
    w = h.top._watch
    dent = await h.lookup("/d")
    await h.lookup("/d/f")
    fr = h.frame()
    fd = await h.create("/d/new")                  # left open: its close is a write event
    await h.top.mknod(fr, await h.parent_loc("/d/fifo"), 0o10644, 0, 0o022)
    await h.mkdir("/d/sub")
    await h.symlink("f", "/d/ln")
    await h.top.link(fr, fd.inode, await h.parent_loc("/d/hard"))
    await h.rename("/d/f", "/g")                    # across directories, both watched
    await h.rename("/d/hard", "/d/new2")
    await h.unlink("/d/new2")
    await h.rmdir("/d/sub")
    assert w.n_expected == 11
    pump(h)
    assert rec.take() == []
    assert w.stats["own-events"] == 11 and w.expected == {} and w.n_expected == 0
    await h.close(fd)
    assert dent.inode.ino in w.ino_wd


async def test_a_brick_change_right_after_an_own_one_is_seen(brick):
    h, d, rec = brick
    dent = await h.lookup("/d")
    await h.mkdir("/d/x")
    pump(h)
    assert rec.take() == []
    os.rmdir(d / "d" / "x")                          # after the watcher read posix's event
    pump(h)
    msgs = rec.take()
    assert InvalidateEntry(dent.inode, b"x") in msgs
    assert InvalidateInode(dent.inode, -1, 0) in msgs


async def test_a_brick_change_before_the_watcher_reads_is_seen(brick):
    """The brick changes the same names between posix's system call and the watcher's
    read: the queue then holds both, and only posix's own events are matched."""
    h, d, rec = brick
    dent = await h.lookup("/d")
    root = h.itable.root
    await h.lookup("/d/f")
    await h.rename("/d/f", "/d/g")                  # own: MOVED_FROM f, MOVED_TO g
    os.rename(d / "d" / "g", d / "d" / "f")         # the brick's: MOVED_FROM g, MOVED_TO f
    await h.mkdir("/x")                             # own: CREATE x
    os.rmdir(d / "x")                               # the brick's: DELETE x
    os.mkdir(d / "x")                               # the brick's: CREATE x
    pump(h)
    msgs = rec.take()
    assert InvalidateEntry(dent.inode, b"g") in msgs
    assert InvalidateEntry(dent.inode, b"f") in msgs
    assert InvalidateInode(dent.inode, -1, 0) in msgs
    assert InvalidateEntry(root, b"x") in msgs
    assert h.top._watch.stats["own-events"] == 3


async def expect_one_mkdir(h):
    """Look up /d and make /d/x through posix: the watcher then expects that one event.
    Returns the watcher and /d's dentry."""
    w = h.top._watch
    dent = await h.lookup("/d")
    await h.mkdir("/d/x")
    assert w.n_expected == 1
    return w, dent


async def test_a_directory_without_a_watch_records_nothing(brick):
    h, d, rec = brick
    w, dent = await expect_one_mkdir(h)
    w.forget(node_of(h, dent.inode))               # the watch goes: so does what it expected
    assert w.expected == {} and w.n_expected == 0
    await h.unlink("/d/f")
    await h.mkdir("/d/y")
    assert w.expected == {}
    pump(h)
    assert rec.take() == []                          # (no watch: nothing is reported)


async def test_overflow_drops_the_expected_events(brick):
    h, d, rec = brick
    w, dent = await expect_one_mkdir(h)
    w.dispatch(struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0))
    assert w.expected == {} and w.n_expected == 0
    rec.take()
    pump(h)                                          # posix's event, no longer expected
    assert InvalidateEntry(dent.inode, b"x") in rec.take()


async def test_an_unmatched_expectation_goes_with_the_read(brick):
    """Everything recorded before a read is in it: what is left over afterwards can
    only be a mistake, and must not take a later event from the brick."""
    h, d, rec = brick
    w = h.top._watch
    dent = await h.lookup("/d")
    w.created(node_of(h, dent.inode), b"ghost")    # an event that never comes
    pump(h)
    assert w.expected == {} and w.stats["own-unmatched"] == 1
    (d / "d" / "ghost").write_bytes(b"")
    pump(h)
    assert InvalidateEntry(dent.inode, b"ghost") in rec.take()


async def test_a_rename_onto_the_same_inode_records_nothing(brick):
    """rename(2) between two names of one inode succeeds and changes nothing: no event,
    so nothing may be expected."""
    h, d, rec = brick
    w = h.top._watch
    await h.lookup("/d")
    os.link(d / "d" / "f", d / "d" / "f2")
    pump(h)
    rec.take()
    await h.lookup("/d/f2")
    await h.rename("/d/f", "/d/f2")
    assert (d / "d" / "f").exists() and w.expected == {}


async def test_too_many_expected_events_pause_the_matching(brick, monkeypatch):
    monkeypatch.setattr(posix_watch, "MAX_EXPECTED", 2)
    h, d, rec = brick
    w = h.top._watch
    dent = await h.lookup("/d")
    for name in ("a", "b", "c", "e"):
        await h.mkdir(f"/d/{name}")
    assert w.paused and w.expected == {} and w.stats["own-pauses"] == 1
    pump(h)
    msgs = rec.take()
    for name in (b"a", b"b", b"c", b"e"):                 # as without the matching
        assert InvalidateEntry(dent.inode, name) in msgs
    assert not w.paused
    await h.mkdir("/d/z")
    pump(h)
    assert rec.take() == []


async def test_with_io_threads_nothing_is_matched(tmp_path):
    """A call in a worker thread returns after an await: the watcher may have read its
    event already, so posix records nothing and the upcalls stay."""
    (tmp_path / "d").mkdir()
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {
        "directory": str(tmp_path), "reserve": "0", "watch-brick": "on",
        "io-threads": "on"}})
    rec = Recorder()
    h.top.parents.append(rec)
    try:
        dent = await h.lookup("/d")
        await h.mkdir("/d/x")
        assert h.top._watch.expected == {}
        pump(h)
        assert InvalidateEntry(dent.inode, b"x") in rec.take()
        # and not after it is turned off at run time either (calls may be in flight)
        h.top.reconfigure({"directory": str(tmp_path), "reserve": "0",
                           "watch-brick": "on", "io-threads": "off"})
        await h.mkdir("/d/y")
        assert h.top._watch.expected == {}
    finally:
        h.fini()
