"""fsx (tests/posix/test_fsx.py's checker, reused) on xlfs over storage/gfapi, and
failover: a brick killed in the middle of an fsx run, restarted, and healed."""
from __future__ import annotations

import os
import threading
import time

import pytest

from tests.gluster.bricks import Bricks
from tests.gluster.conftest import mount_gfapi
from tests.mountlib import can_mount
from tests.posix.posixlib import rmtree
from tests.posix.test_fsx import OPS, TIME_LIMIT, Fsx, _supported, seed_for

pytestmark = pytest.mark.mount


def run_fsx(path: str, name: str) -> Fsx:
    supported = _supported(path)
    fsx = Fsx(path, seed_for(name), supported)
    done = fsx.run(OPS, TIME_LIMIT)
    print(f"fsx {name}: seed {fsx.seed}, {done} operations {fsx.counts}")
    assert done >= min(OPS, 300), f"only {done} operations in {TIME_LIMIT}s"
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
            killer = threading.Timer(1.5, victim.kill)
            killer.start()
            try:
                fsx = run_fsx(path, "gfapi-failover")
            finally:
                killer.cancel()
            assert not victim.running, "the brick was not killed during the run"
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
                # a lookup/open from the client triggers the heal of the file
                with open(path, "rb") as f:
                    assert f.read() == want
                if healed.exists() and healed.read_bytes() == want:
                    break
                time.sleep(0.5)
            assert healed.exists() and healed.read_bytes() == want, \
                "the restarted brick did not get the data back"
            assert m.proc.poll() is None, m.read_log()[-3000:]
