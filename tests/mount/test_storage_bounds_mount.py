"""Huge ranges and negative offsets through a real mount, on both storages.

The kernel checks most offsets itself before FUSE sees them, but passes some straight
through: ``fallocate -l 4E`` (FUSE's maximum file size is 2**63-1) and ``lseek`` with
SEEK_DATA/SEEK_HOLE at a negative offset (it arrives as 2**64-1).  The daemon must answer
them with the errno a kernel filesystem gives and stay responsive.
"""
from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from tests.mountlib import VOLFILES, Mounted, can_mount

pytestmark = pytest.mark.mount
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _fallocate_errno(fd: int, mode: int, offset: int, length: int) -> int:
    if _libc.fallocate(fd, mode, offset, length) == 0:
        return 0
    return ctypes.get_errno()


def _lseek_errno(fd: int, offset: int, whence: int) -> int:
    try:
        os.lseek(fd, offset, whence)
    except OSError as e:
        return e.errno
    return 0


@pytest.mark.parametrize("volfile, full", [("memory.vol", errno.ENOSPC),     # as tmpfs
                                           ("local.vol", errno.EFBIG)],      # as ext4
                         ids=["memory", "posix"])
def test_exabyte_fallocate_and_negative_seek(volfile: str, full: int, tmp_path: Path) -> None:
    why = can_mount()
    if why:
        pytest.skip(why)
    with Mounted(VOLFILES / volfile, tmp_path, limit=60.0) as m:
        fd = os.open(m.path("f"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"0123456789")
            assert _fallocate_errno(fd, 0, 0, 4 << 60) == full          # fallocate -l 4E
            assert _fallocate_errno(fd, 1, 1 << 61, 1 << 62) == full
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                assert _lseek_errno(fd, -1, whence) == errno.ENXIO
                assert _lseek_errno(fd, (1 << 63) - 1, whence) == errno.ENXIO
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 10
            # punching every byte there can be: tmpfs does it, ext4 refuses past 16 TiB
            punched = _fallocate_errno(fd, 3, 0, (1 << 63) - 1)
            assert punched == (0 if full == errno.ENOSPC else errno.EFBIG)
            assert os.fstat(fd).st_size == 10
            assert os.pread(fd, 20, 0) == (bytes(10) if punched == 0 else b"0123456789")
        finally:
            os.close(fd)
        assert sorted(os.listdir(m.path())) == ["f"]          # still serving
        assert not m.aborted
