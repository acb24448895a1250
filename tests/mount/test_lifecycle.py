"""The daemon's life around its mount: signals, open files at unmount, dead mounts,
mounting twice, daemon mode.

- SIGKILL: the auto-unmount guard (fuse_bridge.mount.start_unmount_guard) removes the
  mount, so no "Transport endpoint is not connected" is left behind.
- SIGTERM / SIGINT: a clean unmount and exit status 0.
- SIGTERM with a file open: the mount is detached lazily, the open file keeps working
  until it is closed, then the daemon exits.
- A dead mount at start (guard killed first, then the daemon; or, with no guard process
  to find, the daemon stopped and its connection aborted): xlfs refuses in one line that
  carries the exact ``fusermount3 -u -z MOUNTPOINT`` to run.
- Mounting over a live xlfs mount, or on a missing mountpoint: one clear line, non-zero.
- Daemon mode (no -N) returns only once the mount answers, and writes --pid-file.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path
from contextlib import suppress
from typing import Optional

import pytest

from fuse_bridge import mount as mnt
from tests.mountlib import ROOT, VOLFILES, Mounted, needs_mount, wait_until, xlfs_command

pytestmark = [pytest.mark.mount, needs_mount]
LOCAL = VOLFILES / "local.vol"


def run_xlfs(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(xlfs_command() + list(args), cwd=str(ROOT), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def one_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{err}"
    return err


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[tuple[int, list[str]]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, ValueError, IndexError):
            continue
        out.append((int(entry), argv))
    return out


def stat_errno(path: Path) -> int:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno
    return 0


def mounted(path: Path) -> bool:
    return mnt.find_mount(str(path)) is not None


# -- signals ----------------------------------------------------------------------------
def test_sigkill_leaves_no_dead_mount(tmp_path: Path) -> None:
    with Mounted(LOCAL, tmp_path) as m:
        root = Path(m.mountpoint)
        (root / "f").write_bytes(b"data")
        fd = os.open(root / "f", os.O_RDONLY)
        try:
            m.proc.kill()
            m.proc.wait(10)
            wait_until(lambda: not mounted(root), 5.0,
                       "the unmount guard to remove the mount of a SIGKILLed daemon")
            assert stat_errno(root) == 0, os.strerror(stat_errno(root))
            assert not mnt.is_stale(str(root))
            assert os.listdir(root) == []                  # the bare directory again
            # the file opened before is dead, not hanging
            err = 0
            try:
                os.pread(fd, 4, 0)
            except OSError as exc:
                err = exc.errno
            assert err in (errno.ENOTCONN, errno.EIO, 0), os.strerror(err)
        finally:
            try:
                os.close(fd)            # its FLUSH fails: ENOTCONN, the fd is gone anyway
            except OSError as exc:
                assert exc.errno == errno.ENOTCONN, exc
        assert (m.brick / "f").read_bytes() == b"data"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts_cleanly(tmp_path: Path, sig: int) -> None:
    with Mounted(LOCAL, tmp_path) as m:
        root = Path(m.mountpoint)
        (root / "f").write_bytes(b"x" * 10000)
        assert m.stop(sig) == 0, m.read_log()[-3000:]
        assert not mounted(root)
        assert stat_errno(root) == 0 and os.listdir(root) == []
        assert "Traceback" not in m.read_log()
        assert (m.brick / "f").stat().st_size == 10000


def test_sigterm_with_open_file_detaches_lazily(tmp_path: Path) -> None:
    with Mounted(LOCAL, tmp_path) as m:
        root = Path(m.mountpoint)
        fd = os.open(root / "busy", os.O_RDWR | os.O_CREAT, 0o644)
        closed = False
        try:
            os.write(fd, b"before")
            m.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: not mounted(root), 10.0,
                       "a busy mount to be detached lazily on SIGTERM")
            time.sleep(0.3)
            assert m.proc.poll() is None, "the daemon must serve the open file until it closes"
            # the open file still works
            os.pwrite(fd, b" and after", 6)
            assert os.pread(fd, 100, 0) == b"before and after"
            assert os.fstat(fd).st_size == 16
            os.fsync(fd)
            os.close(fd)
            closed = True
            assert m.proc.wait(15) == 0, m.read_log()[-3000:]
        finally:
            if not closed:
                os.close(fd)
        assert (m.brick / "busy").read_bytes() == b"before and after"
        assert "Traceback" not in m.read_log()


# -- refusing to mount ------------------------------------------------------------------
def _guard_of(pid: int, mountpoint: Path) -> Optional[int]:
    for child, argv in children(pid):
        if "-c" in argv and str(mountpoint) in argv:
            return child
    return None


def test_stale_mount_is_refused_with_the_fix(tmp_path: Path) -> None:
    m = Mounted(LOCAL, tmp_path)
    with m:
        root = Path(m.mountpoint)
        with suppress(AssertionError):          # no guard process: handled below
            wait_until(lambda: _guard_of(m.proc.pid, root) is not None, 2.0, "the guard")
        guard = _guard_of(m.proc.pid, root)
        if guard is not None:
            os.kill(guard, signal.SIGKILL)       # no one will clean up after the daemon
            m.proc.kill()
            m.proc.wait(10)
        else:
            # no guard process to find: freeze the daemon and abort its connection
            m.proc.send_signal(signal.SIGSTOP)
            mnt.abort_connection(m.conn)
        try:
            wait_until(lambda: mnt.is_stale(str(root)), 5.0, "a dead mount to be made")
            time.sleep(0.2)
            assert mnt.is_stale(str(root)), "something removed the dead mount"
            proc = run_xlfs("-N", "-f", str(LOCAL),
                            f"--xlator-option=posix.directory={m.brick}", str(root))
            assert proc.returncode != 0
            line = one_line(proc)
            assert f"fusermount3 -u -z {root}" in line, line
            assert mnt.is_stale(str(root)), "the refused start must leave the mount alone"
        finally:
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait(10)
            if mnt.find_mount(str(root)) is not None:
                subprocess.run(["umount", "-l", str(root)], capture_output=True, timeout=30)
        assert not mounted(root)


def test_mount_over_live_xlfs_mount_is_refused(tmp_path: Path) -> None:
    with Mounted(LOCAL, tmp_path) as m:
        root = Path(m.mountpoint)
        (root / "keep").write_bytes(b"k")
        proc = run_xlfs("-N", "-f", str(VOLFILES / "memory.vol"), str(root))
        assert proc.returncode != 0
        line = one_line(proc)
        assert "already mounted" in line and str(root) in line, line
        # the first mount is untouched
        assert (root / "keep").read_bytes() == b"k"
        assert m.proc.poll() is None


def test_missing_mountpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    proc = run_xlfs("-N", "-f", str(VOLFILES / "memory.vol"), str(missing))
    assert proc.returncode == 1
    line = one_line(proc)
    assert str(missing) in line and "does not exist" in line, line
    assert not missing.exists()


def test_mountpoint_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"")
    proc = run_xlfs("-N", "-f", str(VOLFILES / "memory.vol"), str(f))
    assert proc.returncode == 1
    assert "not a directory" in one_line(proc)


# -- daemon mode ------------------------------------------------------------------------
def test_daemon_mode_returns_once_mounted(tmp_path: Path) -> None:
    root = tmp_path / "mnt"
    brick = tmp_path / "brick"
    root.mkdir()
    brick.mkdir()
    (brick / "hello").write_bytes(b"world")
    pidfile = tmp_path / "xlfs.pid"
    log = tmp_path / "xlfs.log"
    pid = None
    try:
        proc = run_xlfs("-f", str(LOCAL), f"--xlator-option=posix.directory={brick}",
                        "-l", str(log), "--pid-file", str(pidfile), str(root), timeout=60)
        assert proc.returncode == 0, proc.stderr
        # right away, with no waiting: the mount answers
        st = os.stat(root)
        assert st.st_ino == os.stat(brick).st_ino
        assert mounted(root)
        assert os.listdir(root) == ["hello"]
        assert (root / "hello").read_bytes() == b"world"
        pid = int(pidfile.read_text().strip())
        assert alive(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"fuse_bridge" in f.read()
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 15.0, "the daemon to exit on SIGTERM")
        assert not mounted(root)
        assert "Traceback" not in log.read_text()
    finally:
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)
        conn = mnt.connection_id(str(root))
        if conn is not None:
            mnt.abort_connection(conn)
        if mnt.find_mount(str(root)) is not None:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, timeout=30)


def test_daemon_mode_reports_failure(tmp_path: Path) -> None:
    """A daemon that cannot mount says why, in the foreground process, in one line."""
    proc = run_xlfs("-f", str(VOLFILES / "memory.vol"), str(tmp_path / "missing"))
    assert proc.returncode == 1
    assert "does not exist" in one_line(proc)
