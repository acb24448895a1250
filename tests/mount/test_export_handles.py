"""File handles of an xlfs mount (EXPORT_SUPPORT) stay valid while the file exists.

name_to_handle_at on the mount gives the kernel's (nodeid, generation) handle; when the
kernel no longer caches the inode (drop_caches, or an --lru-limit invalidation and its
FORGET) open_by_handle_at makes it send LOOKUP(nodeid, ".") and, to reconnect a
directory, LOOKUP(dir, "..").  What these need from the daemon: a forgotten nodeid found
again, and ESTALE once the object is deleted, also when the brick reuses its inode number.
"""
import errno
import os
import time

import pytest

from tests.mount.fhandle import drop_caches, name_to_handle, open_by_handle, small_ext4
from tests.mountlib import VOLFILES, Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

VOLS = ["local.vol", "memory.vol"]


def _stale(mount_fd: int, handle, flags: int = os.O_RDONLY) -> bool:
    try:
        os.close(open_by_handle(mount_fd, handle, flags))
    except OSError as exc:
        if exc.errno == errno.ESTALE:
            return True
        raise
    return False


def _stale_once_forgotten(mount_fd: int, handle, flags: int = os.O_RDONLY) -> bool:
    """Stale once the kernel forgot the inode: while it still caches it (a RELEASE still
    in flight holds it) the kernel opens it alone, without asking the daemon."""
    for _ in range(50):
        drop_caches()
        if _stale(mount_fd, handle, flags):
            return True
        time.sleep(0.1)
    return False


def _read(mount_fd: int, handle) -> bytes:
    fd = open_by_handle(mount_fd, handle, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


@pytest.mark.parametrize("vol", VOLS)
def test_handles_resolve_after_the_kernel_dropped_its_caches(tmp_path, vol):
    with Mounted(VOLFILES / vol, tmp_path) as m:
        os.makedirs(m.path("a", "b", "c"))
        with open(m.path("a", "b", "c", "f"), "wb") as f:
            f.write(b"hello")
        hf = name_to_handle(m.path("a", "b", "c", "f"))
        hc = name_to_handle(m.path("a", "b", "c"))
        mfd = os.open(m.path(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            drop_caches()
            assert _read(mfd, hf) == b"hello"
            drop_caches()
            dfd = open_by_handle(mfd, hc, os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert os.listdir(dfd) == ["f"]
                # the kernel reconnected the directory through ".." lookups
                assert os.readlink(f"/proc/self/fd/{dfd}") == m.path("a", "b", "c")
            finally:
                os.close(dfd)
            os.unlink(m.path("a", "b", "c", "f"))
            assert _stale_once_forgotten(mfd, hf)
            os.rmdir(m.path("a", "b", "c"))
            assert _stale_once_forgotten(mfd, hc, os.O_RDONLY | os.O_DIRECTORY)
        finally:
            os.close(mfd)
        assert "Traceback" not in m.read_log()


@pytest.mark.parametrize("vol", VOLS)
def test_handles_resolve_after_an_lru_limit_eviction(tmp_path, vol):
    with Mounted(VOLFILES / vol, tmp_path, "--lru-limit=64") as m:
        with open(m.path("first"), "wb") as f:
            f.write(b"first file")
        h = name_to_handle(m.path("first"))
        for i in range(400):                 # "first" leaves the LRU: INVAL_ENTRY, FORGET
            os.mknod(m.path(f"n{i}"))
        mfd = os.open(m.path(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert _read(mfd, h) == b"first file"
        finally:
            os.close(mfd)


def test_a_reused_brick_inode_number_gives_estale(tmp_path):
    with small_ext4(tmp_path) as fs, \
            Mounted(VOLFILES / "local.vol", tmp_path, brick=fs / "brick") as m:
        with open(m.path("old"), "wb") as f:
            f.write(b"old")
        old_ino = os.stat(m.path("old")).st_ino
        h = name_to_handle(m.path("old"))
        os.unlink(m.path("old"))
        for i in range(50):
            drop_caches()                    # FORGET: the daemon lets the inode go
            path = m.path(f"new{i}")
            with open(path, "wb") as f:
                f.write(b"new")
            if os.stat(path).st_ino == old_ino:
                break
        else:
            pytest.fail("a fresh ext4 did not reuse the freed inode number")
        h_new = name_to_handle(path)
        assert h_new != h
        mfd = os.open(m.path(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert _stale_once_forgotten(mfd, h)
            assert _read(mfd, h_new) == b"new"
        finally:
            os.close(mfd)


def test_posix_handles_survive_a_daemon_restart(tmp_path):
    """The nodeid is the brick's file handle, so the same file has the same nodeid in the
    next daemon too: an NFS client's handles outlive a restart of the xlfs mount."""
    with Mounted(VOLFILES / "local.vol", tmp_path) as m:
        os.mkdir(m.path("d"))
        with open(m.path("d", "f"), "wb") as f:
            f.write(b"kept")
        hf = name_to_handle(m.path("d", "f"))
        hd = name_to_handle(m.path("d"))
    with Mounted(VOLFILES / "local.vol", tmp_path) as m:
        mfd = os.open(m.path(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert _read(mfd, hf) == b"kept"
            dfd = open_by_handle(mfd, hd, os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert os.listdir(dfd) == ["f"]
            finally:
                os.close(dfd)
        finally:
            os.close(mfd)
