"""The README's mount command, ``scripts/mount-local.sh``, run for real.

The script mounts volfiles/fast.vol (or the volfile of a later ``-f``) in the foreground
on ``mnt`` over the brick ``brick``; ``XLFS_LOCAL_DIR`` puts both in a temporary
directory here instead of the checkout.  Files written through the mount land in the
brick, and Ctrl-C (SIGINT to the script's process group, as a terminal sends it) unmounts
and ends the daemon with status 0.  Cleanup on every path is Mounted's (watchdog abort,
SIGTERM, SIGKILL, forced unmount).
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from fuse_bridge import mount as mnt
from tests.mountlib import ROOT, VOLFILES, Mounted, can_mount, wait_until
from tests.posix.posixlib import bridge_state

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

SCRIPT = ROOT / "scripts" / "mount-local.sh"


class MountedByScript(Mounted):
    """``scripts/mount-local.sh ARGS`` with ``XLFS_LOCAL_DIR=workdir``: the mount is
    ``workdir/mnt`` over ``workdir/brick``; the script's output (the daemon logs to
    stderr in the foreground) goes to ``workdir/xlfs.log``."""

    def __init__(self, workdir: Path, *args: str, limit: float = 100.0) -> None:
        super().__init__(VOLFILES / "fast.vol", workdir, limit=limit)
        self.args = list(args)

    def _start(self) -> None:
        # setup.sh is skipped: the test must not install anything (the test command
        # ran it before the tests; the fixture below checks .venv is there)
        env = dict(os.environ, XLFS_LOCAL_DIR=str(self.workdir), XLFS_SKIP_SETUP="1")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(SCRIPT), *self.args], cwd=str(self.workdir),
                                        env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                return True
            self.conn = mnt.connection_id(str(self.mountpoint))
            return self.conn is not None and mnt.answers_within(str(self.mountpoint), 5.0)

        wait_until(ready, 60.0, f"{SCRIPT.name} to mount", detail=self.read_log)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{SCRIPT.name} exited with {self.proc.returncode}:\n"
                               f"{self.read_log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """As Mounted.stop, but to the script's whole process group: the daemon, or
        anything else the script started if the mount never came."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.abort()
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def ctrl_c(self, timeout: float = 30.0) -> int:
        """SIGINT to the script's process group; its exit status."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)


def _checkout_state() -> tuple[bool, bool]:
    return (ROOT / "mnt").exists(), (ROOT / "brick").exists()


@pytest.fixture(autouse=True)
def _needs_the_venv():
    if not (ROOT / ".venv" / "bin" / "xlfs").exists():
        pytest.skip("no .venv in the checkout: the script would install one first "
                    "(scripts/setup.sh; scripts/test.sh and CI run it before the tests)")


@pytest.mark.parametrize("args, stack", [((), "fast"), (("-f", "volfiles/perf.vol"), "perf")],
                         ids=["fast", "perf"])
def test_script_mounts_serves_the_brick_and_ctrl_c_unmounts(tmp_path: Path, args: tuple,
                                                            stack: str) -> None:
    before = _checkout_state()
    with MountedByScript(tmp_path, *args) as m:
        root = m.mountpoint
        assert mnt.find_mount(str(root))["fstype"] == "fuse.xlfs"
        assert f"xlfs: serving {tmp_path}/brick on {tmp_path}/mnt" in m.read_log()
        volfile = (root / ".meta" / "graphs" / "active" / "volfile").read_text()
        assert ("performance/open-behind" in volfile) == (stack == "perf"), volfile
        # README: fast.vol passes data through (passthrough with auto), perf.vol does not
        state = bridge_state(m)
        assert state["passthrough.mode"] == "auto"
        assert state["passthrough.enabled"] == ("yes" if stack == "fast" else "no"), state
        data = os.urandom(300_000)
        (root / "dir").mkdir()
        with open(root / "dir" / "file", "wb") as f:
            f.write(data)
        assert (root / "dir" / "file").read_bytes() == data
        assert (m.brick / "dir" / "file").read_bytes() == data      # landed in the brick
        (m.brick / "placed").write_bytes(b"from the brick\n")
        assert wait_until(lambda: (root / "placed").exists(), 5.0, "a brick file to show")
        assert (root / "placed").read_bytes() == b"from the brick\n"
        assert m.ctrl_c() == 0, m.read_log()[-3000:]
        assert mnt.find_mount(str(root)) is None, "Ctrl-C left the mount behind"
        log = m.read_log()
        assert "Traceback" not in log, log[-5000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brick", "mnt", "xlfs.log"]
    assert (tmp_path / "brick" / "dir" / "file").read_bytes() == data
    assert _checkout_state() == before, "the script touched the checkout's mnt or brick"
