"""Our own ctypes binding to libgfapi (GlusterFS's client library), GFAPI_6.0 prototypes.

The third-party Python bindings are unusable (they fail to import on current Python and
bind the pre-6.0 prototypes of ``glfs_pwrite``, ``glfs_fsync``, ``glfs_ftruncate``, ...,
which since GlusterFS 6 take extra ``struct glfs_stat`` pointers: the old argument lists
corrupt memory).  The prototypes here are those of ``api/src/glfs.h`` and
``api/src/glfs-handles.h`` as the library's default symbol versions export them
(``glfs_pread@@GFAPI_6.0``, ``glfs_h_lookupat@@GFAPI_3.7.4``, ...).

Checked at import: every symbol is present, and the struct layouts used here (``struct
stat``, ``struct statvfs``, ``struct flock``, ``struct dirent``) are the platform's: a
``stat``/``statvfs`` of ``/`` through libc with these structures must agree with
Python's ``os`` module.  When ``libgfapi.so.0`` is missing, importing raises
:class:`GfapiMissing` whose message names the Debian package to install.

Every function blocks its thread (``ctypes.CDLL`` releases the GIL during the call) and
reports errors through ``errno``: :func:`check` and :func:`check_ptr` turn a failure into
``OSError``.  Credentials (``glfs_setfsuid``/``setfsgid``/``setfsgroups``) are per thread.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct as _struct
import threading
from ctypes import (POINTER, Structure, c_char, c_char_p, c_int, c_int64,
                    c_long, c_short, c_size_t, c_ssize_t, c_ubyte, c_uint, c_uint16,
                    c_uint32, c_uint64, c_ulong, c_void_p)
from typing import Any

LIBRARY = "libgfapi.so.0"
DEBIAN_PACKAGE = "libgfapi0"       # pulled in by glusterfs-client / glusterfs-server


class GfapiMissing(ImportError):
    """libgfapi cannot be loaded or is not the version this binding speaks."""


# -- structures ---------------------------------------------------------------------------
class Timespec(Structure):
    _fields_ = [("tv_sec", c_long), ("tv_nsec", c_long)]


class Stat(Structure):
    """``struct stat`` of x86_64 / aarch64-LP64 glibc (checked at import)."""
    _fields_ = [("st_dev", c_uint64), ("st_ino", c_uint64), ("st_nlink", c_uint64),
                ("st_mode", c_uint32), ("st_uid", c_uint32), ("st_gid", c_uint32),
                ("_pad0", c_int), ("st_rdev", c_uint64), ("st_size", c_int64),
                ("st_blksize", c_int64), ("st_blocks", c_int64), ("st_atim", Timespec),
                ("st_mtim", Timespec), ("st_ctim", Timespec), ("_reserved", c_int64 * 3)]


class StatVfs(Structure):
    _fields_ = [("f_bsize", c_ulong), ("f_frsize", c_ulong), ("f_blocks", c_uint64),
                ("f_bfree", c_uint64), ("f_bavail", c_uint64), ("f_files", c_uint64),
                ("f_ffree", c_uint64), ("f_favail", c_uint64), ("f_fsid", c_ulong),
                ("f_flag", c_ulong), ("f_namemax", c_ulong), ("_spare", c_int * 6)]


class Flock(Structure):
    _fields_ = [("l_type", c_short), ("l_whence", c_short), ("l_start", c_int64),
                ("l_len", c_int64), ("l_pid", c_int)]


class Dirent(Structure):
    _fields_ = [("d_ino", c_uint64), ("d_off", c_int64), ("d_reclen", c_uint16),
                ("d_type", c_ubyte), ("d_name", c_char * 256)]


class GlfsStat(Structure):
    """``struct glfs_stat`` (GFAPI_6.0's pre/post attributes; passed as NULL here)."""
    _fields_ = [("glfs_st_mask", c_uint64), ("glfs_st_attributes", c_uint64),
                ("glfs_st_attributes_mask", c_uint64), ("glfs_st_atime", Timespec),
                ("glfs_st_btime", Timespec), ("glfs_st_ctime", Timespec),
                ("glfs_st_mtime", Timespec), ("glfs_st_ino", c_uint64),
                ("glfs_st_size", c_int64), ("glfs_st_blocks", c_int64),
                ("glfs_st_rdev_major", c_uint32), ("glfs_st_rdev_minor", c_uint32),
                ("glfs_st_dev_major", c_uint32), ("glfs_st_dev_minor", c_uint32),
                ("glfs_st_blksize", c_int64), ("glfs_st_nlink", c_uint64),
                ("glfs_st_uid", c_uint32), ("glfs_st_gid", c_uint32),
                ("glfs_st_mode", c_uint32)]


#: ``struct stat``'s fields as one unpack (x86_64 / aarch64-LP64, the layout of
#: :class:`Stat`): dev, ino, nlink, mode, uid, gid, (pad), rdev, size, blksize, blocks,
#: atime s/ns, mtime s/ns, ctime s/ns.  One ``unpack_from`` costs less than reading the
#: structure's fields one by one (each a descriptor, each timespec a new object).
STAT_STRUCT = _struct.Struct("<QQQIIIiQqqqqqqqqq")


EXPECTED_SIZES = {Stat: 144, StatVfs: 112, Flock: 32, Dirent: 280, Timespec: 16,
                  GlfsStat: 160}

# glfs-handles.h
HANDLE_LENGTH = 16
SET_ATTR_MODE, SET_ATTR_UID, SET_ATTR_GID = 0x1, 0x2, 0x4
SET_ATTR_SIZE, SET_ATTR_ATIME, SET_ATTR_MTIME = 0x8, 0x10, 0x20
UP_NLINK, UP_MODE, UP_OWN, UP_SIZE, UP_TIMES, UP_ATIME = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
UP_PERM, UP_RENAME, UP_FORGET, UP_PARENT_TIMES = 0x40, 0x80, 0x100, 0x200
# glfs.h
EVENT_INODE_INVALIDATE = 0x1
UPCALL_INODE_INVALIDATE = 1
XREADDIRP_STAT, XREADDIRP_HANDLE = 0x1, 0x2

VOIDP = c_void_p
P_STAT = POINTER(Stat)

# name: (restype, argtypes); the GFAPI_6.0 forms where the prototype changed.
PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "glfs_new": (VOIDP, [c_char_p]),
    "glfs_set_volfile_server": (c_int, [VOIDP, c_char_p, c_char_p, c_int]),
    "glfs_set_volfile": (c_int, [VOIDP, c_char_p]),
    "glfs_set_logging": (c_int, [VOIDP, c_char_p, c_int]),
    "glfs_set_xlator_option": (c_int, [VOIDP, c_char_p, c_char_p, c_char_p]),
    "glfs_init": (c_int, [VOIDP]),
    "glfs_fini": (c_int, [VOIDP]),
    "glfs_free": (None, [VOIDP]),
    "glfs_get_volumeid": (c_int, [VOIDP, c_char_p, c_size_t]),
    "glfs_setfsuid": (c_int, [c_uint]),
    "glfs_setfsgid": (c_int, [c_uint]),
    "glfs_setfsgroups": (c_int, [c_size_t, POINTER(c_uint)]),
    # handles
    "glfs_h_lookupat": (VOIDP, [VOIDP, VOIDP, c_char_p, P_STAT, c_int]),
    "glfs_h_creat": (VOIDP, [VOIDP, VOIDP, c_char_p, c_int, c_uint, P_STAT]),
    "glfs_h_creat_open": (VOIDP, [VOIDP, VOIDP, c_char_p, c_int, c_uint, P_STAT,
                                  POINTER(VOIDP)]),
    "glfs_h_mkdir": (VOIDP, [VOIDP, VOIDP, c_char_p, c_uint, P_STAT]),
    "glfs_h_mknod": (VOIDP, [VOIDP, VOIDP, c_char_p, c_uint, c_uint64, P_STAT]),
    "glfs_h_symlink": (VOIDP, [VOIDP, VOIDP, c_char_p, c_char_p, P_STAT]),
    "glfs_h_unlink": (c_int, [VOIDP, VOIDP, c_char_p]),
    "glfs_h_close": (c_int, [VOIDP]),
    "glfs_h_truncate": (c_int, [VOIDP, VOIDP, c_int64]),
    "glfs_h_stat": (c_int, [VOIDP, VOIDP, P_STAT]),
    "glfs_h_getattrs": (c_int, [VOIDP, VOIDP, P_STAT]),
    "glfs_h_setattrs": (c_int, [VOIDP, VOIDP, P_STAT, c_int]),
    "glfs_h_statfs": (c_int, [VOIDP, VOIDP, POINTER(StatVfs)]),
    "glfs_h_getxattrs": (c_int, [VOIDP, VOIDP, c_char_p, VOIDP, c_size_t]),
    "glfs_h_setxattrs": (c_int, [VOIDP, VOIDP, c_char_p, VOIDP, c_size_t, c_int]),
    "glfs_h_removexattrs": (c_int, [VOIDP, VOIDP, c_char_p]),
    "glfs_h_readlink": (c_int, [VOIDP, VOIDP, VOIDP, c_size_t]),
    "glfs_h_link": (c_int, [VOIDP, VOIDP, VOIDP, c_char_p]),
    "glfs_h_rename": (c_int, [VOIDP, VOIDP, c_char_p, VOIDP, c_char_p]),
    "glfs_h_extract_handle": (c_ssize_t, [VOIDP, VOIDP, c_int]),
    "glfs_h_create_from_handle": (VOIDP, [VOIDP, VOIDP, c_int, P_STAT]),
    "glfs_h_opendir": (VOIDP, [VOIDP, VOIDP]),
    "glfs_h_open": (VOIDP, [VOIDP, VOIDP, c_int]),
    "glfs_h_access": (c_int, [VOIDP, VOIDP, c_int]),
    "glfs_object_copy": (VOIDP, [VOIDP]),
    # file descriptors (GFAPI_6.0: pre/post struct glfs_stat pointers)
    "glfs_close": (c_int, [VOIDP]),
    "glfs_dup": (VOIDP, [VOIDP]),
    "glfs_get_volfile": (c_ssize_t, [VOIDP, VOIDP, c_size_t]),
    "glfs_fstat": (c_int, [VOIDP, P_STAT]),
    "glfs_pread": (c_ssize_t, [VOIDP, VOIDP, c_size_t, c_int64, c_int, VOIDP]),
    "glfs_pwrite": (c_ssize_t, [VOIDP, VOIDP, c_size_t, c_int64, c_int, VOIDP, VOIDP]),
    "glfs_fsync": (c_int, [VOIDP, VOIDP, VOIDP]),
    "glfs_fdatasync": (c_int, [VOIDP, VOIDP, VOIDP]),
    "glfs_ftruncate": (c_int, [VOIDP, c_int64, VOIDP, VOIDP]),
    "glfs_fallocate": (c_int, [VOIDP, c_int, c_int64, c_size_t]),
    "glfs_discard": (c_int, [VOIDP, c_int64, c_size_t]),
    "glfs_zerofill": (c_int, [VOIDP, c_int64, c_int64]),
    "glfs_lseek": (c_int64, [VOIDP, c_int64, c_int]),
    "glfs_copy_file_range": (c_ssize_t, [VOIDP, POINTER(c_int64), VOIDP, POINTER(c_int64),
                                         c_size_t, c_uint, VOIDP, VOIDP, VOIDP]),
    "glfs_posix_lock": (c_int, [VOIDP, c_int, POINTER(Flock)]),
    "glfs_fd_set_lkowner": (c_int, [VOIDP, VOIDP, c_int]),
    "glfs_fgetxattr": (c_ssize_t, [VOIDP, c_char_p, VOIDP, c_size_t]),
    "glfs_fsetxattr": (c_int, [VOIDP, c_char_p, VOIDP, c_size_t, c_int]),
    "glfs_flistxattr": (c_ssize_t, [VOIDP, VOIDP, c_size_t]),
    "glfs_fremovexattr": (c_int, [VOIDP, c_char_p]),
    # directories (glfs_readdir_r: names only, the bricks' READDIR; the readdirplus
    # forms ask the bricks for READDIRP, a stat and a gfid of every entry)
    "glfs_readdir_r": (c_int, [VOIDP, POINTER(Dirent), POINTER(POINTER(Dirent))]),
    "glfs_readdirplus_r": (c_int, [VOIDP, P_STAT, POINTER(Dirent),
                                   POINTER(POINTER(Dirent))]),
    "glfs_xreaddirplus_r": (c_int, [VOIDP, c_uint32, POINTER(VOIDP), POINTER(Dirent),
                                    POINTER(POINTER(Dirent))]),
    "glfs_xreaddirplus_get_stat": (P_STAT, [VOIDP]),
    "glfs_xreaddirplus_get_object": (VOIDP, [VOIDP]),
    "glfs_telldir": (c_long, [VOIDP]),
    "glfs_seekdir": (None, [VOIDP, c_long]),
    "glfs_closedir": (c_int, [VOIDP]),
    # upcalls
    "glfs_h_poll_upcall": (c_int, [VOIDP, POINTER(VOIDP)]),
    "glfs_upcall_unregister": (c_int, [VOIDP, c_uint32]),
    "glfs_upcall_get_reason": (c_int, [VOIDP]),
    "glfs_upcall_get_event": (VOIDP, [VOIDP]),
    "glfs_upcall_inode_get_object": (VOIDP, [VOIDP]),
    "glfs_upcall_inode_get_flags": (c_uint64, [VOIDP]),
    "glfs_upcall_inode_get_pobject": (VOIDP, [VOIDP]),
    "glfs_upcall_inode_get_oldpobject": (VOIDP, [VOIDP]),
}


