"""fuse_bridge.notify with a pipe standing in for /dev/fuse: golden bytes of every
notification kind, the bounded queue (oldest dropped, counted), error counting, the
writer thread's end on ENODEV, stop() with a writer blocked in the kernel."""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time

import pytest

from fuse_bridge import abi
from fuse_bridge.notify import Notifier, encode
from tests.mountlib import wait_until
from xlators.core.inode import Inode
from xlators.core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode, StoreData

F_SETPIPE_SZ = 1031


def known(nodeid: int, nlookup: int = 1) -> Inode:
    inode = Inode(nodeid, 1000 + nodeid)
    inode.nlookup = nlookup
    return inode


ROOT = Inode(1, 2)          # nlookup 0, but the root is always known to the kernel


# -- golden bytes (little-endian; written out by hand from <linux/fuse.h>) ----------------

GOLDEN = [
    # INVAL_INODE: out header (len 40, error = code 2, unique 0), nodeid 5, off 0, len 0
    (InvalidateInode(known(5)),
     "28000000" "02000000" "0000000000000000"
     "0500000000000000" "0000000000000000" "0000000000000000"),
    # INVAL_INODE, attributes only: off -1
    (InvalidateInode(known(7), -1, 0),
     "28000000" "02000000" "0000000000000000"
     "0700000000000000" "ffffffffffffffff" "0000000000000000"),
    # INVAL_INODE of a range: off 4096, len 8192
    (InvalidateInode(known(7), 4096, 8192),
     "28000000" "02000000" "0000000000000000"
     "0700000000000000" "0010000000000000" "0020000000000000"),
    # INVAL_ENTRY: len 16+16+4, code 3; parent 1 (the root), namelen 3, flags 0, "abc\0"
    (InvalidateEntry(ROOT, b"abc"),
     "24000000" "03000000" "0000000000000000"
     "0100000000000000" "03000000" "00000000" "61626300"),
    # DELETE: len 16+24+2, code 6; parent 9, child 12, namelen 1, pad, "x\0"
    (DeleteEntry(known(9), known(12), b"x"),
     "2a000000" "06000000" "0000000000000000"
     "0900000000000000" "0c00000000000000" "01000000" "00000000" "7800"),
    # STORE: len 16+24+5, code 4; nodeid 3, offset 10, size 5, pad, "hello"
    (StoreData(known(3), 10, b"hello"),
     "2d000000" "04000000" "0000000000000000"
     "0300000000000000" "0a00000000000000" "05000000" "00000000" "68656c6c6f"),
]


@pytest.mark.parametrize("msg,hexbytes", GOLDEN, ids=lambda v: type(v).__name__
                         if not isinstance(v, str) else "")
def test_golden_bytes(msg, hexbytes):
    code, data = encode(msg)
    assert data == bytes.fromhex(hexbytes)
    length, error, unique = abi.OUT_HEADER.unpack_from(data)
    assert (length, error, unique) == (len(data), code, 0)


def test_encode_rules():
    # an inode the kernel holds no lookup on: nothing to invalidate
    assert encode(InvalidateInode(known(5, nlookup=0))) is None
    assert encode(InvalidateEntry(known(5, nlookup=0), b"a")) is None
    # DELETE whose child the kernel does not know: the dentry is invalidated instead
    code, data = encode(DeleteEntry(ROOT, known(8, nlookup=0), b"a"))
    assert code == abi.NotifyCode.INVAL_ENTRY
    assert data == encode(InvalidateEntry(ROOT, b"a"))[1]
    # protocol older than 7.18 has no DELETE
    code, _ = encode(DeleteEntry(ROOT, known(8), b"a"), minor=17)
    assert code == abi.NotifyCode.INVAL_ENTRY
    # str names, plain nodeids
    assert encode(InvalidateEntry(1, "abc"))[1] == encode(InvalidateEntry(ROOT, b"abc"))[1]
    with pytest.raises(TypeError):
        encode("invalidate everything")


# -- the channel ----------------------------------------------------------------------

