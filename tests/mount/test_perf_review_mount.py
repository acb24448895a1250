"""Correctness of the performance translators on real mounts, one bug each (found in a
review of xlators/performance/): each test failed before its fix.

Waits are liveness limits (a hung request fails the test instead of the run), never
timing assertions."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.mountlib import (VOLFILES, Mounted, PlusListing, needs_getdents, needs_mount,
                            two_mounts, wait_until)

pytestmark = [pytest.mark.mount, needs_mount]

_WAIT_FOR_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print("waiting", flush=True)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("got", flush=True)
"""


def _blocked(pid: int) -> bool:
    """``pid`` sleeps in the kernel (its SETLKW is with the daemon)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return False


def test_more_blocked_lock_waiters_than_io_threads_slots(tmp_path):
    # Each waiting SETLKW held one of io-threads' thread-count slots: with as many
    # waiters as slots, the holder's unlock (and every other request) waited for good.
    # (perf.vol: features/locks answers the locks, so the kernel sends them down.)
    with Mounted(VOLFILES / "perf.vol", tmp_path, "--attribute-timeout=0",
                 overrides=["io-threads.thread-count=2"], limit=60) as m:
        path = m.path("f")
        with open(path, "wb") as f:
            f.write(b"x")
        holder = os.open(path, os.O_RDWR)
        import fcntl
        fcntl.lockf(holder, fcntl.LOCK_EX)
        waiters = [subprocess.Popen([sys.executable, "-c", _WAIT_FOR_LOCK, path],
                                    stdout=subprocess.PIPE, text=True) for _ in range(3)]
        try:
            for w in waiters:
                assert w.stdout.readline() == "waiting\n"
            wait_until(lambda: all(_blocked(w.pid) for w in waiters), 10,
                       "the lock waiters to block", detail=m.read_log)
            time.sleep(0.2)                    # their SETLKW requests are in the daemon
            out = subprocess.run([sys.executable, "-c",
                                  f"import os; print(os.stat({path!r}).st_size)"],
                                 capture_output=True, text=True, timeout=20)
            assert out.stdout == "1\n"         # another request is still served
            fcntl.lockf(holder, fcntl.LOCK_UN)
            for w in waiters:
                assert w.wait(20) == 0
        finally:
            os.close(holder)
            for w in waiters:
                if w.poll() is None:
                    w.kill()
                w.wait()
                w.stdout.close()


SLOW_WRITES_VOL = """
volume posix
    type storage/posix
    option directory /var/lib/xlfs/brick
end-volume

volume slow
    type debug/delay-gen
    option delay-percentage 100
    option delay-duration 200000
    option enable writev
    subvolumes posix
end-volume

volume write-behind
    type performance/write-behind
    subvolumes slow
end-volume

volume md-cache
    type performance/md-cache
    option cache-invalidation on
    option md-cache-timeout 600
    subvolumes write-behind
end-volume
"""


def test_a_stat_while_writes_are_queued_does_not_keep_the_old_mtime(tmp_path):
    # write-behind's lookup answered before the queued writes landed, with the old
    # mtime, and md-cache (600 s, as in perf.vol) kept it: the file's mtime never moved
    # on.  (Writes are slowed down below write-behind so that the LOOKUP surely comes
    # while one is queued.)
    vol = tmp_path / "slow-writes.vol"
    vol.write_text(SLOW_WRITES_VOL)
    with Mounted(vol, tmp_path, "--entry-timeout=0", "--attribute-timeout=0",
                 limit=60) as m:
        path = m.path("f")
        with open(path, "wb") as f:
            f.write(b"x")
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, b"y" * 4096, 0)
            os.stat(path)                      # a LOOKUP while the write is queued
            os.fsync(fd)                       # it has landed
        finally:
            os.close(fd)
        brick = os.stat(m.brick / "f")
        mine = os.stat(path)
        assert (mine.st_size, mine.st_mtime_ns, mine.st_ctime_ns) == \
            (brick.st_size, brick.st_mtime_ns, brick.st_ctime_ns)


def _open_chmod_read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.chmod(path, 0)
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


def test_open_behind_fd_stays_readable_after_a_chmod_000():
    # POSIX checks permissions at open: the descriptor stays readable.  open-behind
    # made the deferred open at the first read, as the opener, and got EACCES.
    import shutil
    import tempfile
    from pathlib import Path
    from tests.posix.posixlib import as_user
    base = Path(tempfile.mkdtemp(prefix="xlfs-ob-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        with Mounted(VOLFILES / "open-behind.vol", base, "--direct-io-mode=yes",
                     limit=60) as m:
            os.chmod(m.brick, 0o755)
            os.chmod(m.mountpoint, 0o755)
            path = m.path("f")
            with open(path, "wb") as f:
                f.write(b"readable")
            os.chown(path, 1000, 1000)
            assert as_user(1000, _open_chmod_read, path) == b"readable"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_read_ahead_answers_no_stale_short_read_after_an_append_by_another_mount(tmp_path):
    # Two mounts of one brick, no brick watch (no upcalls): the reader's read-ahead
    # prefetched the page that held the file's end, the writer (a second mount) appended.
    # The reader's next read across the old end came back short from that page (and the
    # kernel then cut the file's size), as GlusterFS's read caches do.  (The pause lets
    # the background prefetch finish first; were it slower, the test would pass without
    # showing anything, never fail wrongly.)
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "f").write_bytes(b"a" * 4196)
    with two_mounts(VOLFILES / "read-ahead.vol", tmp_path, "--direct-io-mode=yes",
                    overrides=["posix.watch-brick=off"]) as (reader, writer):
        fd = os.open(reader.path("f"), os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == b"a" * 4096   # the end is prefetched
            time.sleep(0.5)
            with open(writer.path("f"), "ab") as f:
                f.write(b"b" * 1000)
            assert os.pread(fd, 4096, 4096) == b"a" * 100 + b"b" * 1000
        finally:
            os.close(fd)


@needs_getdents
def test_readdir_ahead_reads_ahead_for_ls_l(tmp_path):
    # ls -l's requests: READDIRPLUS throughout (a lookup before each), 4 KiB each here.
    # The first is wound; from the second on readdir-ahead should answer from what it
    # read ahead (its statedump section in .meta: hits, prefetched entries).
    names = [f"file-{i:04d}" for i in range(600)]
    (tmp_path / "brick" / "d").mkdir(parents=True)
    for name in names:
        (tmp_path / "brick" / "d" / name).write_bytes(b"")
    with Mounted(VOLFILES / "readdir-ahead.vol", tmp_path, "--entry-timeout=30",
                 limit=60) as m:
        with PlusListing(m.path("d"), names) as listing:
            while listing.next(4096):
                pass
        assert sorted(listing.listed) == names
        private = m.private("readdir-ahead")
        assert int(private["hits"]) > 0 and int(private["prefetched"]) > 0, private
