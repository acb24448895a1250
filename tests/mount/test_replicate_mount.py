"""cluster/replicate on real mounts: a child failing in the middle of fsx, and split brain.

The stack is volfiles/mirror.vol's, with a debug/error-gen under the second brick that
SIGHUP switches between failing every fop with ENOTCONN and failing nothing.  The
application must see no error and no wrong byte, and once the child is back and healed,
both brick directories must hold the same files, byte for byte.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from tests.mountlib import Mounted, can_mount, wait_until
from tests.posix.test_fsx import Fsx, FsxThread, _supported

pytestmark = pytest.mark.mount

VOLFILE = """
volume brick-a
    type storage/posix
    option directory /nonexistent-a
end-volume

volume brick-b
    type storage/posix
    option directory /nonexistent-b
end-volume

volume faults-a
    type debug/error-gen
    option failure {fail_a}
    option error-no ENOTCONN
    subvolumes brick-a
end-volume

volume faults-b
    type debug/error-gen
    option failure {fail_b}
    option error-no ENOTCONN
    subvolumes brick-b
end-volume

volume mirror
    type cluster/replicate
    option child-probe-interval 0.2
    option favorite-child-policy {policy}
    subvolumes faults-a faults-b
end-volume

volume locks
    type features/locks
    subvolumes mirror
end-volume
"""


def _write_volfile(path: Path, fail_a: int = 0, fail_b: int = 0, policy: str = "none") -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(VOLFILE.format(fail_a=fail_a, fail_b=fail_b, policy=policy))
    os.rename(tmp, path)


def _reload(m: Mounted, volfile: Path, **failures) -> None:
    _write_volfile(volfile, **failures)
    m.proc.send_signal(signal.SIGHUP)


def _tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            out[rel] = os.readlink(p).encode() if os.path.islink(p) else Path(p).read_bytes()
    return out


@pytest.fixture
def mirror(tmp_path: Path):
    why = can_mount()
    if why:
        pytest.skip(why)
    volfile = tmp_path / "mirror-faults.vol"
    _write_volfile(volfile)
    m = Mounted(volfile, tmp_path, limit=300)
    bricks = m.extra_bricks()
    with m:
        yield m, volfile, bricks["brick-a"], bricks["brick-b"]


@pytest.mark.parametrize("which", ["b", "a"])
def test_a_child_failing_during_fsx_loses_nothing(mirror, which: str) -> None:
    """``which`` brick fails: b, or a (the first child, whose attributes the kernel
    sees while it is up)."""
    m, volfile, brick_a, brick_b = mirror
    name = f"faults-{which}"
    bad = brick_b if which == "b" else brick_a
    root = Path(m.mountpoint)
    (root / "before").write_bytes(b"written with both children up\n")
    path = str(root / "fsx-file")
    fsx = Fsx(path, 20261206, _supported(path))
    with FsxThread(fsx, 100000, 25.0, detail=m.read_log) as run:
        run.wait_ops(400)
        _reload(m, volfile, **{f"fail_{which}": 100})
        wait_until(lambda: f"child {name} is down" in m.read_log() or not run.running, 30,
                   "the child going down", detail=m.read_log, interval=0.1)
        # namespace changes while the child is down (entry heal)
        os.mkdir(root / "made-while-down")
        (root / "made-while-down" / "inner").write_bytes(b"inner\n" * 1000)
        os.unlink(root / "before")
        os.symlink("fsx-file", root / "link-while-down")
        run.wait_ops(400)
        _reload(m, volfile)
        run.wait_ops(400)
    assert fsx.n > 1200, f"fsx ran only {fsx.n} operations"
    log = m.read_log()
    assert f"child {name} is down" in log and f"child {name} is up" in log, log[-3000:]
    wait_until(lambda: _tree(brick_a) == _tree(brick_b), 60, f"heal of brick-{which}",
               detail=m.read_log, interval=0.1)
    tree = _tree(bad)
    assert tree["fsx-file"] == Path(path).read_bytes()
    assert tree["made-while-down/inner"] == b"inner\n" * 1000
    assert "before" not in tree and tree["link-while-down"] == b"fsx-file"


def _poked(f: Path) -> bool:
    """Touch the file through the mount, so replicate meets the failing child."""
    f.write_bytes(b"the original\n")
    return True


def _split_brain(m: Mounted, volfile: Path, policy: str) -> Path:
    root = Path(m.mountpoint)
    f = root / "contested"
    f.write_bytes(b"the original\n")
    _reload(m, volfile, fail_b=100, policy=policy)
    wait_until(lambda: _poked(f) and "child faults-b is down" in m.read_log(), 10,
               "b down", detail=m.read_log, interval=0.1)
    f.write_bytes(b"changed while b was down: longer\n")
    _reload(m, volfile, fail_a=100, policy=policy)
    time.sleep(0.5)
    # a stale copy is never served: the good one is down
    wait_until(lambda: "child faults-b is up" in m.read_log(), 10, "b up",
               detail=m.read_log, interval=0.1)
    fd = os.open(f, os.O_WRONLY)
    try:
        os.pwrite(fd, b"CHANGED WHILE A WAS DOWN", 0)
        os.fsync(fd)
    except OSError:
        wait_until(lambda: "child faults-a is down" in m.read_log(), 10, "a down",
                   detail=m.read_log, interval=0.1)
        os.pwrite(fd, b"CHANGED WHILE A WAS DOWN", 0)
    finally:
        os.close(fd)
    _reload(m, volfile, policy=policy)
    wait_until(lambda: "child faults-a is up" in m.read_log(), 10, "a up",
               detail=m.read_log, interval=0.1)
    return f


def test_split_brain_is_eio_and_logged(mirror) -> None:
    m, volfile, brick_a, brick_b = mirror
    f = _split_brain(m, volfile, "none")
    time.sleep(1.5)                           # past the kernel's attribute timeout
    with pytest.raises(OSError) as ei:
        Path(f).read_bytes()
    assert ei.value.errno == errno.EIO
    log = m.read_log()
    assert "split brain (data) on gfid" in log and "'contested'" in log, log[-3000:]
    assert "children faults-a, faults-b" in log
    # both copies are still there, untouched
    assert (brick_a / "contested").read_bytes() == b"changed while b was down: longer\n"
    assert (brick_b / "contested").read_bytes().startswith(b"CHANGED WHILE A WAS DOWN")


def test_split_brain_resolved_by_size(mirror) -> None:
    m, volfile, brick_a, brick_b = mirror
    f = _split_brain(m, volfile, "size")
    time.sleep(1.5)                           # past the kernel's attribute timeout
    assert f.read_bytes() == b"changed while b was down: longer\n"
    wait_until(lambda: (brick_b / "contested").read_bytes() ==
               b"changed while b was down: longer\n", 20, "heal from the winner",
               detail=m.read_log, interval=0.1)
    assert "resolved by favorite-child-policy size: faults-a wins" in m.read_log()


def test_the_inode_cache_limit_counts_every_brick() -> None:
    """Each brick may hold a descriptor per cached inode: a mirror halves the bound."""
    from fuse_bridge.client import effective_lru_limit
    one, two = effective_lru_limit(0, 1), effective_lru_limit(0, 2)
    assert two <= max(1024, one // 2) and two >= 1024
