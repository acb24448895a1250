"""The .meta directory and the xlfsctl commands on a mountpoint, on real mounts (issue 11)."""
from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fuse_bridge.cli import VERSION
from tests.mountlib import ROOT, VOLFILES, Mounted, needs_mount, wait_until

pytestmark = [pytest.mark.mount, needs_mount]
LOCAL = VOLFILES / "local.vol"
# io-stats counts READ/WRITE only when they reach the daemon: FUSE passthrough off
COUNTED = "--fuse-passthrough=no"

SLOW_FSYNC = """\
volume posix
    type storage/posix
    option directory /var/lib/xlfs/brick
end-volume

volume slow
    type debug/delay-gen
    option delay-percentage 100%
    option delay-duration 60000000
    option enable fsync
    subvolumes posix
end-volume
"""

# Files whose text does not change between a stat and a read.
STABLE = {"type", "name", "version", "cmdline", "loglevel", "measure_latency", "volfile",
          "state"}


def xlfsctl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xlators.ctl", *args], cwd="/",
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=60)


def cat(path: str) -> bytes:
    return subprocess.run(["cat", path], capture_output=True, check=True,
                          timeout=30).stdout


def errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno
    return 0


def meta_files(meta: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(meta):      # links are not followed
        for name in filenames:
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                out.append(path)
    return out


def test_meta_is_there_hidden_and_in_glusterfs_shape(tmp_path: Path) -> None:
    with Mounted(LOCAL, tmp_path, COUNTED) as m:
        Path(m.path("f")).write_text("hello")
        os.mkdir(m.path("d"))
        assert sorted(os.listdir(m.mountpoint)) == ["d", "f"]
        ls = subprocess.run(["ls", "-a", m.path()], capture_output=True, text=True).stdout
        assert ".meta" not in ls.split()
        meta = m.path(".meta")
        assert stat.S_ISDIR(os.stat(meta).st_mode)
        assert errno_of(os.stat, m.path("d", ".meta")) == errno.ENOENT
        assert cat(f"{meta}/version").decode() == f"{VERSION}\n"
        assert str(LOCAL) in cat(f"{meta}/cmdline").decode()
        active = f"{meta}/graphs/active"
        (graph_id,) = [n for n in os.listdir(f"{meta}/graphs") if n != "active"]
        assert graph_id.startswith("graph-") and os.readlink(f"{meta}/graphs/{graph_id}") \
            == "active" and os.path.samefile(f"{meta}/graphs/{graph_id}", active)
        assert os.readlink(f"{active}/top") == "meta-autoload"
        assert cat(f"{active}/stats/type") == b"debug/io-stats\n"
        assert cat(f"{active}/stats/options/latency-measurement") == b"on\n"
        assert os.readlink(f"{active}/stats/subvolumes/0") == "../../locks"
        assert os.path.realpath(f"{active}/stats/subvolumes/0") == \
            os.path.realpath(f"{active}/locks")
        assert cat(f"{active}/posix/state") == b"up\n"
        assert b"writev.count=1" in cat(f"{active}/stats/private")
        with open(m.path("f")) as held:
            bridge = dict(line.split("=", 1) for line in
                          cat(f"{meta}/root/private").decode().splitlines())
            assert int(bridge["open-fds"]) >= 1 and int(bridge["inodes"]) >= 3
            assert held.read() == "hello"
        assert os.readlink(f"{meta}/logging/logfile") == str(m.log)
        frames = json.loads(cat(f"{meta}/frames"))
        assert frames["count"] == len(frames["requests"]) >= 1     # cat's own READ


def test_every_meta_file_reads_whole_and_stable_ones_report_their_size(tmp_path: Path):
    for flags in ((), ("--direct-io-mode=no",)):
        work = tmp_path / ("dio" if not flags else "cached")
        work.mkdir()
        with Mounted(LOCAL, work, *flags) as m:
            Path(m.path("f")).write_text("x" * 100)
            files = meta_files(m.path(".meta"))
            assert len(files) > 25
            for path in files:
                data = cat(path)
                if os.path.basename(path) in STABLE or "/options/" in path:
                    assert os.stat(path).st_size == len(data), path
                    assert data.endswith(b"\n"), path
            frames = json.loads(cat(m.path(".meta", "frames")))       # whole JSON
            assert frames["count"] >= 1


def test_meta_is_read_only_but_the_log_level(tmp_path: Path) -> None:
    with Mounted(LOCAL, tmp_path) as m:
        meta = m.path(".meta")
        assert errno_of(lambda: open(f"{meta}/version", "w")) == errno.EPERM
        assert errno_of(os.mkdir, f"{meta}/x") == errno.EPERM
        assert errno_of(lambda: open(f"{meta}/new", "w")) == errno.EPERM
        assert errno_of(os.unlink, f"{meta}/version") == errno.EPERM
        assert errno_of(os.chmod, f"{meta}/version", 0o777) == errno.EPERM
        assert errno_of(os.mkdir, meta) == errno.EEXIST
        assert errno_of(os.rename, meta, m.path("x")) == errno.EPERM
        assert "Permission denied" not in cat(f"{meta}/version").decode()


@pytest.mark.parametrize("flags", [(), ("--direct-io-mode=no",)], ids=["dio", "cached"])
def test_echo_to_loglevel_changes_the_daemon_log_level(tmp_path: Path, flags) -> None:
    with Mounted(LOCAL, tmp_path, *flags, env={"XLFS_DUMP_DIR": str(tmp_path)}) as m:
        level = m.path(".meta", "logging", "loglevel")
        assert cat(level) == b"DEBUG\n"                   # Mounted runs with -L DEBUG
        subprocess.run(f"echo INFO > {level}", shell=True, check=True)
        assert os.stat(level).st_size == 5
        subprocess.run(f"echo WARNING > {level}", shell=True, check=True)
        assert cat(level) == b"WARNING\n"                  # longer than the size seen
        assert "log level set to INFO" in m.read_log()
        before = len(m.read_log())
        os.listdir(m.mountpoint)
        assert xlfsctl("statedump", m.path()).returncode == 0
        assert m.read_log()[before:] == "", "INFO/DEBUG lines logged at WARNING"
        r = subprocess.run(["bash", "-c", f"echo LOUD > {level}"], capture_output=True,
                           text=True)          # (dash's echo says "I/O error" for any)
        assert r.returncode != 0 and "Invalid argument" in r.stderr
        subprocess.run(f"echo DEBUG > {level}", shell=True, check=True)
        os.listdir(m.mountpoint)
        assert xlfsctl("statedump", m.path()).returncode == 0
        assert "statedump written to" in m.read_log()[before:]


def test_frames_show_a_waiting_request_and_where_it_waits(tmp_path: Path) -> None:
    vol = tmp_path / "slow.vol"
    vol.write_text(SLOW_FSYNC)
    with Mounted(vol, tmp_path) as m:
        code = (f"import os; fd = os.open({m.path('f')!r}, os.O_CREAT | os.O_WRONLY); "
                "os.write(fd, b'x'); os.fsync(fd)")
        proc = subprocess.Popen([sys.executable, "-c", code])

        def waiting_fsync():
            requests = json.loads(cat(m.path(".meta", "frames")))["requests"]
            return next((r for r in requests if r["opcode"] == "FSYNC"), None)
        fsync = wait_until(waiting_fsync, 20, "the FSYNC in .meta/frames",
                           detail=lambda: cat(m.path(".meta", "frames")), interval=0)
        assert fsync["where"] == ["meta-autoload", "slow"]
        assert "sleep" in fsync["waiting_on"] and fsync["pid"] == proc.pid
        assert fsync["age_s"] > 0 and not fsync["interrupted"]
        status = xlfsctl("status", m.path())
        assert status.returncode == 0, status.stderr
        assert "FSYNC" in status.stdout and "meta-autoload > slow" in status.stdout
        proc.kill()                    # the kernel interrupts the FSYNC: delay-gen cancels
        proc.wait(30)
        assert json.loads(cat(m.path(".meta", "frames")))["count"] == 1     # cat's own


def test_xlfsctl_status_statedump_profile_top(tmp_path: Path) -> None:
    env = {"XLFS_DUMP_DIR": str(tmp_path / "dumps")}
    with Mounted(LOCAL, tmp_path, COUNTED, env=env) as m:
        mnt = m.path()
        r = xlfsctl("status", mnt)
        assert r.returncode == 0, r.stderr
        for line in ("meta-autoload (meta/meta): up", "  stats (debug/io-stats): up",
                     "posix (storage/posix): up", "requests: ", "tables: "):
            assert line in r.stdout, r.stdout

        r = xlfsctl("statedump", mnt)
        assert r.returncode == 0, r.stderr
        path = r.stdout.strip()
        assert path.startswith(str(tmp_path / "dumps") + "/xlfsdump.")
        dump = Path(path).read_text()
        assert "[fuse]" in dump and "[xlator.meta.meta.meta-autoload]" in dump
        second = xlfsctl("statedump", mnt).stdout.strip()
        assert second != path and os.path.exists(second)

        assert xlfsctl("profile", mnt, "start").returncode == 0
        assert cat(m.path(".meta", "measure_latency")) == b"1\n"
        Path(m.path("p")).write_bytes(b"z" * 3000)
        assert Path(m.path("p")).read_bytes() == b"z" * 3000
        r = xlfsctl("profile", mnt, "info", "-x", "posix")
        assert r.returncode == 0, r.stderr
        writev = next(line.split() for line in r.stdout.splitlines()
                      if line.strip().startswith("writev"))
        assert writev[1] == "1" and writev[3] == "3000"
        assert "meta-autoload" not in r.stdout
        r = xlfsctl("profile", mnt, "info")
        assert all(f"{n} (" in r.stdout for n in ("meta-autoload", "stats", "locks", "posix"))
        assert xlfsctl("profile", mnt, "stop").returncode == 0
        assert cat(m.path(".meta", "measure_latency")) == b"0\n"
        assert "profiling is off" in xlfsctl("profile", mnt, "info").stdout

        stop = threading.Event()
        Path(m.path("busy")).write_bytes(b"")      # looked up before top starts profiling

        def busy() -> None:
            while not stop.is_set():
                with open(m.path("busy"), "ab") as f:
                    f.write(b"b" * 100)
                time.sleep(0.005)
        worker = threading.Thread(target=busy)
        worker.start()
        try:
            r = xlfsctl("top", mnt, "--once", "-d", "1")
        finally:
            stop.set()
            worker.join()
        assert r.returncode == 0, r.stderr
        assert "writev" in r.stdout and "/busy" in r.stdout, r.stdout
        assert cat(m.path(".meta", "measure_latency")) == b"0\n"   # top stopped it again
        r = xlfsctl("top", mnt, "-n", "2", "-d", "0.2")
        assert r.returncode == 0 and r.stdout.count("xlfs top") == 2

        r = xlfsctl("status", str(tmp_path))
        assert r.returncode == 1 and "not an xlfs mount" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_setfattr_io_stats_dump_on_the_mount_root(tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    with Mounted(LOCAL, tmp_path, COUNTED, env={"XLFS_DUMP_DIR": str(dumps)}) as m:
        Path(m.path("f")).write_bytes(b"abc")
        os.mkdir(m.path("d"))
        r = subprocess.run(["setfattr", "-n", "trusted.io-stats-dump", "-v", "/tmp/run1",
                            m.path()], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        text = (dumps / "tmp-run1.stats").read_text()
        assert "Cumulative Stats of stats" in text and "Data Written: 3 bytes" in text
        os.setxattr(m.path("d"), "trusted.io-stats-dump", b"run2")       # any path
        assert (dumps / "run2.stats").exists()
        assert errno_of(os.setxattr, m.path(), "trusted.io-stats-dump", b"../x") == \
            errno.EINVAL
        for brick_path in (m.brick, m.brick / "d"):
            assert errno_of(os.getxattr, brick_path, "trusted.io-stats-dump") == \
                errno.ENODATA


MIRROR_B_FAILING = """\
volume brick-a
    type storage/posix
    option directory /var/lib/xlfs/mirror-a
end-volume

volume brick-b
    type storage/posix
    option directory /var/lib/xlfs/mirror-b
end-volume

volume faults-b
    type debug/error-gen
    option failure 100
    option error-no ENOTCONN
    subvolumes brick-b
end-volume

volume mirror
    type cluster/replicate
    subvolumes brick-a faults-b
end-volume
"""


def test_status_shows_a_child_its_mirror_took_out(tmp_path: Path) -> None:
    vol = tmp_path / "mirror.vol"
    vol.write_text(MIRROR_B_FAILING)
    with Mounted(vol, tmp_path) as m:
        Path(m.path("f")).write_bytes(b"on a only")

        def b_down():
            os.listdir(m.mountpoint)            # a request, so the failing child is seen
            return "child faults-b is down" in m.read_log()
        wait_until(b_down, 20, "faults-b to go down", detail=m.read_log, interval=0.1)
        r = xlfsctl("status", m.path())
        assert r.returncode == 0, r.stderr
        line = next(l for l in r.stdout.splitlines() if "faults-b (debug/error-gen)" in l)
        assert line.endswith("(down for mirror)"), r.stdout
        assert "brick-a (storage/posix): up" in r.stdout and "(down for" not in \
            next(l for l in r.stdout.splitlines() if "brick-a" in l)


def test_read_only_mount_shows_meta_and_refuses_its_writes(tmp_path: Path) -> None:
    with Mounted(LOCAL, tmp_path, "--read-only") as m:
        assert errno_of(lambda: open(m.path("new"), "w")) == errno.EROFS
        assert "xlfs-read-only" in os.listdir(m.path(".meta/graphs/active"))
        assert cat(m.path(".meta/logging/loglevel")) == b"DEBUG\n"
        assert errno_of(lambda: open(m.path(".meta/logging/loglevel"), "w")) == errno.EROFS
        r = xlfsctl("status", m.path())
        assert r.returncode == 0 and "xlfs-read-only (features/read-only): up" in r.stdout
