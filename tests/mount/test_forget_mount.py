"""The forget of a file removed through the mount is applied at once: posix closes its
descriptor (so the brick frees the file's blocks) within MAX_WAIT even while requests
keep coming, where the forget of a file that keeps its name would linger for up to
MAX_LINGER (fuse_bridge.forget_backlog).  The lingering half is pinned by
tests/protocol/test_forget_backlog.py: a real kernel forgets kept files only when caches
are dropped, machine-wide."""
import os
import time

import pytest

from tests.mountlib import VOLFILES, Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]


def _held(m: Mounted) -> list[str]:
    """What the daemon's descriptors into the brick point at."""
    fds = f"/proc/{m.proc.pid}/fd"
    held = []
    for fd in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{fd}")
        except OSError:
            continue                        # (closed meanwhile)
        if target.startswith(str(m.brick)):
            held.append(target)
    return held


def _deleted_held(m: Mounted) -> list[str]:
    """Brick files whose last name went that the daemon still holds a descriptor of."""
    return [t for t in _held(m) if t.endswith(" (deleted)")]


@pytest.mark.parametrize("how", ["unlink", "rename-over", "rename-then-unlink", "rmdir"])
def test_a_removed_files_descriptor_is_closed_while_the_mount_stays_busy(tmp_path, how):
    with Mounted(VOLFILES / "local.vol", tmp_path, limit=60) as m:
        for name in ("a", "b"):
            with open(m.path(name), "wb") as f:
                f.write(b"x" * 65536)
        os.mkdir(m.path("d"))
        assert not _deleted_held(m)
        victim = "d" if how == "rmdir" else "a"
        assert f"{m.brick}/{victim}" in _held(m), "posix holds no descriptor to wait for"
        if how == "unlink":
            os.unlink(m.path("a"))
        elif how == "rename-over":
            os.rename(m.path("b"), m.path("a"))
        elif how == "rename-then-unlink":
            os.rename(m.path("a"), m.path("c"))
            os.unlink(m.path("c"))
        else:
            os.rmdir(m.path("d"))
        # 3 s: ten times MAX_WAIT, with room for a loaded machine; a forget that
        # lingered would wait MAX_LINGER (5 s) under this traffic
        deadline = time.monotonic() + 3.0
        while _deleted_held(m):
            assert time.monotonic() < deadline, f"still held after {how}: {_deleted_held(m)}"
            os.listdir(m.path())            # OPENDIR, READDIR, RELEASEDIR: never quiet
        assert os.path.exists(m.path("a")) == (how != "unlink"
                                               and how != "rename-then-unlink")
