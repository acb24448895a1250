"""Raw Linux system calls for storage/posix that the ``os`` module lacks.

Per-thread credentials (setfsuid/setfsgid and the raw setgroups system call, which
changes only the calling thread, unlike glibc's setgroups), renameat2, fallocate,
faccessat2, fchownat and utimensat on O_PATH descriptors (AT_EMPTY_PATH), and the
octal/percent-or-size option parsers.  Only storage/posix uses this module.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
from typing import Any, Optional

from xlators.core.errors import FopError as _FopError

__all__ = [
    "Creds", "renameat2", "fallocate", "faccessat", "fchown_empty", "utimens_empty",
    "parse_octal", "parse_reserve", "process_umask", "AT_EMPTY_PATH", "UTIME_NOW",
    "UTIME_OMIT", "lookup_at", "mkdir_at", "mknod_at", "symlink_at", "link_at", "rename_at",
    "unlink_at", "rmdir_at", "readlink_fd", "stat_at", "check_name",
]

_libc = ctypes.CDLL(None, use_errno=True)

# System call numbers: credentials, renameat2, faccessat2.
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123, "renameat2": 316,
               "faccessat2": 439},
    "aarch64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152, "renameat2": 276,
                "faccessat2": 439},
}
_NR = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EACCESS = 0x200
AT_EMPTY_PATH = 0x1000
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_setfsuid = _libc.setfsuid
_setfsuid.argtypes = [ctypes.c_uint]
_setfsuid.restype = ctypes.c_int
_setfsgid = _libc.setfsgid
_setfsgid.argtypes = [ctypes.c_uint]
_setfsgid.restype = ctypes.c_int
_NO_ID = 0xFFFFFFFF  # (uid_t)-1: query without changing

_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int

_fchownat = _libc.fchownat
_fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
_fchownat.restype = ctypes.c_int


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_utimensat = _libc.utimensat
_utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_utimensat.restype = ctypes.c_int

_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


def _fail(what: str = "") -> OSError:
    e = ctypes.get_errno()
    return OSError(e, os.strerror(e))


def renameat2(olddir: int, old: bytes, newdir: int, new: bytes, flags: int) -> None:
    """renameat2(2): flags RENAME_NOREPLACE (1), RENAME_EXCHANGE (2), RENAME_WHITEOUT (4)."""
    if _renameat2 is not None:
        r = _renameat2(olddir, old, newdir, new, flags)
    else:  # pragma: no cover - glibc older than 2.28
        r = _syscall(_NR["renameat2"], ctypes.c_int(olddir), ctypes.c_char_p(old),
                     ctypes.c_int(newdir), ctypes.c_char_p(new), ctypes.c_uint(flags))
    if r != 0:
        raise _fail()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with any mode (keep-size, punch-hole, zero-range, ...)."""
    if _fallocate(fd, mode, offset, length) != 0:
        raise _fail()


def faccessat(fd: int, mask: int) -> None:
    """faccessat2(fd, "", mask, AT_EACCESS|AT_EMPTY_PATH): checks with the calling thread's
    filesystem credentials (plain access() would use the real uid)."""
    r = _syscall(_NR["faccessat2"], ctypes.c_int(fd), ctypes.c_char_p(b""),
                 ctypes.c_int(mask), ctypes.c_int(AT_EACCESS | AT_EMPTY_PATH))
    if r != 0:
        raise _fail()


def fchown_empty(fd: int, uid: Optional[int], gid: Optional[int]) -> None:
    """Change the owner of what an O_PATH fd refers to (a symlink itself, never its target)."""
    u = _NO_ID if uid is None or uid < 0 else uid
    g = _NO_ID if gid is None or gid < 0 else gid
    if _fchownat(fd, b"", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0:
        raise _fail()


def _ts(value: object) -> tuple[int, int]:
    if value is None:
        return 0, UTIME_OMIT
    if value == "now":
        return 0, UTIME_NOW
    sec, nsec = divmod(int(value), 1_000_000_000)  # type: ignore[call-overload]
    return sec, nsec


def utimens_empty(fd: int, atime: object, mtime: object) -> None:
    """utimensat(fd, "", times, AT_EMPTY_PATH): times are ns, None (leave) or "now"."""
    times = (_Timespec * 2)(_Timespec(*_ts(atime)), _Timespec(*_ts(mtime)))
    if _utimensat(fd, b"", times, AT_EMPTY_PATH) != 0:
        raise _fail()


_O_LOOKUP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_SLASH = ord("/")


def check_name(name: Any) -> bytes:
    """A name a modifying fop may use: not empty, no '/', no NUL, not '.' or '..'."""
    if isinstance(name, str):
        name = os.fsencode(name)
    # ``47 in name``, not ``b"/" in name``: bytes.__contains__ tries its argument as an
    # integer first, and a bytes argument costs a TypeError raised and cleared each time
    if not name or _SLASH in name or 0 in name or name == b"." or name == b"..":
        raise _FopError(errno.EINVAL, f"invalid name {name!r}")
    return name


# -- *at() wrappers with positional arguments (for credential switching and threads) --
def stat_at(pfd: int, name: bytes) -> os.stat_result:
    return os.stat(name, dir_fd=pfd, follow_symlinks=False)


def lookup_at(pfd: int, name: bytes) -> tuple[int, os.stat_result]:
    fd = os.open(name, _O_LOOKUP, 0, dir_fd=pfd)
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def mkdir_at(pfd: int, name: bytes, perm: int, fix: Any) -> tuple[int, os.stat_result]:
    """mkdir, then an O_PATH descriptor and stat of the new directory, its mode fixed
    by ``fix`` (posix_entry's _new_mode; None: nothing to fix)."""
    os.mkdir(name, perm, dir_fd=pfd)
    fd, st = lookup_at(pfd, name)
    return fd, st if fix is None else fix(fd, st, perm)


def mknod_at(pfd: int, name: bytes, mode: int, rdev: int, fix: Any):
    os.mknod(name, mode, rdev, dir_fd=pfd)
    fd, st = lookup_at(pfd, name)
    return fd, st if fix is None else fix(fd, st, mode & 0o7777)


def symlink_at(pfd: int, name: bytes, target: bytes):
    os.symlink(target, name, dir_fd=pfd)
    return lookup_at(pfd, name)


def link_at(fd: int, npfd: int, name: bytes) -> None:
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=npfd, follow_symlinks=True)


