"""xlators.core.stdlib_compat: what it fills in for PyPy 3.9 behaves as CPython's own.

On CPython nothing is filled in (checked); the C-library functions are compared with
``os``'s where cffi is importable (PyPy always; CPython only if installed)."""
from __future__ import annotations

import errno
import os
import sys

import pytest

from xlators.core import stdlib_compat


def test_cpython_gets_no_function_filled_in():
    """CPython 3.11 has every name; older CPythons lack a few constants and
    contextlib.aclosing, never one of os's functions."""
    if sys.implementation.name != "cpython":
        pytest.skip("PyPy's fill-ins are compared with os below")
    if sys.version_info >= (3, 11):
        assert stdlib_compat.FILLED == []
    older = {"contextlib.aclosing", "os.RWF_APPEND", "fcntl.F_SETPIPE_SZ",
             "fcntl.F_GETPIPE_SZ", "fcntl.F_OFD_GETLK", "fcntl.F_OFD_SETLK",
             "fcntl.F_OFD_SETLKW"}
    assert set(stdlib_compat.FILLED) <= older


@pytest.fixture
def libc():
    pytest.importorskip("cffi")
    return stdlib_compat._libc_functions()


def test_readv_writev_scatter_and_gather(libc):
    r, w = os.pipe()
    try:
        assert libc["writev"](w, [b"ab", memoryview(b"xcdef")[1:], bytearray(b"g")]) == 7
        first, rest = bytearray(3), bytearray(10)
        assert libc["readv"](r, [first, memoryview(rest)[2:]]) == 7
        assert (bytes(first), bytes(rest[2:6])) == (b"abc", b"defg")
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            libc["readv"](r, [first])
    finally:
        os.close(r)
        os.close(w)


def test_preadv_pwritev_at_offsets_and_copy_file_range(libc, tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    out = os.open(tmp_path / "g", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert libc["pwritev"](fd, [b"hello", b" world"], 2) == 11
        buf = bytearray(5)
        assert libc["preadv"](fd, [buf], 8) == 5 and buf == b"world"
        assert libc["preadv"](fd, [buf], 100) == 0
        assert libc["copy_file_range"](fd, out, 5, 2, 0) == 5
        assert os.pread(out, 16, 0) == b"hello"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0          # the offsets were explicit
        with pytest.raises(OSError) as bad:
            libc["preadv"](-1, [buf], 0)
        assert bad.value.errno == errno.EBADF
    finally:
        os.close(fd)
        os.close(out)


def test_link_follows_the_proc_fd_symlink(libc, tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    d = os.open(tmp_path, os.O_RDONLY)
    try:
        libc["link"](f"/proc/self/fd/{fd}", "b", dst_dir_fd=d)
        assert os.stat(tmp_path / "b").st_ino == os.stat(tmp_path / "a").st_ino
        with pytest.raises(FileExistsError):
            libc["link"](tmp_path / "a", tmp_path / "b")
    finally:
        os.close(fd)
        os.close(d)
