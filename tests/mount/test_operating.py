"""Operating a live mount: the defects a new user found (issue 11) on real mounts."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
import pytest

from fuse_bridge import mount as mnt
from tests.mountlib import ROOT, VOLFILES, Mounted, needs_mount, wait_until, xlfs_command

pytestmark = [pytest.mark.mount, needs_mount]
LOCAL = VOLFILES / "local.vol"
MEMORY = VOLFILES / "memory.vol"


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
        wait_until(lambda: "SIGHUP: " + str(vol) in m.read_log(), 10.0,
                   "the SIGHUP outcome line", detail=m.read_log)
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
        try:
            wait_until(lambda: self.proc.poll() is not None
                       or mnt.answers_within(str(self.mountpoint), 5.0)
                       and mnt.find_mount(str(self.mountpoint)) is not None, 20,
                       "the mount to come up")
        except AssertionError:
            self.__exit__()
            raise
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
        wait_until(lambda: f"SIGHUP: {work / 'stack.vol'}" in log.read_text(), 10.0,
                   "the SIGHUP outcome line", detail=log.read_text)
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


# -- logs, pid file, statedumps, --dump-fuse --------------------------------------------
def test_start_up_lines_name_version_argv_and_final_graph(tmp_path: Path):
    with Mounted(MEMORY, tmp_path, "--read-only", overrides=["memory.size=64MB"]) as m:
        log = m.read_log()
    from fuse_bridge.cli import VERSION
    assert f"xlfs {VERSION} (pid {m.proc.pid}) started: " in log, log
    assert "--read-only" in log and "--xlator-option=memory.size=64MB" in log, log
    graph = log.split("final graph of ", 1)[1]
    assert f"{MEMORY} on {m.mountpoint}:" in graph
    for line in ("1: volume memory", "type storage/memory", "option size 64MB",
                 "volume xlfs-read-only", "subvolumes locks"):
        assert line in graph, graph


def test_pid_file_is_removed_at_exit(tmp_path: Path):
    pidfile = tmp_path / "xlfs.pid"
    with Mounted(MEMORY, tmp_path, "-p", str(pidfile)) as m:
        assert pidfile.read_text().strip() == str(m.proc.pid)
    assert m.proc.returncode == 0
    assert not pidfile.exists()


def test_sighup_reopens_the_log_file(tmp_path: Path):
    with Mounted(MEMORY, tmp_path) as m:
        rotated = tmp_path / "xlfs.log.1"
        m.log.rename(rotated)                       # what logrotate does
        m.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: m.log.exists() and "SIGHUP" in m.read_log(), 10.0,
                   "SIGHUP in the reopened log", detail=rotated.read_text)
        os.listdir(m.mountpoint)
        assert "log file" in m.read_log() and "reopened" in m.read_log()
        assert "reopened" not in rotated.read_text()


def _dumps(directory: Path) -> list[Path]:
    return sorted(directory.glob("xlfsdump.*"))


def test_statedumps_never_overwrite_each_other_and_show_text_values(tmp_path: Path):
    dumps = tmp_path / "dumps"
    with Mounted(MEMORY, tmp_path, env={"XLFS_DUMP_DIR": str(dumps)}) as m:
        for _ in range(3):                          # within one second, as a rule
            m.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.05)
        wait_until(lambda: m.read_log().count("statedump written to") == 3, 10.0,
                   "three statedumps written", detail=m.read_log)
        files = _dumps(dumps)
        assert len(files) == 3, (files, m.read_log())
        assert not list(dumps.glob(".*")), "a temporary file was left"
        text = files[0].read_text()
    assert "[xlator.storage.memory.memory]" in text
    assert "option.size=1GB" in text, text
    for raw in ("=True", "=False", "=None", "frozenset(", "=('", "=[", "={"):
        assert raw not in text, (raw, text)


def test_dump_fuse_file_is_private(tmp_path: Path):
    record = tmp_path / "fuse.dump"
    old = os.umask(0o022)
    try:
        with Mounted(MEMORY, tmp_path, f"--dump-fuse={record}") as m:
            (Path(m.mountpoint) / "secret").write_bytes(b"file data")
    finally:
        os.umask(old)
    assert record.stat().st_size > 0
    assert record.stat().st_mode & 0o777 == 0o600


# -- bricks and the mountpoint; validation at mount -------------------------------------
@pytest.mark.parametrize("layout", ["mountpoint-in-brick", "brick-in-mountpoint", "same"])
def test_a_mountpoint_and_a_brick_that_overlap_are_refused(tmp_path: Path, layout: str):
    if layout == "mountpoint-in-brick":
        brick, mp = tmp_path / "brick", tmp_path / "brick" / "mnt"
    elif layout == "brick-in-mountpoint":
        mp, brick = tmp_path / "mnt", tmp_path / "mnt" / "brick"
    else:
        mp = brick = tmp_path / "both"
    mp.mkdir(parents=True, exist_ok=True)
    brick.mkdir(parents=True, exist_ok=True)
    try:
        # daemon mode: the start returns (instead of serving) whatever happens
        proc = run_xlfs("-f", str(LOCAL), f"--xlator-option=posix.directory={brick}",
                        "-l", str(tmp_path / "log"), str(mp), timeout=30)
        assert proc.returncode == 1, proc.stderr
        line = one_line(proc)
        assert line.startswith(f"xlfs: {mp}: ") and str(brick) in line, line
        assert "option 'directory' of volume 'posix'" in line, line
        assert mnt.find_mount(str(mp)) is None
    finally:
        conn = mnt.connection_id(str(mp))
        if conn is not None:
            mnt.abort_connection(conn)
        mnt.force_unmount(str(mp), conn)


def test_unknown_option_keys_are_warned_at_mount(tmp_path: Path):
    vol = tmp_path / "stack.vol"
    vol.write_text(MEMORY.read_text().replace("option size 1GB",
                                              "option size 1GB\n    option sise 2GB"))
    with Mounted(vol, tmp_path, overrides=["locks.mandatory-lockin=on"]) as m:
        log = m.read_log()
    warnings = [line for line in log.splitlines() if "warning:" in line]
    assert len(warnings) == 2, log
    assert f"{vol}:5: warning: volume 'memory' (storage/memory): option 'sise' is not " \
           "known (did you mean 'size'?)" in warnings[0], warnings
    assert "--xlator-option: warning: volume 'locks' (features/locks): option " \
           "'mandatory-lockin' is not known (did you mean 'mandatory-locking'?)" \
           in warnings[1], warnings
    assert all(" W [" in w for w in warnings), warnings


def test_volfile_check_refuses_what_cannot_mount(tmp_path: Path):
    vol = tmp_path / "nodir.vol"
    vol.write_text("volume posix\n    type storage/posix\n    option o-direct off\n"
                   "end-volume\n")
    proc = run_xlfs("--volfile-check", "-f", str(vol))
    assert proc.returncode == 1
    assert one_line(proc) == (f"xlfs: {vol}:1: volume 'posix' (storage/posix): option "
                              "'directory' is required")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ctl = subprocess.run([os.sys.executable, "-m", "xlators.ctl", "check", str(vol)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert ctl.returncode == 1 and ctl.stdout == ""
    assert ctl.stderr.strip() == (f"{vol}:1: volume 'posix' (storage/posix): option "
                                  "'directory' is required")


# -- -L TRACE ---------------------------------------------------------------------------
def test_log_level_trace_logs_each_request_and_reply(tmp_path: Path):
    with Mounted(MEMORY, tmp_path, "-L", "TRACE") as m:
        (Path(m.mountpoint) / "hello").write_bytes(b"secret data")
        assert (Path(m.mountpoint) / "hello").read_bytes() == b"secret data"
        log = m.read_log()
    trace = [line.split("] ", 2)[-1] for line in log.splitlines()
             if " T [xlfs.fuse.trace] " in line]
    text = "\n".join(trace)
    create = re.search(r"^R CREATE unique=(\d+) nodeid=1 .* name='hello'$", text, re.M)
    assert create, text[-3000:]
    assert re.search(rf"^W CREATE unique={create.group(1)} ok len=160 nodeid=\d+ ", text, re.M)
    assert re.search(r"^R WRITE unique=\d+ .* size=11 .* data=11 bytes$", text, re.M)
    assert re.search(r"^W WRITE unique=\d+ ok len=24 size=11$", text, re.M)
    assert "secret" not in log
    with Mounted(MEMORY, tmp_path / "debug", "-L", "DEBUG") as m:
        os.listdir(m.mountpoint)
        assert "[xlfs.fuse.trace]" not in m.read_log()


@pytest.mark.parametrize("flag, expect", [((), "on"), (("--fuse-idle-poll=0",), "off"),
                                          (("--reader-thread-count=2",), "off")])
def test_the_idle_reader_waits_in_poll_unless_told_not_to(tmp_path: Path, flag, expect):
    """fuse_bridge.idle_poll on a real mount: one request at a time (fstat with the
    attribute timeout 0) is served from the reader's poll(), and the statedump says so;
    off when asked, and with more than one channel."""
    dumps = tmp_path / "dumps"
    with Mounted(MEMORY, tmp_path, "--attribute-timeout=0", *flag,
                 env={"XLFS_DUMP_DIR": str(dumps)}) as m:
        fd = os.open(m.path(), os.O_RDONLY)
        try:
            for _ in range(300):
                os.fstat(fd)
        finally:
            os.close(fd)
        m.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: "statedump written to" in m.read_log(), 10.0,
                   "a statedump written", detail=m.read_log)
        text = _dumps(dumps)[0].read_text()
    assert f"channel0.idle-poll={expect}" in text, text
    if expect == "on":
        served = int(re.search(r"channel0\.idle-poll\.served=(\d+)", text).group(1))
        assert served > 0, text
