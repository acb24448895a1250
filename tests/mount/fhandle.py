"""name_to_handle_at / open_by_handle_at through ctypes, for the export-handle tests.

    h = name_to_handle(path)            # a Handle (type, bytes) and the mount id
    fd = open_by_handle(mount_fd, h, os.O_RDONLY)   # needs CAP_DAC_READ_SEARCH
"""
from __future__ import annotations

import ctypes
import os
import struct
from typing import NamedTuple

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
