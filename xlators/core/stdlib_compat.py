"""The standard library's names that xlfs uses and PyPy 3.9 lacks, filled in.

``contextlib.aclosing`` (Python 3.10; the cluster translators' directory scans), and
the Linux names of ``os`` and ``fcntl``: xlfs calls ``os.readv``/``os.writev`` (the
FUSE transport), ``os.preadv``/``os.pwritev`` with ``RWF_NOWAIT``,
``os.copy_file_range`` and ``os.link(..., follow_symlinks=True)`` (storage/posix;
PyPy's ignores the flag), and opens with ``O_PATH``.  CPython 3.11 has all of them on
Linux (3.9 lacks ``aclosing`` and a few constants, never a function); PyPy 3.9
(Debian 12's ``pypy3`` 7.3.11) has none.  Importing this module (``xlators`` does,
first) adds what is missing to the ``os`` and ``fcntl`` modules themselves, so every
call site stays ``os.readv(...)``: on CPython 3.11 nothing is missing and nothing is
added, so nothing there changes.

The functions are the C library's, called through cffi (part of PyPy, and JIT-compiled
there); they raise OSError like CPython's and retry on EINTR as PEP 475 asks.  The
constants are Linux's generic values (x86-64, arm64, riscv64).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from typing import Any, Optional, Sequence

__all__ = ["FILLED"]

_OS_CONSTANTS = {
    "O_ACCMODE": 3,
    "O_PATH": 0o10000000,
    "O_TMPFILE": 0o20000000 | os.O_DIRECTORY,
    "RWF_HIPRI": 1, "RWF_DSYNC": 2, "RWF_SYNC": 4, "RWF_NOWAIT": 8, "RWF_APPEND": 16,
    "SEEK_DATA": 3, "SEEK_HOLE": 4,
}
_FCNTL_CONSTANTS = {
    "F_OFD_GETLK": 36, "F_OFD_SETLK": 37, "F_OFD_SETLKW": 38,
    "F_SETPIPE_SZ": 1031, "F_GETPIPE_SZ": 1032,
}
_OS_FUNCTIONS = ("readv", "writev", "preadv", "pwritev", "copy_file_range")

_AT_FDCWD, _AT_SYMLINK_FOLLOW = -100, 0x400

#: The names this module added, as "module.name" (empty on CPython).
FILLED: list = []


def _libc_functions() -> dict:
    """readv, writev, preadv, pwritev, copy_file_range and link (linkat) on the C library,
    through cffi, with os's signatures."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef("""
        struct iovec { void *iov_base; size_t iov_len; };
        ssize_t readv(int fd, const struct iovec *iov, int iovcnt);
        ssize_t writev(int fd, const struct iovec *iov, int iovcnt);
        ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, int64_t off, int flags);
        ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, int64_t off, int flags);
        ssize_t copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out,
                                size_t len, unsigned int flags);
        int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                   int flags);
    """)
    libc = ffi.dlopen(None)
    from_buffer, new = ffi.from_buffer, ffi.new

    def iovecs(buffers: Sequence[Any], writable: bool) -> tuple:
        views = [from_buffer(b, require_writable=writable) for b in buffers]
        iov = new("struct iovec[]", len(views))
        for i, v in enumerate(views):
            iov[i].iov_base = v
            iov[i].iov_len = len(v)
        return iov, views            # the views keep the buffers' memory pinned

    def checked(call: Any, *args: Any) -> int:
        while True:
            n = call(*args)
            if n >= 0:
                return n
            err = ffi.errno
            if err != 4:             # EINTR: retry (PEP 475)
                raise OSError(err, os.strerror(err))

    def readv(fd: int, buffers: Sequence[Any]) -> int:
        iov, _views = iovecs(buffers, True)
        return checked(libc.readv, fd, iov, len(_views))

    def writev(fd: int, buffers: Sequence[Any]) -> int:
        iov, _views = iovecs(buffers, False)
        return checked(libc.writev, fd, iov, len(_views))

    def preadv(fd: int, buffers: Sequence[Any], offset: int, flags: int = 0) -> int:
        iov, _views = iovecs(buffers, True)
        return checked(libc.preadv2, fd, iov, len(_views), offset, flags)

    def pwritev(fd: int, buffers: Sequence[Any], offset: int, flags: int = 0) -> int:
        iov, _views = iovecs(buffers, False)
        return checked(libc.pwritev2, fd, iov, len(_views), offset, flags)

    def copy_file_range(src: int, dst: int, count: int, offset_src: Optional[int] = None,
                        offset_dst: Optional[int] = None) -> int:
        off_in = ffi.NULL if offset_src is None else new("int64_t *", offset_src)
        off_out = ffi.NULL if offset_dst is None else new("int64_t *", offset_dst)
        return checked(libc.copy_file_range, src, off_in, dst, off_out, count, 0)

    def link(src: Any, dst: Any, *, src_dir_fd: Optional[int] = None,
             dst_dir_fd: Optional[int] = None, follow_symlinks: bool = True) -> None:
        checked(libc.linkat, _AT_FDCWD if src_dir_fd is None else src_dir_fd,
                os.fsencode(src), _AT_FDCWD if dst_dir_fd is None else dst_dir_fd,
                os.fsencode(dst), _AT_SYMLINK_FOLLOW if follow_symlinks else 0)

    return {"readv": readv, "writev": writev, "preadv": preadv, "pwritev": pwritev,
            "copy_file_range": copy_file_range, "link": link}


class _aclosing(contextlib.AbstractAsyncContextManager):
    """contextlib.aclosing as Python 3.10 has it: ``await thing.aclose()`` on exit."""

    def __init__(self, thing: Any) -> None:
        self.thing = thing

    async def __aenter__(self) -> Any:
        return self.thing

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.thing.aclose()


def _fill() -> None:
    if not hasattr(contextlib, "aclosing"):
        contextlib.aclosing = _aclosing
        FILLED.append("contextlib.aclosing")
    if not sys.platform.startswith("linux"):
        return
    for module, names in ((os, _OS_CONSTANTS), (fcntl, _FCNTL_CONSTANTS)):
        for name, value in names.items():
            if not hasattr(module, name):
                setattr(module, name, value)
                FILLED.append(f"{module.__name__}.{name}")
    missing = [name for name in _OS_FUNCTIONS if not hasattr(os, name)]
    if sys.implementation.name == "pypy":
        # PyPy 3.9's os.link calls link(2) even with follow_symlinks=True, so linking
        # /proc/self/fd/N (storage/posix's LINK) links the magic symlink: EXDEV.
        missing.append("link")
    if missing:
        functions = _libc_functions()
        for name in missing:
            setattr(os, name, functions[name])
            FILLED.append(f"os.{name}")


_fill()
