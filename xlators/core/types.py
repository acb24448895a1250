"""Value types that fops take and return.

Translators never see kernel structs: they see these.  Times are integer nanoseconds.
"""
from __future__ import annotations

import os
import stat as _stat
from typing import Any, NamedTuple, Optional

# Marker for SetAttr times: "set to the current time" (UTIME_NOW).
NOW = "now"


_new_object = object.__new__


class Attr:
    """File attributes (what ``stat`` shows).  ``ino`` is the file's identity."""

    __slots__ = ("ino", "size", "blocks", "atime_ns", "mtime_ns", "ctime_ns", "mode",
                 "nlink", "uid", "gid", "rdev", "blksize")

    def __init__(self, ino: int = 0, size: int = 0, blocks: int = 0, atime_ns: int = 0,
                 mtime_ns: int = 0, ctime_ns: int = 0, mode: int = 0, nlink: int = 1,
                 uid: int = 0, gid: int = 0, rdev: int = 0, blksize: int = 4096) -> None:
        self.ino = ino
        self.size = size
        self.blocks = blocks
        self.atime_ns = atime_ns
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.blksize = blksize

    @classmethod
    def from_stat(cls, st: os.stat_result, ino: Optional[int] = None) -> "Attr":
        # Once per GETATTR and LOOKUP: filling the slots directly skips __init__'s
        # argument binding (a third of the cost).
        a = _new_object(cls)
        a.ino = st.st_ino if ino is None else ino
        a.size = st.st_size
        a.blocks = st.st_blocks
        a.atime_ns = st.st_atime_ns
        a.mtime_ns = st.st_mtime_ns
        a.ctime_ns = st.st_ctime_ns
        a.mode = st.st_mode
        a.nlink = st.st_nlink
        a.uid = st.st_uid
        a.gid = st.st_gid
        a.rdev = st.st_rdev
        a.blksize = st.st_blksize
        return a

    def copy(self) -> "Attr":
        return Attr(*(getattr(self, f) for f in self.__slots__))

    @property
    def kind(self) -> int:
        return _stat.S_IFMT(self.mode)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attr) and all(
            getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __repr__(self) -> str:
        return "Attr(%s)" % ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)


class SetAttr(NamedTuple):
    """What a setattr changes; ``None`` leaves a field alone.

    ``atime_ns``/``mtime_ns`` may be ``NOW``.  ``ctime_ns`` is only set by callers that
    must preserve it (the kernel with writeback cache).
    """
    mode: Optional[int] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    size: Optional[int] = None
    atime_ns: Any = None
    mtime_ns: Any = None
    ctime_ns: Optional[int] = None
    kill_suidgid: bool = False


class Entry(NamedTuple):
    """What lookup/create/mkdir/... return: the (table-linked) inode and its attributes."""
    inode: Any  # xlators.core.inode.Inode
    attr: Attr


class DirEntry(NamedTuple):
    """One directory entry.  ``off`` is the cookie that resumes *after* this entry.

    ``entry`` is filled by readdirp (None for "." and ".." and by plain readdir).
    """
    name: bytes
    ino: int
    type: int  # a DT_* value (stat.S_IFMT(mode) >> 12)
    off: int
    entry: Optional[Entry] = None


class StatFs(NamedTuple):
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    bsize: int
    namelen: int
    frsize: int

    @classmethod
    def from_statvfs(cls, sv: os.statvfs_result) -> "StatFs":
        return cls(sv.f_blocks, sv.f_bfree, sv.f_bavail, sv.f_files, sv.f_ffree,
                   sv.f_bsize, sv.f_namemax, sv.f_frsize)


# lk commands
LK_GET = "getlk"
LK_SET = "setlk"
LK_SETW = "setlkw"

OFFSET_MAX = 0x7FFFFFFFFFFFFFFF  # "to end of file" for a lock's end


class Lock(NamedTuple):
    """A POSIX record lock or (``flock=True``) a BSD flock.

    ``type`` is fcntl.F_RDLCK / F_WRLCK / F_UNLCK; ``end`` is inclusive (OFFSET_MAX = to EOF);
    ``owner`` is the kernel's lock owner (per file table for POSIX, per open file for flock).
    """
    type: int
    start: int = 0
    end: int = OFFSET_MAX
    pid: int = 0
    owner: int = 0
    flock: bool = False


def dirent_type(mode: int) -> int:
    """DT_* value for a mode."""
    return _stat.S_IFMT(mode) >> 12


# -- what the kernel tells the storage about an open or a write ---------------------------
#: Open-flag bit set when the kernel opens a file to execute it (execve, uselib: Linux's
#: __FMODE_EXEC, 0o40, a bit no open(2) caller can pass).  The kernel has checked execute
#: permission already; a storage may open such a file for reading even when the caller
#: may not read it (a mode-0711 program).
O_EXEC_OPEN = 0o40

#: ``frame.xdata`` key, true when the caller of a write, an ``O_TRUNC`` open or a
#: truncate lacks CAP_FSETID, so that the storage must clear set-user-ID and (when
#: group-execute is set) set-group-ID, as a local filesystem does.  Absent means "not
#: said": a storage then decides by the caller's uid.
KILL_SUIDGID = "kill-suidgid"