def read_messages(rfd: int, count: int, timeout: float = 5.0) -> list[bytes]:
    """``count`` notifications from the read end of the pipe."""
    out: list[bytes] = []
    buf = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(rfd, False)
    while len(out) < count:
        assert time.monotonic() < deadline, f"only {len(out)} of {count} messages arrived"
        try:
            buf += os.read(rfd, 65536)
        except BlockingIOError:
            time.sleep(0.005)
        while len(buf) >= 16:
            (length,) = struct.unpack_from("<I", buf)
            if len(buf) < length:
                break
            out.append(buf[:length])
            buf = buf[length:]
    return out


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def written_for(msg) -> list[bytes]:
    """What send(msg) writes: its notification, and after a DELETE an INVAL_INODE of
    the child's attributes."""
    code, data = encode(msg)
    if code != abi.NotifyCode.DELETE:
        return [data]
    return [data, encode(InvalidateInode(msg.child, -1, 0))[1]]


def test_messages_flow_in_order(pipe):
    r, w = pipe
    n = Notifier(w, 16)
    msgs = [m for m, _ in GOLDEN]
    for m in msgs:
        assert n.send(m) is True
    expect = [data for m in msgs for data in written_for(m)]
    got = read_messages(r, len(expect))
    assert got == expect
    assert n.stop()
    d = n.dump()
    assert d["notify.sent"] == len(msgs) + 1 and d["notify.dropped"] == 0
    assert d["notify.sent.inval-inode"] == 4 and d["notify.sent.store"] == 1
    assert d["notify.state"] == "stopped"


def test_a_delete_is_followed_by_an_attribute_invalidation_of_its_child(pipe):
    """The kernel clears the link count of a DELETE's child as if the name were its
    last; the file may have other hard links, whose stat must then ask again."""
    r, w = pipe
    n = Notifier(w, 16)
    child = known(12)
    assert n.send(DeleteEntry(known(9), child, b"x")) is True
    delete, inval = read_messages(r, 2)
    assert delete == encode(DeleteEntry(known(9), child, b"x"))[1]
    assert abi.NOTIFY_INVAL_INODE_OUT.unpack_from(inval, abi.OUT_HEADER.size) == (12, -1, 0)
    # sent as INVAL_ENTRY (a child the kernel does not know, a kernel before 7.18), it
    # clears nothing: no follow-up
    assert n.send(DeleteEntry(known(9), known(13, nlookup=0), b"y")) is True
    n.session = type("S", (), {"client": type("C", (), {"proto_minor": 17})()})()
    assert n.send(DeleteEntry(known(9), child, b"z")) is True
    assert n.stop()
    got = read_messages(r, 2)
    assert [abi.OUT_HEADER.unpack_from(m)[1] for m in got] == [abi.NotifyCode.INVAL_ENTRY] * 2
    assert n.dump()["notify.sent"] == 4


def test_send_never_blocks_and_drops_the_oldest(pipe):
    """The writer is stuck in write() (a full pipe, as a kernel lock would hold it):
    send() still returns at once; past the limit the oldest queued message goes."""
    r, w = pipe
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    os.write(w, b"\0" * 4096)                   # the pipe is full: the writer blocks
    limit = 8
    n = Notifier(w, limit)
    blocker = InvalidateInode(known(2))
    n.send(blocker)
    wait_until(lambda: n.blocked_since is not None, 5,    # the writer took it and is stuck
               "the writer to block", interval=0.001)
    t0 = time.monotonic()
    msgs = [InvalidateInode(known(100 + i)) for i in range(limit + 5)]
    for m in msgs:
        n.send(m)
    assert time.monotonic() - t0 < 0.5          # 13 sends, none waited for the writer
    d = n.dump()
    assert d["notify.dropped"] == 5 and d["notify.queued"] == limit
    assert d["notify.enqueued"] == limit + 6
    assert "notify.writing-for-seconds" in d
    os.read(r, 4096)                           # the "kernel" lets go
    got = read_messages(r, 1 + limit)
    assert got == [encode(blocker)[1]] + [encode(m)[1] for m in msgs[5:]]
    assert n.stop()


def test_with_room_for_one_message_a_delete_is_not_pushed_out_by_its_follow_up(pipe):
    """--invalidate-limit=1: the DELETE is queued alone (its INVAL_INODE follow-up,
    which would drop it as the oldest, is left out)."""
    r, w = pipe
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    os.write(w, b"\0" * 4096)                   # the pipe is full: the writer blocks
    n = Notifier(w, 1)
    blocker = InvalidateInode(known(2))
    n.send(blocker)
    wait_until(lambda: n.blocked_since is not None, 5, "the writer to block",
               interval=0.001)
    delete = DeleteEntry(known(9), known(12), b"x")
    assert n.send(delete) is True
    assert n.dump()["notify.dropped"] == 0
    os.read(r, 4096)                           # the "kernel" lets go
    assert read_messages(r, 2) == [encode(blocker)[1], encode(delete)[1]]
    assert n.stop()


