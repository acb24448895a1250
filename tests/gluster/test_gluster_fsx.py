"""fsx (tests/posix/test_fsx.py's checker, reused) on xlfs over storage/gfapi, and
failover: a brick killed in the middle of an fsx run, restarted, and healed."""
from __future__ import annotations

import os
import time

import pytest

from tests.gluster.bricks import Bricks
from tests.gluster.conftest import mount_gfapi
from tests.mountlib import can_mount
from tests.posix.posixlib import rmtree
from tests.posix.test_fsx import OPS, TIME_LIMIT, Fsx, FsxThread, _supported, seed_for

pytestmark = pytest.mark.mount


def ran_enough(fsx: Fsx, name: str, done: int) -> None:
    print(f"fsx {name}: seed {fsx.seed}, {done} operations {fsx.counts}")
    assert done >= min(OPS, 300), f"only {done} operations in {TIME_LIMIT}s"


def run_fsx(path: str, name: str) -> Fsx:
    fsx = Fsx(path, seed_for(name), _supported(path))
    ran_enough(fsx, name, fsx.run(OPS, TIME_LIMIT))
    return fsx


def test_fsx_on_gfapi(gfapi_mount):
    d = gfapi_mount.mountpoint / "fsx"
    rmtree(d)
    d.mkdir()
    try:
        run_fsx(str(d / "file"), "gfapi")
    finally:
        rmtree(d)
        assert gfapi_mount.proc.poll() is None, gfapi_mount.read_log()[-3000:]


@pytest.mark.parametrize("flags", [(), ("--kernel-writeback-cache",)],
                         ids=["plain", "writeback"])
def test_fsx_brick_killed_and_healed(tmp_path, flags):
    """One brick of the replica dies during fsx: the application sees no error and no
    wrong byte; once the brick is back, client-side self-heal gives it the data."""
    why = can_mount()
    if why:
        pytest.skip(why)
    with Bricks(tmp_path / "bricks", 2, "fo") as bricks:
        with mount_gfapi(tmp_path / "xlfs", bricks.client_volfile, *flags) as m:
            path = m.path("file")
            victim = bricks.bricks[1]
            fsx = Fsx(path, seed_for("gfapi-failover"), _supported(path))
            with FsxThread(fsx, OPS, TIME_LIMIT, detail=m.read_log) as run:
                # the brick dies in the middle of the run, whatever the machine's speed
                assert run.wait_ops(OPS // 3, TIME_LIMIT + 30), \
                    "fsx ended before the brick was killed"
                victim.kill()
                at = fsx.n
            ran_enough(fsx, "gfapi-failover", run.done)
            assert not victim.running
            assert run.done - at >= OPS // 3, \
                f"only {run.done - at} operations ran after the brick died"
            fsx.open()
            try:
                want = os.pread(fsx.fd, len(fsx.shadow) + 1, 0)
            finally:
                fsx.close()
            assert want == bytes(fsx.shadow)
            victim.start()
            healed = victim.directory / "file"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # a read that reaches the client graph triggers the heal of the file:
                # drop the kernel's pages first (storage/gfapi keeps them across opens
                # of an unchanged file, and a read they serve never reaches replicate)
                with open(path, "rb") as f:
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                    assert f.read() == want
                if healed.exists() and healed.read_bytes() == want:
                    break
                time.sleep(0.5)
            assert healed.exists() and healed.read_bytes() == want, \
                "the restarted brick did not get the data back"
            assert m.proc.poll() is None, m.read_log()[-3000:]


def test_signal_frees_a_caller_stuck_on_a_dead_brick(tmp_path):
    """Every brick frozen (SIGSTOP: the connections stay open, nothing answers, so
    libgfapi waits for the 30 s ping-timeout): a process stuck in a lookup on the mount
    is freed by a signal at once; its library call is abandoned, not waited for."""
    import signal
    import subprocess
    import sys
    why = can_mount()
    if why:
        pytest.skip(why)
    with Bricks(tmp_path / "bricks", 2, "stuck", ping_timeout=30) as bricks:
        with mount_gfapi(tmp_path / "xlfs", bricks.client_volfile,
                         "--entry-timeout=0", "--negative-timeout=0") as m:
            os.stat(m.mountpoint)
            for b in bricks.bricks:
                os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                code = ("import os, signal, sys\n"
                        "signal.signal(signal.SIGINT, lambda *a: sys.exit(7))\n"
                        "print('ready', flush=True)\n"
                        "try:\n    os.stat(sys.argv[1])\nexcept OSError:\n    pass\n"
                        "sys.exit(0)\n")
                child = subprocess.Popen([sys.executable, "-c", code, m.path("nothing")],
                                         stdout=subprocess.PIPE)
                assert child.stdout.readline().strip() == b"ready"
                time.sleep(1.0)
                assert child.poll() is None, "the lookup did not wait for the bricks"
                child.send_signal(signal.SIGINT)
                try:
                    rc = child.wait(10)       # well before the 30 s ping-timeout
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                    pytest.fail("SIGINT did not free the caller stuck on frozen bricks")
                assert rc == 7
                assert all(b.proc.poll() is None for b in bricks.bricks)   # still frozen
            finally:
                for b in bricks.bricks:
                    os.kill(b.proc.pid, signal.SIGCONT)
            assert m.proc.poll() is None, m.read_log()[-3000:]
