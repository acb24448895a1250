"""FOPEN_NOFLUSH on real mounts: the kernel's requests counted in a ``--dump-fuse``
recording.  On fast.vol (md-cache over posix: no translator needs FLUSH, none handles
locks) close(2) sends no FLUSH; on local.vol (features/locks) every close does.  fast.vol
leaves record locks and flocks to the kernel: two processes still conflict, POSIX's
"any close drops the owner's locks" holds, and no lock request reaches the daemon.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

import pytest

from tests.mountlib import VOLFILES, Mounted, can_mount, requests_in_dump, run_in_child

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

FAST = VOLFILES / "fast.vol"
LOCAL = VOLFILES / "local.vol"
FILES = 20


def create_close(m: Mounted) -> None:
    """open(O_CREAT|O_EXCL) + write 4 KiB + close, FILES times; one file reopened."""
    for i in range(FILES):
        fd = os.open(m.path(f"f{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, b"x" * 4096)
        finally:
            os.close(fd)
    with open(m.path("f0"), "rb") as f:
        assert f.read() == b"x" * 4096


@pytest.mark.parametrize("volfile,passthrough", [(FAST, "no"), (FAST, "auto"),
                                                 (LOCAL, "no")],
                         ids=["fast", "fast-passthrough", "local"])
def test_flush_requests_per_close(tmp_path: Path, volfile: Path, passthrough: str) -> None:
    dump = tmp_path / "fuse.dump"
    with Mounted(volfile, tmp_path, f"--fuse-passthrough={passthrough}",
                 f"--dump-fuse={dump}", limit=60) as m:
        create_close(m)
    got = requests_in_dump(dump)
    assert got["CREATE"] == FILES and got["RELEASE"] >= FILES + 1, got
    if volfile == FAST:
        assert got["FLUSH"] == 0, got
    else:
        assert got["FLUSH"] >= FILES + 1, got


def _flock_struct(type_: int, start: int = 0, length: int = 100) -> bytes:
    return struct.pack("hhqqi4x", type_, os.SEEK_SET, start, length, 0)


def _try_locks(path: str, expect_held: bool, holder: int) -> int:
    """In a child process: the parent's write lock on bytes 0-99 conflicts (F_SETLK
    fails with EAGAIN, F_GETLK names the parent) or is gone; same for its flock."""
    fd = os.open(path, os.O_RDWR)
    try:
        if expect_held:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
                return 10                                   # the lock was not held
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    return 11
            got = fcntl.fcntl(fd, fcntl.F_GETLK, _flock_struct(fcntl.F_WRLCK))
            type_, _, start, length, pid = struct.unpack("hhqqi4x", got)
            if type_ != fcntl.F_WRLCK or pid != holder:
                return 12
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)   # raises if held
            fcntl.lockf(fd, fcntl.LOCK_UN, 100, 0)
    finally:
        os.close(fd)
    return 0


def _try_flock(path: str, expect_held: bool) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            return 0 if expect_held and exc.errno == errno.EWOULDBLOCK else 20
        return 21 if expect_held else 0
    finally:
        os.close(fd)


def test_locks_conflict_between_processes_on_fast(tmp_path: Path) -> None:
    dump = tmp_path / "fuse.dump"
    with Mounted(FAST, tmp_path, f"--dump-fuse={dump}", limit=60) as m:
        p = m.path("locked")
        with open(p, "wb") as f:
            f.write(b"\0" * 200)
        me = os.getpid()
        a = os.open(p, os.O_RDWR)
        b = os.open(p, os.O_RDONLY)           # another descriptor of the same file
        try:
            fcntl.lockf(a, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
            assert run_in_child(_try_locks, p, True, me, timeout=20) == 0
            os.close(b)                       # any close drops this process's locks
            b = -1
            assert run_in_child(_try_locks, p, False, me, timeout=20) == 0
            fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert run_in_child(_try_flock, p, True, timeout=20) == 0
        finally:
            os.close(a)
            if b >= 0:
                os.close(b)
        assert run_in_child(_try_flock, p, False, timeout=20) == 0   # gone with its file
    got = requests_in_dump(dump)
    assert got["FLUSH"] == 0, got
    assert got["GETLK"] == got["SETLK"] == got["SETLKW"] == 0, got   # the kernel's own
