"""The 2x2 stack (volfiles/dist-rep.vol: distribute over two mirrors) on a real mount,
with one brick of each mirror failing in the middle of an fsx run.

A debug/error-gen under the second brick of each pair is switched by SIGHUP between
failing every fop with ENOTCONN and failing nothing.  The application must see no error
and no wrong byte; once the bricks are back and healed, each pair's brick directories must
hold the same files, byte for byte.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.mount.test_replicate_mount import _tree
from tests.mountlib import Mounted, can_mount, wait_until
from tests.posix.test_fsx import Fsx, FsxThread, _supported

pytestmark = pytest.mark.mount

PAIR = """
volume brick-{p}1
    type storage/posix
    option directory /nonexistent-{p}1
end-volume

volume brick-{p}2
    type storage/posix
    option directory /nonexistent-{p}2
end-volume

volume faults-{p}2
    type debug/error-gen
    option failure {{fail}}
    option error-no ENOTCONN
    subvolumes brick-{p}2
end-volume

volume pair-{p}
    type cluster/replicate
    option child-probe-interval 0.2
    subvolumes brick-{p}1 faults-{p}2
end-volume
"""
VOLFILE = PAIR.format(p="a") + PAIR.format(p="b") + """
volume dist
    type cluster/distribute
    subvolumes pair-a pair-b
end-volume

volume locks
    type features/locks
    subvolumes dist
end-volume
"""


def _write_volfile(path: Path, fail: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(VOLFILE.format(fail=fail))
    os.rename(tmp, path)


def _reload(m: Mounted, volfile: Path, fail: int) -> None:
    _write_volfile(volfile, fail)
    m.proc.send_signal(signal.SIGHUP)


def test_a_brick_of_each_mirror_failing_during_fsx_loses_nothing(tmp_path: Path) -> None:
    why = can_mount()
    if why:
        pytest.skip(why)
    volfile = tmp_path / "dist-rep-faults.vol"
    _write_volfile(volfile, 0)
    m = Mounted(volfile, tmp_path, limit=300)
    bricks = m.extra_bricks()
    with m:
        root = Path(m.mountpoint)
        for i in range(8):                   # names spread over both pairs
            (root / f"before-{i}").write_bytes(b"written with every brick up\n")
        path = str(root / "fsx-file")
        fsx = Fsx(path, 20261206, _supported(path))
        with FsxThread(fsx, 100000, 25.0, detail=m.read_log) as run:
            run.wait_ops(400)
            _reload(m, volfile, 100)
            wait_until(lambda: "child faults-a2 is down" in m.read_log()
                       and "child faults-b2 is down" in m.read_log() or not run.running,
                       30, "a brick of each pair going down",
                       detail=m.read_log, interval=0.1)
            os.mkdir(root / "made-while-down")
            for i in range(8):
                (root / "made-while-down" / f"inner-{i}").write_bytes(b"inner\n" * 100)
                os.unlink(root / f"before-{i}")
            run.wait_ops(400)
            _reload(m, volfile, 0)
            run.wait_ops(400)
        assert fsx.n > 1200, f"fsx ran only {fsx.n} operations"
        for p in ("a", "b"):
            one, two = bricks[f"brick-{p}1"], bricks[f"brick-{p}2"]
            wait_until(lambda: _tree(one) == _tree(two), 60, f"heal of pair-{p}",
                       detail=m.read_log, interval=0.1)
        names = set(_tree(bricks["brick-a1"])) | set(_tree(bricks["brick-b1"]))
        assert {f"made-while-down/inner-{i}" for i in range(8)} <= names
        assert not any(n.startswith("before-") for n in names)
        assert Path(path).read_bytes() in (_tree(bricks["brick-a1"]).get("fsx-file"),
                                           _tree(bricks["brick-b1"]).get("fsx-file"))
