"""fsx (tests/posix/test_fsx.py's checker, reused) on xlfs over storage/gfapi, and
failover: a brick killed in the middle of an fsx run, restarted, and healed.  Frozen
bricks (ENOTCONN, signals freeing stuck callers): test_gluster_faults."""
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

