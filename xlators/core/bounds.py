"""Offsets, counts and flags of data fops, checked as the Linux VFS checks them.

The bridge decodes the kernel's messages as unsigned integers and passes them through
unchanged, so an application's ``lseek(fd, -1, SEEK_END)`` or ``pread(fd, buf, n, -1)``
reaches a translator as ``2**64 - 1``, and open flags with bit 31 set as a number at or
above ``2**31``.  Handed to ``os`` calls such values raise ``OverflowError`` (an EIO to
the application); kept as Python ints they can make an in-memory store walk an exabyte.
Storage translators (storage/posix, storage/memory) pass every such value through these
helpers first, so that both give the errno a kernel filesystem gives (measured on ext4
and tmpfs, kernel 6.18):

- a 64-bit offset is the kernel's signed ``loff_t`` (:func:`loff`);
- read/write: a negative offset, or one whose end passes ``LOFF_MAX``, is EINVAL
  (``rw_verify_area``); one request moves at most ``MAX_RW_COUNT`` bytes (:func:`rw_range`);
- fallocate: offset < 0 or length <= 0 is EINVAL, an end past the maximum file size (or
  past ``LOFF_MAX``) is EFBIG (``vfs_fallocate``; :func:`falloc_range`);
- truncate: a negative size is EINVAL, one past the maximum file size EFBIG (:func:`new_size`);
- copy_file_range: negative offsets are EINVAL, the length (a ``size_t``) is clamped to
  ``MAX_RW_COUNT``: a short copy is a valid answer (:func:`copy_range`);
- open(2) ignores flag bits it does not know (:func:`open_flags`); setxattr(2) refuses
  them with EINVAL (:func:`xattr_flags`).
"""
from __future__ import annotations

import errno
import os
import platform

from .errors import FopError
from .types import O_EXEC_OPEN

LOFF_MAX = (1 << 63) - 1
MAX_RW_COUNT = 0x7FFFF000          # INT_MAX & PAGE_MASK: the most one read/write moves
_U64 = 1 << 64
_U32 = 1 << 32

# os.O_LARGEFILE is 0 on 64-bit, but the kernel sets (and FUSE sends) the bit anyway.
_O_LARGEFILE = os.O_LARGEFILE or (0o400000 if platform.machine() in ("aarch64", "arm64")
                                  else 0o100000)
# Every flag open(2) knows (the kernel's VALID_OPEN_FLAGS); other bits are ignored.
VALID_OPEN_FLAGS = (
    os.O_ACCMODE | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC | os.O_APPEND
    | os.O_NONBLOCK | os.O_SYNC | os.O_DSYNC | getattr(os, "O_ASYNC", 0o20000)
    | os.O_DIRECT | _O_LARGEFILE | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOATIME
    | os.O_CLOEXEC | os.O_PATH | getattr(os, "O_TMPFILE", 0))
XATTR_CREATE = 1
XATTR_REPLACE = 2


def loff(value: int, what: str = "offset") -> int:
    """A kernel u64 offset as a signed ``loff_t`` (2**64-1 is -1); EINVAL beyond 64 bits."""
    if not -(1 << 63) <= value < _U64:
        raise FopError(errno.EINVAL, f"{what} {value} does not fit 64 bits")
    return value - _U64 if value > LOFF_MAX else value


def rw_range(offset: int, count: int) -> tuple[int, int]:
    """(offset, count) of a read or write: EINVAL for a negative offset or count or an
    end past LOFF_MAX; the count clamped to MAX_RW_COUNT (a short transfer)."""
    if 0 <= offset and 0 <= count <= MAX_RW_COUNT and offset + count <= LOFF_MAX:
        return offset, count        # every read and write the kernel sends
    offset = loff(offset)
    if offset < 0 or count < 0:
        raise FopError(errno.EINVAL, f"negative {'offset' if offset < 0 else 'count'}")
    if offset + count > LOFF_MAX:
        raise FopError(errno.EINVAL, f"offset {offset} + count {count} passes 2**63-1")
    return offset, min(count, MAX_RW_COUNT)


def falloc_range(offset: int, length: int, max_size: int = LOFF_MAX) -> tuple[int, int]:
    """(offset, length) of a fallocate: EINVAL for offset < 0 or length <= 0, EFBIG when
    offset + length passes ``max_size``."""
    offset, length = loff(offset), loff(length, "length")
    if offset < 0 or length <= 0:
        raise FopError(errno.EINVAL, f"fallocate offset {offset}, length {length}")
    if offset + length > max_size:
        raise FopError(errno.EFBIG, f"fallocate end {offset + length} passes {max_size}")
    return offset, length


def new_size(size: int, max_size: int = LOFF_MAX) -> int:
    """A truncate size: EINVAL when negative, EFBIG past ``max_size``."""
    size = loff(size, "size")
    if size < 0:
        raise FopError(errno.EINVAL, f"negative size {size}")
    if size > max_size:
        raise FopError(errno.EFBIG, f"size {size} passes {max_size}")
    return size


def copy_range(off_in: int, off_out: int, length: int) -> tuple[int, int, int]:
    """(off_in, off_out, length) of a copy_file_range: EINVAL for a negative offset or
    length; the length clamped to MAX_RW_COUNT."""
    off_in, off_out = loff(off_in), loff(off_out)
    if off_in < 0 or off_out < 0 or length < 0:
        raise FopError(errno.EINVAL, "negative copy_file_range offset or length")
    return off_in, off_out, min(length, MAX_RW_COUNT)


def open_flags(flags: int) -> int:
    """Open flags (a kernel u32) without the bits open(2) does not know and ignores;
    the kernel's own exec-open bit (O_EXEC_OPEN, from execve) stays."""
    return flags & (VALID_OPEN_FLAGS | O_EXEC_OPEN)


def xattr_flags(flags: int) -> int:
    """setxattr flags: EINVAL for anything but XATTR_CREATE and XATTR_REPLACE."""
    if flags & ~(XATTR_CREATE | XATTR_REPLACE) or flags < 0:
        raise FopError(errno.EINVAL, f"unknown setxattr flags {flags:#x}")
    return flags
