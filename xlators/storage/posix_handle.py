"""Export keys for storage/posix: the brick's own file handles, when they fit 64 bits.

The kernel's handle for an xlfs file is (nodeid, generation); when it decodes one for an
inode it no longer caches, the graph must find the object from the nodeid alone (the
``resolve`` fop).  A backing filesystem whose handles (name_to_handle_at) fit 8 bytes
gives each object a number that names it and nothing else, ever: ext4's (and ext2/3's;
xfs's only in their 32-bit inode number form) are the inode number and its generation,
so a deleted file's handle fails (ESTALE) even when its inode number is reused.  That
number is the key, open_by_handle_at on the brick root finds the object again, and
nothing is remembered.

Bricks whose handles are longer (tmpfs, btrfs, xfs's 64-bit form, overlayfs) or that
have none get no keys: their inodes take counted nodeids, and a file handle of a
forgotten inode is stale.  Objects of filesystems mounted inside the brick get no keys
either (their handles would need their own mount descriptor).

open_by_handle_at opens any inode of the brick's filesystem, inside the brick directory
or not.  ``resolve`` refuses directories outside the brick (it walks ".." up to the
brick root); a non-directory cannot be placed without a name, so a forged key for a file
elsewhere on the same filesystem would resolve.  Forging one needs the 32-bit random
generation of the target (ext4 ignores a generation of 0, so posix checks that the
handle of what it opened is the key asked for), and the kernel lets only CAP_DAC_READ_SEARCH decode handles on
the mount; this is what exporting the brick's own filesystem over NFS with
``no_subtree_check`` (the default) allows too.
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys
from typing import Optional

from .posix_sys import AT_EMPTY_PATH

_libc = ctypes.CDLL(None, use_errno=True)
_name_to_handle_at = _libc.name_to_handle_at
_name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                               ctypes.POINTER(ctypes.c_int), ctypes.c_int]
_name_to_handle_at.restype = ctypes.c_int
# The same function without argtypes for BrickHandles.key, once per new inode: ctypes'
# argument conversion doubles its cost (its arguments are plain ints and buffers).
_name_to_handle_at_raw = ctypes.CDLL(None, use_errno=True).name_to_handle_at
_open_by_handle_at = _libc.open_by_handle_at
_open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_open_by_handle_at.restype = ctypes.c_int

_HEAD = struct.Struct("Ii")          # struct file_handle: handle_bytes, handle_type
KEY_BYTES = 8
MAX_WALK = 4096                      # ".." steps before a directory counts as outside


def _handle(fd: int) -> tuple[int, bytes]:
    """(type, bytes) of the object ``fd`` refers to (an O_PATH descriptor will do)."""
    buf = ctypes.create_string_buffer(_HEAD.size + KEY_BYTES)
    _HEAD.pack_into(buf, 0, KEY_BYTES, 0)
    mount_id = ctypes.c_int()
    if _name_to_handle_at(fd, b"", buf, ctypes.byref(mount_id), AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    size, htype = _HEAD.unpack_from(buf)
    return htype, buf.raw[_HEAD.size:_HEAD.size + size]


class BrickHandles:
    """Keys of one brick's objects: its handles of one type and size, as integers.
    Holds a descriptor of the brick root (open_by_handle_at refuses O_PATH ones).
    ``key`` reuses one buffer: call it from one thread (posix's event loop)."""
    __slots__ = ("mount_fd", "type", "size", "_buf", "_mount_id", "_bytes", "_htype",
                 "_value", "_mask")

    def __init__(self, mount_fd: int, htype: int, size: int) -> None:
        self.mount_fd = mount_fd
        self.type = htype
        self.size = size
        # one struct file_handle with room for KEY_BYTES, and views of its fields
        self._buf = ctypes.create_string_buffer(_HEAD.size + KEY_BYTES)
        self._mount_id = ctypes.byref(ctypes.c_int())
        self._bytes = ctypes.c_uint32.from_buffer(self._buf, 0)
        self._htype = ctypes.c_int32.from_buffer(self._buf, 4)
        self._value = ctypes.c_uint64.from_buffer(self._buf, _HEAD.size)
        self._mask = (1 << (8 * size)) - 1

    @classmethod
    def probe(cls, root_fd: int) -> tuple[Optional["BrickHandles"], str]:
        """Keys for the brick whose root is ``root_fd``, or None and why not."""
        try:
            htype, data = _handle(root_fd)
        except OSError as exc:
            return None, f"the brick's filesystem gives no file handles fitting " \
                         f"{KEY_BYTES} bytes ({exc.strerror})"
        if not data:
            return None, "the brick's filesystem gives empty file handles"
        try:
            mount_fd = os.open(f"/proc/self/fd/{root_fd}",
                               os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return None, f"cannot open the brick root for reading ({exc.strerror})"
        return cls(mount_fd, htype, len(data)), ""

    def close(self) -> None:
        if self.mount_fd >= 0:
            os.close(self.mount_fd)
            self.mount_fd = -1

    def key(self, fd: int) -> int:
        """The key of the object ``fd`` refers to; 0 when it has none."""
        self._bytes.value = KEY_BYTES
        if _name_to_handle_at_raw(fd, b"", self._buf, self._mount_id, AT_EMPTY_PATH):
            return 0
        if self._htype.value != self.type or self._bytes.value != self.size:
            return 0
        return self._value.value & self._mask   # native byte order, as open() writes

    def open(self, key: int) -> int:
        """An O_PATH descriptor of the object ``key`` names; OSError (ESTALE, ...) when
        there is none."""
        if not 0 < key < 1 << (8 * self.size):
            raise OSError(116, "no such handle")   # ESTALE
        buf = ctypes.create_string_buffer(_HEAD.pack(self.size, self.type)
                                          + key.to_bytes(self.size, sys.byteorder))
        fd = _open_by_handle_at(self.mount_fd, buf,
                                os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd


def inside(fd: int, root: os.stat_result) -> bool:
    """Is directory ``fd`` the brick root ``root`` or below it?  Walks "..": a directory
    renamed meanwhile can only be answered by where it is now."""
    st = os.fstat(fd)
    cur = fd
    try:
        for _ in range(MAX_WALK):
            if st.st_ino == root.st_ino and st.st_dev == root.st_dev:
                return True
            up = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
            if cur != fd:
                os.close(cur)
            cur = up
            parent = os.fstat(cur)
            if (parent.st_ino, parent.st_dev) == (st.st_ino, st.st_dev):
                return False        # the top of the filesystem (or of our root)
            st = parent
        return False
    finally:
        if cur != fd:
            os.close(cur)