class _Lib:
    """The loaded library: one attribute per prototype."""

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - typo guard
        raise AttributeError(f"gfapi_binding: no prototype for {name}")


def _load() -> _Lib:
    try:
        cdll = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as exc:
        # ctypes' message names the library and says why: "libgfapi.so.0: cannot open
        # shared object file: No such file or directory" when it is not installed
        raise GfapiMissing(f"libgfapi cannot be loaded ({exc}): install the Debian "
                           f"package {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE})"
                           ) from None
    lib = _Lib()
    missing = []
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(cdll, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
        setattr(lib, name, fn)
    if missing:
        raise GfapiMissing(f"{LIBRARY} lacks {', '.join(missing)}: GlusterFS >= 6.6 is "
                           f"needed (Debian package {DEBIAN_PACKAGE})")
    return lib


def _check_layouts() -> None:
    """The structures must be the platform's: compare a libc stat/statvfs with os's."""
    for cls, size in EXPECTED_SIZES.items():
        if ctypes.sizeof(cls) != size:
            raise GfapiMissing(f"gfapi_binding: sizeof({cls.__name__}) is "
                               f"{ctypes.sizeof(cls)}, expected {size}: unsupported "
                               "platform")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    st = Stat()
    sv = StatVfs()
    if libc.stat(b"/", ctypes.byref(st)) != 0 or libc.statvfs(b"/", ctypes.byref(sv)) != 0:
        raise GfapiMissing("gfapi_binding: cannot stat / to check struct layouts")
    ref = os.stat("/")
    got = (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
           st.st_mtim.tv_sec * 10**9 + st.st_mtim.tv_nsec, st.st_blksize)
    want = (ref.st_dev, ref.st_ino, ref.st_mode, ref.st_nlink, ref.st_uid, ref.st_gid,
            ref.st_mtime_ns, ref.st_blksize)
    if got != want:
        raise GfapiMissing(f"gfapi_binding: struct stat layout mismatch ({got} != {want})")
    vref = os.statvfs("/")
    if (sv.f_bsize, sv.f_blocks, sv.f_files, sv.f_namemax) != (
            vref.f_bsize, vref.f_blocks, vref.f_files, vref.f_namemax):
        raise GfapiMissing("gfapi_binding: struct statvfs layout mismatch")
    if STAT_STRUCT.size != Stat._reserved.offset:
        raise GfapiMissing("gfapi_binding: struct stat unpack format mismatch")
    if _struct.calcsize("hhqqi") + 4 != ctypes.sizeof(Flock):
        raise GfapiMissing("gfapi_binding: struct flock layout mismatch")


_check_layouts()
lib = _load()


# -- errors -------------------------------------------------------------------------------
def _raise(what: str) -> None:
    err = ctypes.get_errno() or 5      # EIO when the library forgot to set errno
    raise OSError(err, f"{what}: {os.strerror(err)}")


def check(rc: int, what: str) -> int:
    """``rc`` of an int-returning call: raise OSError(errno) when negative."""
    if rc < 0:
        _raise(what)
    return rc


def check_ptr(ptr: Any, what: str) -> int:
    """A pointer-returning call: raise OSError(errno) when NULL."""
    if not ptr:
        _raise(what)
    return ptr


# -- small helpers used by the translator ------------------------------------------------
_thread_creds = threading.local()


def set_credentials(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    """This thread's identity for the following calls (libgfapi keeps it per thread;
    the library calls are skipped when the thread has that identity already)."""
    creds = (uid, gid, groups)
    if getattr(_thread_creds, "value", None) == creds:
        return
    lib.glfs_setfsuid(uid)
    lib.glfs_setfsgid(gid)
    arr = (c_uint * max(1, len(groups)))(*groups)
    lib.glfs_setfsgroups(len(groups), arr)
    _thread_creds.value = creds


if not hasattr(ctypes, "pythonapi"):          # PyPy: no C API through ctypes
    raise GfapiMissing("storage/gfapi needs CPython (its reads fill a bytes object "
                       "through ctypes.pythonapi, which this interpreter lacks)")
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [c_void_p, c_ssize_t]
_bytes_data = ctypes.pythonapi.PyBytes_AsString
_bytes_data.restype = c_void_p
_bytes_data.argtypes = [ctypes.py_object]


def read_buffer(size: int) -> tuple[bytes, int]:
    """A new ``bytes`` of ``size`` bytes, not yet filled, and the address of its data:
    the buffer a read fills, so the data is copied once (by libgfapi) instead of into
    a zeroed ctypes buffer and again into a bytes.  The object is this caller's alone
    until it is returned (what C code building a bytes does); a short read returns a
    slice of the filled part, so unfilled bytes are never seen."""
    data = _new_bytes(None, size)
    return data, _bytes_data(data)


def extract_gfid(obj: int) -> bytes:
    buf = ctypes.create_string_buffer(HANDLE_LENGTH)
    check(lib.glfs_h_extract_handle(obj, buf, HANDLE_LENGTH), "glfs_h_extract_handle")
    return buf.raw


def stat_tuple(st: Stat) -> tuple:
    """(ino, size, blocks, atime_ns, mtime_ns, ctime_ns, mode, nlink, uid, gid, rdev,
    blksize) of a filled ``Stat``."""
    (_dev, ino, nlink, mode, uid, gid, _pad, rdev, size, blksize, blocks,
     a, an, m, mn, c, cn) = STAT_STRUCT.unpack_from(st)
    return (ino, size, blocks, a * 1_000_000_000 + an, m * 1_000_000_000 + mn,
            c * 1_000_000_000 + cn, mode, nlink, uid, gid, rdev, blksize)