def test_expected_errors_are_counted_not_failures(pipe):
    r, w = pipe
    n = Notifier(w, 16)
    answers = iter([errno.ENOENT, errno.ENOENT, errno.ENOTDIR, errno.EINVAL, 0, 0])

    def fake_write(fd, data):
        err = next(answers)
        if err:
            raise OSError(err, os.strerror(err))
        return len(data)
    n._os_write = fake_write
    for i in range(6):
        n.send(InvalidateEntry(ROOT, b"n%d" % i))
    n.stop()
    d = n.dump()
    assert d["notify.expected-errors"] == 3
    assert d["notify.expected.ENOENT"] == 2 and d["notify.expected.ENOTDIR"] == 1
    assert d["notify.errors"] == 1                 # EINVAL: logged, counted, goes on
    assert d["notify.sent"] == 2


def test_enodev_ends_the_writer(pipe):
    r, w = pipe
    n = Notifier(w, 16)

    def gone(fd, data):
        raise OSError(errno.ENODEV, "No such device")
    n._os_write = gone
    n.send(InvalidateInode(known(4)))
    n._thread.join(5)
    assert not n._thread.is_alive()
    assert n.ended.startswith("ENODEV")
    assert n.send(InvalidateInode(known(4))) is False
    d = n.dump()
    assert d["notify.discarded-after-end"] == 1 and d["notify.state"].startswith("ENODEV")
    assert n.fd == -1                                  # its duplicate descriptor closed
    n.stop()


def test_skips_unknown_inodes_and_non_notifications(pipe):
    r, w = pipe
    n = Notifier(w, 4)
    assert n.send(InvalidateInode(known(4, nlookup=0))) is False
    assert n.send("something else") is False
    assert n._thread is None                      # nothing to write: no thread yet
    assert n.dump()["notify.skipped-unknown-inode"] == 1
    assert n.dump()["notify.state"] == "idle"
    assert n.stop()


def test_stop_leaves_a_writer_blocked_in_the_kernel(pipe):
    r, w = pipe
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    os.write(w, b"\0" * 4096)
    n = Notifier(w, 4)
    n.send(InvalidateInode(known(2)))
    t0 = time.monotonic()
    assert n.stop(timeout=0.2) is False
    assert time.monotonic() - t0 < 2
    os.read(r, 8192)                              # released: the thread finishes
    n._thread.join(5)
    assert not n._thread.is_alive()


def test_synchronous_debug_mode_writes_on_the_callers_thread(pipe, monkeypatch):
    r, w = pipe
    monkeypatch.setenv("XLFS_DEBUG_SYNC_NOTIFY", "1")
    n = Notifier(w, 4)
    callers = []
    real = n._os_write

    def spy(fd, data):
        callers.append(threading.get_ident())
        return real(fd, data)
    n._os_write = spy
    n.send(InvalidateEntry(ROOT, b"a"))
    assert callers == [threading.get_ident()] and n._thread is None
    assert read_messages(r, 1) == [encode(InvalidateEntry(ROOT, b"a"))[1]]
    assert n.dump()["notify.mode"].startswith("synchronous")
    n.stop()


def test_unbounded_when_limit_is_zero(pipe):
    r, w = pipe
    n = Notifier(w, 0)
    release = threading.Event()
    n._os_write = lambda fd, data: release.wait(5) and len(data)
    for i in range(5000):
        n.send(InvalidateInode(known(2)))
    assert n.dump()["notify.dropped"] == 0
    release.set()
    assert n.stop(timeout=5)
    assert n.dump()["notify.sent"] == 5000


def test_uses_its_own_descriptor(pipe):
    """The writer holds a duplicate: closing the session's descriptor (cli does, after
    serving) cannot make it write into a reused descriptor number."""
    r, w = pipe
    n = Notifier(w, 4)
    assert n.fd != w
    os.close(w)
    n.send(InvalidateInode(known(3)))
    assert read_messages(r, 1) == [encode(InvalidateInode(known(3)))[1]]
    assert n.stop()
