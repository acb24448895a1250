"""The Linux inotify interface storage/posix's ``watch-brick`` uses (posix_watch.py):
libc's three calls, the event bits, and the parsing of ``struct inotify_event``."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.inotify_init1.argtypes = [ctypes.c_int]
libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
RENAME_NOREPLACE = 1
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
        | IN_DELETE | IN_ONLYDIR | IN_EXCL_UNLINK)
NAME_EVENTS = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE
_EVENT = struct.Struct("iIII")      # wd, mask, cookie, len; then len bytes of name


def parse_events(data: bytes) -> list[tuple[int, int, bytes]]:
    """(wd, mask, name) of every ``struct inotify_event`` in ``data``."""
    out = []
    pos, end = 0, len(data)
    size = _EVENT.size
    while pos + size <= end:
        wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
        name = data[pos + size:pos + size + length].rstrip(b"\0")
        out.append((wd, mask, name))
        pos += size + length
    return out
