"""Nothing on the daemon's event loop may block on the mount itself (issue 11).

A file the daemon uses (its log, pid file, --dump-fuse recording, statedump directory,
volfile) that lies inside the mountpoint is refused at start with one line; a path that
comes to point into the mount only later (a symlink made after mounting) is opened from
a worker thread, so the loop stays free to serve the requests that opening makes.
Every start and every wait has a hard timeout: a regression fails, it never hangs.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from fuse_bridge import mount as mnt
from tests.mount.test_operating import MEMORY, one_line, run_xlfs
from tests.mountlib import Mounted, needs_mount, wait_until

pytestmark = [pytest.mark.mount, needs_mount]


def _abort_mount_at(mp: Path) -> None:
    """Abort the FUSE connection mounted on ``mp``, found in /proc/self/mountinfo alone:
    a hung mount must not be stat-ed."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(mp):
                minor = fields[2].split(":")[1]
                try:
                    with open(f"/sys/fs/fuse/connections/{minor}/abort", "w") as a:
                        a.write("1")
                except OSError:
                    pass


def _start_refused(mp: Path, *args: str, env: dict | None = None) -> str:
    """Start a daemon that must be refused; its one stderr line.  A regression that
    mounts (and perhaps hangs the daemon on its own mount) is aborted after 30 s, so the
    test fails instead of hanging, and leaves no mount."""
    watchdog = threading.Timer(30, _abort_mount_at, (mp,))
    watchdog.daemon = True
    watchdog.start()
    try:
        proc = run_xlfs(*args, str(mp), timeout=60, env=env)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        line = one_line(proc)
        assert "inside the mountpoint" in line, line
        assert mnt.find_mount(str(mp)) is None
        return line
    finally:
        watchdog.cancel()
        _abort_mount_at(mp)
        conn = mnt.connection_id(str(mp))
        if conn is not None:
            mnt.abort_connection(conn)
        mnt.force_unmount(str(mp), conn)


@pytest.mark.parametrize("what", ["log", "pid", "dump-fuse", "statedump", "volfile"])
def test_a_file_of_the_daemon_inside_its_mountpoint_is_refused(tmp_path: Path, what: str):
    mp = tmp_path / "mnt"
    mp.mkdir()
    inside = mp / "sub" / "file"
    vol, log, env = MEMORY, tmp_path / "log", None
    args = []
    if what == "log":
        log = inside
    elif what == "pid":
        args += ["-p", str(inside)]
    elif what == "dump-fuse":
        args += [f"--dump-fuse={inside}"]
    elif what == "statedump":
        env = {"XLFS_DUMP_DIR": str(mp / "dumps")}
    else:
        inside.parent.mkdir()
        inside.write_text(MEMORY.read_text())
        vol = inside
    line = _start_refused(mp, "-f", str(vol), "-l", str(log), *args, env=env)
    named = str(mp / "dumps") if what == "statedump" else str(inside)
    assert line.startswith(f"xlfs: {named}: ") and str(mp) in line, line


def test_sighup_with_the_volfile_now_a_symlink_into_the_mount(tmp_path: Path):
    """SIGHUP reads the volfile from a worker thread: here the name now leads into the
    mount, whose requests the event loop must be free to serve."""
    vol = tmp_path / "stack.vol"
    vol.write_text(MEMORY.read_text())
    with Mounted(vol, tmp_path, limit=40) as m:
        Path(m.path("new.vol")).write_text(
            MEMORY.read_text().replace("option size 1GB", "option size 2GB"))
        vol.unlink()
        vol.symlink_to(m.path("new.vol"))
        m.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reconfigured in place" in m.read_log(), 20,
                   "the in-place reconfiguration", detail=m.read_log)
        assert not m.aborted
        st = os.statvfs(m.mountpoint)
        assert st.f_blocks * st.f_frsize == 2 << 30


def test_sigusr1_with_the_statedump_directory_now_a_symlink_into_the_mount(tmp_path: Path):
    """SIGUSR1 writes the statedump from a worker thread."""
    link = tmp_path / "dumps"
    with Mounted(MEMORY, tmp_path, limit=40, env={"XLFS_DUMP_DIR": str(link)}) as m:
        os.mkdir(m.path("dumps"))
        link.symlink_to(m.path("dumps"))
        m.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: "statedump written to" in m.read_log(), 20, "the statedump",
                   detail=m.read_log)
        assert not m.aborted
        assert [n for n in os.listdir(m.path("dumps")) if n.startswith("xlfsdump.")]


def test_a_translator_log_file_inside_the_mountpoint_is_refused(tmp_path: Path):
    """debug/trace's ``log-file`` (an option declared ``own_file``) inside the mountpoint:
    refused at start with one line naming the option and the volume, as a brick is (a
    graph switch to such a graph is refused by the same check)."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    vol = tmp_path / "trace.vol"
    vol.write_text(MEMORY.read_text() + f"""
volume tracer
    type debug/trace
    option log-file {mp}/trace.log
    subvolumes {_top_of(MEMORY)}
end-volume
""")
    line = _start_refused(mp, "-f", str(vol), "-l", str(tmp_path / "log"))
    assert "option 'log-file' of volume 'tracer' (debug/trace" in line, line


def _top_of(volfile: Path) -> str:
    names = [ln.split()[1] for ln in volfile.read_text().splitlines()
             if ln.strip().startswith("volume ")]
    return names[-1]