def rename_at(opfd: int, old: bytes, npfd: int, new: bytes, flags: int) -> None:
    if flags:
        renameat2(opfd, old, npfd, new, flags)
    else:
        os.rename(old, new, src_dir_fd=opfd, dst_dir_fd=npfd)


def readlink_fd(fd: int) -> bytes:
    return os.readlink(b"", dir_fd=fd)


def unlink_at(pfd: int, name: bytes) -> None:
    os.unlink(name, dir_fd=pfd)


def rmdir_at(pfd: int, name: bytes) -> None:
    os.rmdir(name, dir_fd=pfd)


class Creds:
    """Switch the calling thread's filesystem identity (fsuid, fsgid, groups) and back.

    The kernel then checks permissions as for the caller and gives new files the caller's
    owner; switching fsuid away from 0 drops CAP_DAC_OVERRIDE, CAP_FOWNER and the other
    filesystem capabilities of the thread until it is switched back.  Only the calling
    thread changes: the raw system calls are used, never glibc's process-wide setgroups.
    setfsuid/setfsgid report no error, so each new id is verified once (a uid that cannot
    be taken, e.g. unmapped in a user namespace, fails the operation with EPERM instead
    of silently running it as the daemon).
    """

    def __init__(self) -> None:
        self.base_uid = _setfsuid(_NO_ID)
        self.base_gid = _setfsgid(_NO_ID)
        self.base_groups = tuple(os.getgroups())
        self._base_arr = self._array(self.base_groups)
        self._arrays: dict[tuple[int, ...], object] = {}
        self._ok_uids: set[int] = {self.base_uid}
        self._ok_gids: set[int] = {self.base_gid}

    @staticmethod
    def _array(groups: tuple[int, ...]):
        return (ctypes.c_uint * len(groups))(*groups) if groups else None

    def become(self, uid: int, gid: int, groups: Optional[tuple[int, ...]]) -> int:
        """Take on uid/gid/groups (groups None: leave them); returns a token for restore()."""
        token = 0
        if groups is not None and type(groups) is not tuple:
            groups = tuple(groups)
        try:
            if groups is not None and groups != self.base_groups:
                arr = self._arrays.get(groups)
                if arr is None:
                    if len(self._arrays) > 1024:
                        self._arrays.clear()
                    arr = self._arrays[groups] = self._array(groups)
                if _syscall(_NR["setgroups"], ctypes.c_int(len(groups)), arr) != 0:
                    raise _fail()
                token |= 4
            if gid != self.base_gid:
                _setfsgid(gid)
                token |= 2
                if gid not in self._ok_gids:
                    if _setfsgid(_NO_ID) != gid:
                        raise OSError(errno.EPERM, f"cannot take gid {gid}")
                    self._ok_gids.add(gid)
            if uid != self.base_uid:
                _setfsuid(uid)
                token |= 1
                if uid not in self._ok_uids:
                    if _setfsuid(_NO_ID) != uid:
                        raise OSError(errno.EPERM, f"cannot take uid {uid}")
                    self._ok_uids.add(uid)
        except BaseException:
            self.restore(token)
            raise
        return token

    def restore(self, token: int) -> None:
        if token & 1:
            _setfsuid(self.base_uid)
        if token & 2:
            _setfsgid(self.base_gid)
        if token & 4:
            _syscall(_NR["setgroups"], ctypes.c_int(len(self.base_groups)), self._base_arr)


def parse_octal(text: str) -> int:
    """A permission mask: octal digits as GlusterFS writes them ("0777", "755", "0o700")."""
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            return int(t, 16)
        return int(t[2:] if t.startswith("0o") else t, 8)
    except ValueError:
        raise ValueError("not an octal mode (like 0755)") from None


def parse_reserve(text: str) -> tuple[str, float]:
    """GlusterFS's percent-or-size: "1" or "1%" = percent of the disk, "10GB" = bytes."""
    from xlators.core.options import parse_percent, parse_size
    t = text.strip()
    if t.endswith("%") or t.replace(".", "", 1).isdigit():
        return ("percent", parse_percent(t))
    return ("size", float(parse_size(t)))


def process_umask() -> int:
    """The process umask, read without changing it."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # pragma: no cover - no /proc
    os.umask(old)
    return old
