"""Every shipped volfile mounts, serves a create/read/readdir/unlink cycle, and unmounts
cleanly.  The list comes from volfiles/, so a new volfile is covered the day it lands.

A stack with features/read-only gets a brick with a file in it beforehand: it must read
back, and writing must fail with EROFS.  Deliberately slow stacks (debug/delay-gen) run
with their delays cut to 5 ms (tests/posix/posixlib.speed_overrides).
"""
from __future__ import annotations

import errno
import os
import signal
import stat
from pathlib import Path

import pytest

from fuse_bridge import mount as mnt
from tests.mountlib import VOLFILES, Mounted, can_mount
from tests.posix.posixlib import errno_of, speed_overrides

pytestmark = pytest.mark.mount
SHIPPED = sorted(VOLFILES.glob("*.vol"))


def test_volfiles_are_there():
    names = {v.name for v in SHIPPED}
    assert {"local.vol", "memory.vol"} <= names, names


def _read_only(volfile: Path) -> bool:
    return "features/read-only" in volfile.read_text()


@pytest.mark.parametrize("volfile", SHIPPED, ids=[v.stem for v in SHIPPED])
def test_volfile_mounts_and_serves(volfile: Path, tmp_path: Path) -> None:
    why = can_mount()
    if why:
        pytest.skip(why)
    ro = _read_only(volfile)
    brick = tmp_path / "brick"
    brick.mkdir()
    if ro:
        (brick / "existing").write_bytes(b"placed before the mount\n")
        (brick / "dir").mkdir()
    m = Mounted(volfile, tmp_path, overrides=speed_overrides(volfile), limit=60)
    with m:
        root = Path(m.mountpoint)
        assert mnt.find_mount(str(root))["fstype"] == "fuse.xlfs"
        assert stat.S_ISDIR(os.stat(root).st_mode)
        # .meta on every graph, never listed (the listings below are exact)
        assert os.readlink(root / ".meta" / "graphs" / "active" / "top") == "meta-autoload"
        if ro:
            assert sorted(os.listdir(root)) == ["dir", "existing"]
            assert (root / "existing").read_bytes() == b"placed before the mount\n"
            assert errno_of(os.open, root / "new", os.O_CREAT | os.O_WRONLY, 0o644) == \
                errno.EROFS
            assert errno_of(os.unlink, root / "existing") == errno.EROFS
            assert errno_of(os.mkdir, root / "d2") == errno.EROFS
        else:
            data = b"hello from " + volfile.name.encode() + b"\n" + bytes(range(256)) * 300
            with open(root / "file", "wb") as f:
                f.write(data)
            assert (root / "file").read_bytes() == data
            assert os.stat(root / "file").st_size == len(data)
            os.mkdir(root / "dir")
            with open(root / "dir" / "inner", "wb") as f:
                f.write(b"x")
            assert sorted(os.listdir(root)) == ["dir", "file"]
            assert os.listdir(root / "dir") == ["inner"]
            os.rename(root / "file", root / "dir" / "moved")
            assert (root / "dir" / "moved").read_bytes() == data
            os.unlink(root / "dir" / "moved")
            os.unlink(root / "dir" / "inner")
            os.rmdir(root / "dir")
            assert os.listdir(root) == []
            if "volume posix" in volfile.read_text():
                assert os.listdir(brick) == [], "the brick should be empty again"
        # a clean unmount: SIGTERM, exit status 0, no mount left, no traceback logged
        assert m.stop(signal.SIGTERM) == 0, m.read_log()[-3000:]
        assert mnt.find_mount(str(root)) is None, "SIGTERM left the mount behind"
        log = m.read_log()
        assert "Traceback" not in log, log[-5000:]
