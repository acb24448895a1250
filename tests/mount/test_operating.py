"""Operating a live mount: the defects a new user found (issue 11) on real mounts."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from fuse_bridge import mount as mnt
from tests.mountlib import ROOT, VOLFILES, Mounted, can_mount, xlfs_command

pytestmark = pytest.mark.mount
LOCAL = VOLFILES / "local.vol"
MEMORY = VOLFILES / "memory.vol"


@pytest.fixture(autouse=True)
def _need_mount():
    why = can_mount()
    if why:
        pytest.skip(why)


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def run_xlfs(*args: str, cwd: str = str(ROOT), timeout: float = 60,
             env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(xlfs_command() + list(args), cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def one_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{err}"
    return err


# -- SIGHUP -----------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--read-only", "-oro"])
def test_sighup_reconfigures_a_read_only_mount(tmp_path: Path, flag: str) -> None:
    vol = tmp_path / "stack.vol"
    vol.write_text(MEMORY.read_text())
    with Mounted(vol, tmp_path, flag) as m:
        vol.write_text(MEMORY.read_text().replace("option size 1GB", "option size 2GB"))
        m.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "SIGHUP" in m.read_log()), m.read_log()
        log = m.read_log()
        assert "reconfigured in place" in log and "different graph" not in log, log
        assert os.statvfs(m.mountpoint).f_blocks * os.statvfs(m.mountpoint).f_frsize \
            == 2 << 30


# -- fstab ------------------------------------------------------------------------------
from tests.mount.test_cli import mount_helper_installed  # noqa: E402,F401  (a fixture)


def test_second_mount_a_of_an_fstab_line_is_a_no_op(tmp_path: Path, mount_helper_installed):
    """mount(8) decides "already mounted" by comparing fstab's first field with the source
    in /proc/self/mountinfo: the source must be the volfile as fstab names it."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{MEMORY} {mp} xlfs defaults,log-file={tmp_path / 'log'} 0 0\n")
    try:
        for attempt in (1, 2):
            proc = subprocess.run(["mount", "-a", "-T", str(fstab)], capture_output=True,
                                  text=True, timeout=60)
            assert proc.returncode == 0, (attempt, proc.stderr)
            assert proc.stderr == "", (attempt, proc.stderr)
        assert mnt.find_mount(str(mp))["source"] == str(MEMORY)
        assert [m for m in open("/proc/self/mounts") if f" {mp} " in m].__len__() == 1
    finally:
        if mnt.find_mount(str(mp)) is not None:
            subprocess.run(["umount", str(mp)], capture_output=True, timeout=30)
        if mnt.find_mount(str(mp)) is not None:
            mnt.force_unmount(str(mp), mnt.connection_id(str(mp)))


# -- working directory and absolute paths -----------------------------------------------
class Daemon:
    """``xlfs -N`` started with relative paths from ``cwd``; stopped and unmounted on exit."""

    def __init__(self, cwd: Path, mountpoint: Path, *args: str) -> None:
        self.cwd, self.mountpoint, self.args = cwd, mountpoint, args

    def __enter__(self) -> "Daemon":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(xlfs_command() + ["-N", *self.args], cwd=str(self.cwd),
                                     env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not wait_for(lambda: self.proc.poll() is not None
                        or mnt.answers_within(str(self.mountpoint), 5.0)
                        and mnt.find_mount(str(self.mountpoint)) is not None, 20):
            self.__exit__()
            raise TimeoutError("the mount did not come up")
        if self.proc.poll() is not None:
            raise RuntimeError(self.proc.stdout.read().decode(errors="replace"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        mnt.force_unmount(str(self.mountpoint), mnt.connection_id(str(self.mountpoint)))


def test_daemon_leaves_its_starting_directory_and_logs_absolute_paths(tmp_path: Path):
    work = tmp_path / "work"
    (work / "mnt").mkdir(parents=True)
    (work / "stack.vol").write_text(MEMORY.read_text())
    with Daemon(work, work / "mnt", "-l", "xlfs.log", "-f", "stack.vol", "mnt") as d:
        assert os.readlink(f"/proc/{d.proc.pid}/cwd") == "/"
        log = work / "xlfs.log"
        (work / "stack.vol").write_text(MEMORY.read_text().replace("1GB", "2GB"))
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "SIGHUP" in log.read_text()), log.read_text()
        assert f"SIGHUP: {work / 'stack.vol'} reconfigured in place" in log.read_text()


# -- one-line errors --------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["-N", "daemon"])
def test_unopenable_log_file_is_one_line(tmp_path: Path, mode: str):
    (tmp_path / "mnt").mkdir()
    bad = tmp_path / "no-such-dir" / "xlfs.log"
    flags = ["-N"] if mode == "-N" else []
    proc = run_xlfs(*flags, "-l", str(bad), "-f", str(MEMORY), str(tmp_path / "mnt"))
    assert proc.returncode == 1
    assert one_line(proc) == f"xlfs: {bad}: cannot open the log file: No such file or directory"
    assert mnt.find_mount(str(tmp_path / "mnt")) is None


@pytest.mark.parametrize("source,reason", [
    ("import no_such_module_xyz\n", "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    ("def broken(:\n", "SyntaxError:"),
    ("from xlators import hookimpl\n@hookimpl\ndef xlfs_register_xlators(register):\n"
     "    register(object)\n", "is not a Translator subclass"),
])
def test_broken_plugin_is_one_line(tmp_path: Path, source: str, reason: str):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "broken_plugin.py").write_text(source)
    env = {"XLFS_PLUGINS": "broken_plugin", "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    for args in (["-N", "-f", str(MEMORY), str(tmp_path / "mnt")],
                 ["--volfile-check", "-f", str(MEMORY)]):
        proc = run_xlfs(*args, env=env)
        assert proc.returncode == 1, proc.stderr
        line = one_line(proc)
        assert line.startswith("xlfs: loading the translator plugins failed: plugin "
                               "'broken_plugin'"), line
        assert reason in line, line
