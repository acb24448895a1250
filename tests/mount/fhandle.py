"""name_to_handle_at / open_by_handle_at through ctypes, for the export-handle tests.

    h = name_to_handle(path)            # a Handle (type, bytes) and the mount id
    fd = open_by_handle(mount_fd, h, os.O_RDONLY)   # needs CAP_DAC_READ_SEARCH
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import subprocess
from pathlib import Path
from typing import Iterator, NamedTuple

_libc = ctypes.CDLL(None, use_errno=True)
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_int), ctypes.c_int]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_MAX_HANDLE = 128
_HEAD = struct.Struct("Ii")       # struct file_handle: handle_bytes, handle_type
AT_FDCWD = -100


class Handle(NamedTuple):
    type: int
    data: bytes


def name_to_handle(path: str, flags: int = 0) -> Handle:
    buf = ctypes.create_string_buffer(_HEAD.size + _MAX_HANDLE)
    _HEAD.pack_into(buf, 0, _MAX_HANDLE, 0)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), buf, ctypes.byref(mount_id),
                               flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    size, htype = _HEAD.unpack_from(buf)
    return Handle(htype, buf.raw[_HEAD.size:_HEAD.size + size])


def open_by_handle(mount_fd: int, handle: Handle, flags: int) -> int:
    buf = ctypes.create_string_buffer(_HEAD.pack(len(handle.data), handle.type) + handle.data)
    fd = _libc.open_by_handle_at(mount_fd, buf, flags | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def drop_caches() -> None:
    """Make the kernel drop unused dentries and inodes (it FORGETs them to the daemon)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


@contextlib.contextmanager
def small_ext4(where: Path) -> Iterator[Path]:
    """A fresh 16 MB ext4 filesystem loop-mounted at ``where/ext4`` (skips the test when
    mkfs.ext4 or loop mounts are unavailable).  Nothing else allocates inodes in it, so
    ext4 hands a freed inode number out again to the next file created."""
    import pytest
    image, mnt = where / "ext4.img", where / "ext4"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    for cmd in (["mkfs.ext4", "-q", "-F", "-N", "256", str(image)],
                ["mount", "-o", "loop", str(image), str(mnt)]):
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"{cmd[0]}: {exc}")
        if r.returncode != 0:
            pytest.skip(f"{cmd[0]}: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=60)
        image.unlink()
