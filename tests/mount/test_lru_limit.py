"""--lru-limit bounds what the daemon holds for inodes the kernel caches.

The kernel keeps looked-up inodes until memory pressure; storage/posix holds a descriptor
for each.  Past the limit the bridge invalidates the least recently used names, the kernel
FORGETs their inodes, and posix closes their descriptors, so a tree larger than the
process's descriptor limit stays usable.
"""
import os

import pytest

from tests.mountlib import VOLFILES, Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]


def _daemon_fds(m: Mounted) -> int:
    return len(os.listdir(f"/proc/{m.proc.pid}/fd"))


def test_lru_limit_bounds_the_daemons_descriptors(tmp_path):
    with Mounted(VOLFILES / "local.vol", tmp_path, "--lru-limit=300") as m:
        base = _daemon_fds(m)
        for i in range(2000):
            os.mknod(m.path(f"f{i}"))
        peak = _daemon_fds(m) - base
        # every file is still there and usable after its inode was forgotten
        assert len(os.listdir(m.path())) == 2000
        for i in range(0, 2000, 97):
            assert os.stat(m.path(f"f{i}")).st_size == 0
        assert peak < 600, f"{peak} descriptors for 2000 files with --lru-limit=300"
        assert "invalid value" not in m.read_log()


def test_without_a_small_limit_the_descriptors_grow(tmp_path):
    """The hazard half: with the default limit the same tree keeps a descriptor per file."""
    with Mounted(VOLFILES / "local.vol", tmp_path) as m:
        base = _daemon_fds(m)
        for i in range(2000):
            os.mknod(m.path(f"f{i}"))
        assert _daemon_fds(m) - base >= 1900
