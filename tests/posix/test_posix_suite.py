"""POSIX behaviour suite (after pjdfstest and go-fuse's posixtest).

``CASES`` is a table of named checks; ``test_posix`` runs every one of them against every
filesystem under test: the raw backing directory (the oracle: each case passes there or
declares itself not applicable) and xlfs mounted from volfiles/local.vol, memory.vol and
write-behind.vol.  Each case gets its own fresh directory ``e.d``.

Run one case everywhere:   pytest tests/posix -k rename_exchange
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import pytest

from tests.posix.posixlib import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
                                  FALLOC_FL_ZERO_RANGE, RENAME_EXCHANGE, RENAME_NOREPLACE,
                                  UTIME_NOW, UTIME_OMIT, Target, as_user, errno_of, fallocate,
                                  getxattr_into, getxattr_size, in_children, listxattr_size,
                                  probe, renameat2, utimensat)

GiB = 1 << 30
TICK = 0.05      # longer than any timestamp granularity in play


@dataclass
class Env:
    t: Target
    d: Path

    def p(self, *parts: str) -> str:
        return os.path.join(str(self.d), *parts)

    def na(self, why: str) -> None:
        """This case does not apply to this target."""
        pytest.skip(f"not applicable to {self.t.name}: {why}")


CASES: dict[str, Callable[[Env], None]] = {}


def case(fn: Callable[[Env], None]) -> Callable[[Env], None]:
    assert fn.__name__ not in CASES
    CASES[fn.__name__] = fn
    return fn


# -- small helpers --------------------------------------------------------------------
def put(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def get(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed * 13 + (i >> 8)) & 0xFF for i in range(n))


def fails(err: int, fn: Callable, *args, **kw) -> None:
    got = errno_of(fn, *args, **kw)
    assert got == err, f"{fn.__name__}{args}: expected {errno.errorcode[err]}, got " \
                       f"{errno.errorcode.get(got, got) if got else 'success'}"


def _sysctl(name: str) -> int:
    try:
        with open(f"/proc/sys/{name}") as f:
            return int(f.read())
    except OSError:
        return 0


def user(fn: Callable, *args, uid: int = 1000, **kw):
    """``fn(*args, **kw)`` as another user: its errno (0 = success).  ``gid``,
    ``groups`` and ``umask`` go to as_user."""
    who = {k: kw.pop(k) for k in ("gid", "groups", "umask") if k in kw}
    return as_user(uid, partial(errno_of, fn, *args, **kw), **who)


# -- open / create ----------------------------------------------------------------------
@case
def open_excl(e: Env) -> None:
    f = e.p("f")
    put(f, b"x")
    fails(errno.EEXIST, os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.symlink("nowhere", e.p("dangling"))
    fails(errno.EEXIST, os.open, e.p("dangling"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert not os.path.lexists(e.p("nowhere"))
    os.mkdir(e.p("dir"))
    fails(errno.EEXIST, os.open, e.p("dir"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fd = os.open(e.p("new"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
    try:
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_size == 0 and st.st_nlink == 1
        os.write(fd, b"hello")
        assert os.pread(fd, 10, 0) == b"hello"
    finally:
        os.close(fd)
    assert get(e.p("new")) == b"hello"
    # O_CREAT without O_EXCL follows a dangling symlink and creates its target
    fd = os.open(e.p("dangling"), os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    assert os.path.isfile(e.p("nowhere"))
    # assorted open errors
    fails(errno.EISDIR, os.open, e.p("dir"), os.O_CREAT | os.O_WRONLY)
    fails(errno.EISDIR, os.open, e.p("dir"), os.O_WRONLY)
    fails(errno.ENOTDIR, os.open, f, os.O_RDONLY | os.O_DIRECTORY)
    fails(errno.ENOENT, os.open, e.p("missing"), os.O_RDONLY)
    fails(errno.ENOTDIR, os.open, e.p("f", "below"), os.O_RDONLY)
    fails(errno.ELOOP, os.open, e.p("dangling"), os.O_RDONLY | os.O_NOFOLLOW)


@case
def open_trunc(e: Env) -> None:
    f = e.p("f")
    put(f, pattern(10000))
    before = os.stat(f)
    reader = os.open(f, os.O_RDONLY)
    try:
        time.sleep(TICK)
        fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
        try:
            assert os.fstat(fd).st_size == 0
            assert os.write(fd, b"new") == 3
        finally:
            os.close(fd)
        after = os.stat(f)
        assert after.st_size == 3
        assert after.st_mtime_ns > before.st_mtime_ns
        assert after.st_ctime_ns > before.st_ctime_ns
        assert os.pread(reader, 100, 0) == b"new"        # an older fd sees the truncation
    finally:
        os.close(reader)
    assert get(f) == b"new"
    fd = os.open(f, os.O_RDWR | os.O_TRUNC)
    os.close(fd)
    assert os.stat(f).st_size == 0


@case
def append_single(e: Env) -> None:
    f = e.p("f")
    put(f, b"abc")
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"def")
        os.pwrite(fd, b"ghi", 0)         # Linux: O_APPEND wins over the offset
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"jkl")
    finally:
        os.close(fd)
    assert get(f) == b"abcdefghijkl"


@case
def append_concurrent(e: Env) -> None:
    f = e.p("f")
    put(f, b"")
    writers, records, size = 4, 150, 64

    def writer(k: int) -> None:
        fd = os.open(f, os.O_WRONLY | os.O_APPEND)
        try:
            for i in range(records):
                rec = f"{k:02d}:{i:05d}:".encode().ljust(size - 1, b"abcdefgh"[k:k + 1]) + b"\n"
                assert os.write(fd, rec) == size
        finally:
            os.close(fd)

    in_children([partial(writer, k) for k in range(writers)])
    data = get(f)
    assert len(data) == writers * records * size
    assert os.stat(f).st_size == len(data)
    seen: dict[int, list[int]] = {k: [] for k in range(writers)}
    for off in range(0, len(data), size):
        rec = data[off:off + size]
        k, i = int(rec[:2]), int(rec[3:8])
        assert rec == f"{k:02d}:{i:05d}:".encode().ljust(size - 1, b"abcdefgh"[k:k + 1]) + \
            b"\n", f"torn record at {off}: {rec!r}"
        seen[k].append(i)
    for k in range(writers):
        assert seen[k] == list(range(records)), f"writer {k}'s records out of order or lost"


# -- rename -----------------------------------------------------------------------------
@case
def rename_file_over_file(e: Env) -> None:
    a, b = e.p("a"), e.p("b")
    put(a, b"AAA")
    put(b, b"BBBB")
    ino = os.stat(a).st_ino
    fd = os.open(b, os.O_RDONLY)       # the replaced file lives on while open
    try:
        os.rename(a, b)
        assert not os.path.lexists(a)
        assert get(b) == b"AAA" and os.stat(b).st_ino == ino
        assert os.pread(fd, 10, 0) == b"BBBB"
    finally:
        os.close(fd)
    os.mkdir(e.p("sub"))
    os.rename(b, e.p("sub", "c"))          # across directories
    assert get(e.p("sub", "c")) == b"AAA" and sorted(os.listdir(e.d)) == ["sub"]
    os.rename(e.p("sub", "c"), e.p("sub", "c"))    # onto itself: nothing happens
    os.link(e.p("sub", "c"), e.p("sub", "d"))
    os.rename(e.p("sub", "c"), e.p("sub", "d"))    # two links of one file: nothing happens
    assert sorted(os.listdir(e.p("sub"))) == ["c", "d"]
    fails(errno.ENOENT, os.rename, e.p("missing"), e.p("x"))


@case
def rename_dir_over_empty_dir(e: Env) -> None:
    os.mkdir(e.p("x"))
    put(e.p("x", "inside"), b"1")
    os.mkdir(e.p("y"))
    assert os.stat(e.d).st_nlink == 4
    os.rename(e.p("x"), e.p("y"))
    assert not os.path.exists(e.p("x"))
    assert get(e.p("y", "inside")) == b"1"
    assert os.stat(e.d).st_nlink == 3
    os.mkdir(e.p("other"))
    os.rename(e.p("y"), e.p("other", "moved"))      # into another directory
    assert os.stat(e.d).st_nlink == 3
    assert os.stat(e.p("other")).st_nlink == 3
    assert get(e.p("other", "moved", "inside")) == b"1"
    assert os.stat(e.p("other", "moved", "..")).st_ino == os.stat(e.p("other")).st_ino


@case
def rename_dir_errors(e: Env) -> None:
    os.mkdir(e.p("x"))
    os.mkdir(e.p("full"))
    put(e.p("full", "f"), b"1")
    put(e.p("file"), b"2")
    fails(errno.ENOTEMPTY, os.rename, e.p("x"), e.p("full"))
    fails(errno.EISDIR, os.rename, e.p("file"), e.p("x"))
    fails(errno.ENOTDIR, os.rename, e.p("x"), e.p("file"))
    fails(errno.EINVAL, os.rename, e.p("full"), e.p("full", "sub"))
    assert sorted(os.listdir(e.d)) == ["file", "full", "x"]
    assert os.listdir(e.p("full")) == ["f"] and get(e.p("file")) == b"2"


@case
def rename_noreplace(e: Env) -> None:
    put(e.p("a"), b"a")
    put(e.p("b"), b"b")
    fails(errno.EEXIST, renameat2, e.p("a"), e.p("b"), RENAME_NOREPLACE)
    assert get(e.p("a")) == b"a" and get(e.p("b")) == b"b"
    renameat2(e.p("a"), e.p("c"), RENAME_NOREPLACE)
    assert sorted(os.listdir(e.d)) == ["b", "c"] and get(e.p("c")) == b"a"
    os.mkdir(e.p("dir"))
    fails(errno.EEXIST, renameat2, e.p("b"), e.p("dir"), RENAME_NOREPLACE)


@case
def rename_exchange(e: Env) -> None:
    put(e.p("a"), b"AAA")
    put(e.p("b"), b"B")
    ia, ib = os.stat(e.p("a")).st_ino, os.stat(e.p("b")).st_ino
    renameat2(e.p("a"), e.p("b"), RENAME_EXCHANGE)
    assert get(e.p("a")) == b"B" and get(e.p("b")) == b"AAA"
    assert os.stat(e.p("a")).st_ino == ib and os.stat(e.p("b")).st_ino == ia
    os.mkdir(e.p("dir"))
    put(e.p("dir", "inner"), b"i")
    renameat2(e.p("dir"), e.p("a"), RENAME_EXCHANGE)      # a directory with a file
    assert os.path.isdir(e.p("a")) and get(e.p("a", "inner")) == b"i"
    assert get(e.p("dir")) == b"B"
    os.mkdir(e.p("sub"))
    renameat2(e.p("a"), e.p("sub"), RENAME_EXCHANGE)
    assert get(e.p("sub", "inner")) == b"i" and os.listdir(e.p("a")) == []
    fails(errno.ENOENT, renameat2, e.p("b"), e.p("missing"), RENAME_EXCHANGE)
    fails(errno.EINVAL, renameat2, e.p("b"), e.p("dir"), RENAME_EXCHANGE | RENAME_NOREPLACE)


# -- links ------------------------------------------------------------------------------
@case
def hard_links(e: Env) -> None:
    f, g, h = e.p("f"), e.p("g"), e.p("h")
    put(f, b"data")
    st = os.stat(f)
    assert st.st_nlink == 1
    time.sleep(TICK)
    os.link(f, g)
    st2 = os.stat(f)
    assert st2.st_nlink == 2 and os.stat(g).st_ino == st.st_ino
    assert st2.st_ctime_ns > st.st_ctime_ns, "link must change ctime"
    os.link(g, h)
    assert os.stat(f).st_nlink == 3 and os.lstat(h).st_nlink == 3
    with open(h, "r+b") as fh:
        fh.write(b"DA")
    assert get(f) == b"DAta"
    time.sleep(TICK)
    os.unlink(g)
    st3 = os.stat(f)
    assert st3.st_nlink == 2
    assert st3.st_ctime_ns > st2.st_ctime_ns, "unlink must change the other links' ctime"
    fails(errno.EEXIST, os.link, f, h)
    fails(errno.ENOENT, os.link, e.p("missing"), e.p("x"))
    os.mkdir(e.p("dir"))
    fails(errno.EPERM, os.link, e.p("dir"), e.p("dirlink"))
    fd = os.open(f, os.O_RDWR)
    try:
        os.unlink(f)
        os.unlink(h)
        assert os.listdir(e.d) == ["dir"]
        assert os.fstat(fd).st_nlink == 0
        os.pwrite(fd, b"still", 0)
        assert os.pread(fd, 10, 0) == b"still"
    finally:
        os.close(fd)


@case
def symlinks(e: Env) -> None:
    put(e.p("target"), b"content")
    os.symlink("target", e.p("l"))
    assert os.readlink(e.p("l")) == "target"
    lst = os.lstat(e.p("l"))
    assert stat.S_ISLNK(lst.st_mode) and lst.st_size == len("target")
    assert stat.S_ISREG(os.stat(e.p("l")).st_mode)
    assert get(e.p("l")) == b"content"
    # dangling
    os.symlink("missing", e.p("dangling"))
    assert os.readlink(e.p("dangling")) == "missing"
    fails(errno.ENOENT, os.stat, e.p("dangling"))
    assert stat.S_ISLNK(os.lstat(e.p("dangling")).st_mode)
    # loops
    os.symlink("loop2", e.p("loop1"))
    os.symlink("loop1", e.p("loop2"))
    os.symlink("self", e.p("self"))
    for name in ("loop1", "loop2", "self"):
        fails(errno.ELOOP, os.stat, e.p(name))
        fails(errno.ELOOP, os.open, e.p(name), os.O_RDONLY)
    fails(errno.ELOOP, os.open, e.p("l"), os.O_RDONLY | os.O_NOFOLLOW)
    # relative through a subdirectory, absolute, long
    os.mkdir(e.p("sub"))
    os.symlink("../target", e.p("sub", "up"))
    assert get(e.p("sub", "up")) == b"content"
    os.symlink(e.p("target"), e.p("abs"))
    assert get(e.p("abs")) == b"content"
    long_target = "x/" * 2047 + "y"            # 4095 bytes: PATH_MAX - 1
    os.symlink(long_target, e.p("long"))
    assert os.readlink(e.p("long")) == long_target
    assert os.lstat(e.p("long")).st_size == 4095
    fails(errno.EINVAL, os.readlink, e.p("target"))
    fails(errno.EEXIST, os.symlink, "t", e.p("target"))
    # a symlink in a directory listing, and unlinking it leaves the target alone
    assert "l" in os.listdir(e.d)
    os.unlink(e.p("l"))
    assert get(e.p("target")) == b"content"


@case
def special_files(e: Env) -> None:
    os.mkfifo(e.p("fifo"), 0o640)
    st = os.lstat(e.p("fifo"))
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    os.mknod(e.p("chr"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    st = os.lstat(e.p("chr"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    os.mknod(e.p("reg"), stat.S_IFREG | 0o600)
    assert stat.S_ISREG(os.lstat(e.p("reg")).st_mode)
    kinds = {de.name: (de.is_dir(follow_symlinks=False), de.is_file(follow_symlinks=False),
                       de.is_symlink()) for de in os.scandir(e.d)}
    assert kinds == {"fifo": (False, False, False), "chr": (False, False, False),
                     "reg": (False, True, False)}


# -- permissions (non-root callers; default_permissions) ------------------------------
@case
def perm_denied(e: Env) -> None:
    secret = e.p("secret")
    put(secret, b"s", 0o600)
    os.chmod(secret, 0o600)
    assert user(os.open, secret, os.O_RDONLY) == errno.EACCES
    assert user(os.open, secret, os.O_WRONLY) == errno.EACCES
    assert user(os.truncate, secret, 0) == errno.EACCES
    put(e.p("public"), b"p")
    os.chmod(e.p("public"), 0o644)
    assert user(get, e.p("public")) == 0
    assert user(os.open, e.p("public"), os.O_RDWR) == errno.EACCES
    # e.d is root's 0755: no creating, removing or renaming in it
    assert user(os.open, e.p("new"), os.O_CREAT | os.O_WRONLY, 0o644) == errno.EACCES
    assert user(os.mkdir, e.p("newdir")) == errno.EACCES
    assert user(os.unlink, e.p("public")) == errno.EACCES
    assert user(os.rename, e.p("public"), e.p("renamed")) == errno.EACCES
    assert user(os.symlink, "x", e.p("sym")) == errno.EACCES
    # fs.protected_hardlinks: no linking to a file one may not write (before EACCES)
    assert user(os.link, e.p("public"), e.p("hl")) == (
        errno.EPERM if _sysctl("fs/protected_hardlinks") else errno.EACCES)
    # a directory without search permission for others
    os.mkdir(e.p("private"), 0o700)
    put(e.p("private", "f"), b"x")
    assert user(os.stat, e.p("private", "f")) == errno.EACCES
    assert user(os.listdir, e.p("private")) == errno.EACCES
    # metadata of someone else's file
    assert user(os.chmod, e.p("public"), 0o666) == errno.EPERM
    assert user(os.chown, e.p("public"), 1000, 1000) == errno.EPERM
    assert user(os.utime, e.p("public"), ns=(1, 1)) == errno.EPERM
    assert user(os.utime, e.p("public")) == errno.EACCES      # "now" needs write access
    os.chmod(e.p("public"), 0o666)
    assert user(os.utime, e.p("public")) == 0
    assert user(os.access, e.p("public"), os.X_OK) == 0      # access() answers, no errno
    assert not as_user(1000, os.access, e.p("public"), os.X_OK)
    assert as_user(1000, os.access, e.p("public"), os.W_OK)
    assert not os.path.exists(e.p("new")) and not os.path.exists(e.p("renamed"))
    assert get(secret) == b"s"


@case
def perm_owner_and_umask(e: Env) -> None:
    pub = e.p("pub")
    os.mkdir(pub)
    os.chmod(pub, 0o777)

    def make(name: str, mode: int) -> None:
        os.close(os.open(os.path.join(pub, name), os.O_CREAT | os.O_WRONLY, mode))

    as_user(1000, make, "f022", 0o666, umask=0o022)
    as_user(1000, make, "f077", 0o666, umask=0o077)
    as_user(1000, make, "f000", 0o777, umask=0)
    as_user(1000, os.mkdir, os.path.join(pub, "d022"), 0o777, umask=0o022)
    as_user(1000, os.symlink, "f022", os.path.join(pub, "sym"), umask=0o022)
    as_user(1000, os.mkfifo, os.path.join(pub, "fifo"), 0o666, umask=0o027)
    for name, mode in (("f022", 0o644), ("f077", 0o600), ("f000", 0o777), ("d022", 0o755),
                       ("fifo", 0o640)):
        st = os.lstat(os.path.join(pub, name))
        assert (st.st_uid, st.st_gid) == (1000, 1000), name
        assert stat.S_IMODE(st.st_mode) == mode, f"{name}: {stat.S_IMODE(st.st_mode):o}"
    assert os.lstat(os.path.join(pub, "sym")).st_uid == 1000
    # the new owner may now do what owners do; another user may not
    f = os.path.join(pub, "f022")
    assert user(os.chmod, f, 0o640) == 0
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o640
    assert user(os.chown, f, 1001, -1) == errno.EPERM
    assert user(os.chown, f, -1, 2000, groups=[2000]) == 0          # a group it is in
    assert os.stat(f).st_gid == 2000
    assert user(os.chown, f, -1, 3000, groups=[2000]) == errno.EPERM  # not a member
    assert user(os.chmod, f, 0o777, uid=1001) == errno.EPERM
    assert user(os.open, os.path.join(pub, "d022", "x"), os.O_CREAT | os.O_WRONLY,
                0o644, uid=1001) == errno.EACCES
    assert user(os.utime, f, ns=(5, 5)) == 0
    assert os.stat(f).st_mtime_ns == 5


@case
def perm_groups(e: Env) -> None:
    f = e.p("f")
    put(f, b"grp")
    os.chown(f, 0, 2000)
    os.chmod(f, 0o640)
    assert user(get, f, groups=[2000]) == 0
    assert user(get, f, gid=2000) == 0
    assert user(get, f) == errno.EACCES
    # the group class applies to members even when "other" would allow more
    os.chmod(f, 0o604)
    assert user(get, f, groups=[2000]) == errno.EACCES
    assert user(get, f) == 0
    # and the owner class applies to the owner alone
    os.chown(f, 1000, 2000)
    os.chmod(f, 0o074)
    assert user(get, f, groups=[2000]) == errno.EACCES
    assert user(get, f, uid=1001, groups=[2000]) == 0


@case
def perm_dir_bits(e: Env) -> None:
    # search without read: known names work, listing does not
    xo = e.p("xo")
    os.mkdir(xo, 0o711)
    os.chmod(xo, 0o711)
    put(os.path.join(xo, "known"), b"k")
    assert user(get, os.path.join(xo, "known")) == 0
    assert user(os.listdir, xo) == errno.EACCES
    # read without search: listing works, reaching an entry does not
    ro = e.p("ro")
    os.mkdir(ro)
    os.chmod(ro, 0o744)
    put(os.path.join(ro, "f"), b"f")
    assert as_user(1000, os.listdir, ro) == ["f"]
    assert user(os.stat, os.path.join(ro, "f")) == errno.EACCES
    # a directory moved to another parent must be writable itself (its ".." changes)
    pub = e.p("pub")
    os.mkdir(pub)
    os.chmod(pub, 0o777)
    os.mkdir(os.path.join(pub, "a"))
    os.mkdir(os.path.join(pub, "b"))
    os.mkdir(os.path.join(pub, "a", "rootdir"), 0o755)                 # root's
    assert user(os.rename, os.path.join(pub, "a", "rootdir"),
                os.path.join(pub, "a", "renamed")) == errno.EACCES   # a is root's 0755
    os.chmod(os.path.join(pub, "a"), 0o777)
    os.chmod(os.path.join(pub, "b"), 0o777)
    assert user(os.rename, os.path.join(pub, "a", "rootdir"),
                os.path.join(pub, "a", "renamed")) == 0              # same parent: fine
    assert user(os.rename, os.path.join(pub, "a", "renamed"),
                os.path.join(pub, "b", "moved")) == errno.EACCES     # new parent: its ".."
    os.chmod(os.path.join(pub, "a", "renamed"), 0o777)
    assert user(os.rename, os.path.join(pub, "a", "renamed"),
                os.path.join(pub, "b", "moved")) == 0
    assert os.stat(os.path.join(pub, "b", "moved", "..")).st_ino == \
        os.stat(os.path.join(pub, "b")).st_ino


@case
def perm_sticky(e: Env) -> None:
    t = e.p("t")
    os.mkdir(t)
    os.chmod(t, 0o1777)
    assert os.stat(t).st_mode & stat.S_ISVTX
    put(os.path.join(t, "a"), b"a")
    os.chown(os.path.join(t, "a"), 1000, 1000)
    os.chmod(os.path.join(t, "a"), 0o666)
    as_user(1001, put, os.path.join(t, "c"), b"c")
    assert user(os.unlink, os.path.join(t, "a"), uid=1001) == errno.EPERM
    assert user(os.rename, os.path.join(t, "a"), os.path.join(t, "z"), uid=1001) == errno.EPERM
    assert user(os.rename, os.path.join(t, "c"), os.path.join(t, "a"), uid=1001) == errno.EPERM
    assert user(get, os.path.join(t, "a"), uid=1001) == 0         # reading is fine
    assert user(os.rename, os.path.join(t, "a"), os.path.join(t, "b")) == 0   # the owner
    assert user(os.unlink, os.path.join(t, "b")) == 0
    os.chown(t, 1002, 1002)                                      # the directory's owner
    assert user(os.unlink, os.path.join(t, "c"), uid=1002) == 0
    as_user(1001, put, os.path.join(t, "d"), b"d")
    os.unlink(os.path.join(t, "d"))                                # root
    assert os.listdir(t) == []


@case
def perm_setgid_and_suid(e: Env) -> None:
    s = e.p("s")
    os.mkdir(s)
    os.chown(s, 0, 3000)
    os.chmod(s, 0o2777)
    as_user(1000, put, os.path.join(s, "f"), b"x")
    as_user(1000, os.mkdir, os.path.join(s, "sub"))
    assert os.stat(os.path.join(s, "f")).st_gid == 3000
    st = os.stat(os.path.join(s, "sub"))
    assert st.st_gid == 3000 and st.st_mode & stat.S_ISGID
    assert os.stat(os.path.join(s, "f")).st_uid == 1000
    # a write by someone other than the owner clears set-user-ID / set-group-ID
    w = e.p("w")
    put(w, b"0123")
    os.chmod(w, 0o6777)
    assert stat.S_IMODE(os.stat(w).st_mode) == 0o6777

    def write_it() -> None:
        fd = os.open(w, os.O_WRONLY)
        try:
            os.write(fd, b"ab")
        finally:
            os.close(fd)

    as_user(1000, write_it)
    assert stat.S_IMODE(os.stat(w).st_mode) == 0o777
    assert get(w) == b"ab23"


# -- attributes -------------------------------------------------------------------------
@case
def chmod_chown(e: Env) -> None:
    f = e.p("f")
    put(f, b"x")
    c0 = os.stat(f).st_ctime_ns
    time.sleep(TICK)
    os.chmod(f, 0o640)
    st = os.stat(f)
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_ctime_ns > c0
    os.chmod(f, 0o4755)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o4755
    os.chown(f, 1000, 1000)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert stat.S_IMODE(st.st_mode) == 0o755, "chown must clear set-user-ID"
    os.chown(f, -1, 2000)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1000, 2000)
    os.chmod(f, 0o2750)
    os.chown(f, 1001, -1)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o750, "chown must clear set-group-ID"
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o600)
        os.fchown(fd, 1002, 1003)
        st = os.fstat(fd)
        assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (1002, 1003)
    finally:
        os.close(fd)
    # directories keep set-group-ID across chown; symlinks are chowned themselves
    os.mkdir(e.p("dir"))
    os.chmod(e.p("dir"), 0o2775)
    os.chown(e.p("dir"), 1000, 1000)
    assert stat.S_IMODE(os.stat(e.p("dir")).st_mode) == 0o2775
    os.symlink("f", e.p("l"))
    os.lchown(e.p("l"), 1005, 1005)
    assert os.lstat(e.p("l")).st_uid == 1005 and os.stat(f).st_uid == 1002
    fails(errno.ENOENT, os.chmod, e.p("missing"), 0o600)


@case
def utimes(e: Env) -> None:
    f = e.p("f")
    put(f, b"x")
    os.utime(f, ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    # atime omitted, mtime set
    utimensat(f, (0, UTIME_OMIT), (3, 789))
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 3_000_000_789)
    # atime now, mtime omitted
    t0 = time.time_ns()
    utimensat(f, (0, UTIME_NOW), (0, UTIME_OMIT))
    st = os.stat(f)
    assert st.st_mtime_ns == 3_000_000_789
    assert abs(st.st_atime_ns - t0) < 5_000_000_000
    # both omitted: nothing changes
    c0 = st.st_ctime_ns
    time.sleep(TICK)
    utimensat(f, (0, UTIME_OMIT), (0, UTIME_OMIT))
    st2 = os.stat(f)
    assert (st2.st_atime_ns, st2.st_mtime_ns) == (st.st_atime_ns, st.st_mtime_ns)
    # both now (os.utime with no times); ctime follows
    os.utime(f)
    st = os.stat(f)
    now = time.time_ns()
    assert abs(st.st_mtime_ns - now) < 5_000_000_000 and st.st_ctime_ns > c0
    # times before 1970 and after 2038
    os.utime(f, ns=(-1_000_000_000 * 86400 * 365, 4_102_444_800_000_000_001))
    st = os.stat(f)
    assert st.st_atime_ns == -1_000_000_000 * 86400 * 365, st.st_atime_ns
    assert st.st_mtime_ns == 4_102_444_800_000_000_001, st.st_mtime_ns
    # on a symlink itself
    os.symlink("f", e.p("l"))
    utimensat(e.p("l"), (7, 0), (8, 0), follow=False)
    assert os.lstat(e.p("l")).st_mtime_ns == 8_000_000_000
    assert os.stat(f).st_mtime_ns == 4_102_444_800_000_000_001


@case
def timestamps(e: Env) -> None:
    f = e.p("f")
    put(f, b"0123456789")
    s0 = os.stat(f)
    time.sleep(TICK)
    fd = os.open(f, os.O_RDWR)
    try:
        os.pwrite(fd, b"ab", 3)
        s1 = os.fstat(fd)
        assert s1.st_mtime_ns > s0.st_mtime_ns and s1.st_ctime_ns > s0.st_ctime_ns
        time.sleep(TICK)
        assert os.pread(fd, 10, 0) == b"012ab56789"
        s2 = os.fstat(fd)
        assert (s2.st_mtime_ns, s2.st_ctime_ns) == (s1.st_mtime_ns, s1.st_ctime_ns), \
            "reading changes neither mtime nor ctime"
    finally:
        os.close(fd)
    assert os.stat(f).st_mtime_ns == s1.st_mtime_ns, "close without writing keeps mtime"
    time.sleep(TICK)
    os.chmod(f, 0o600)
    s3 = os.stat(f)
    assert s3.st_mtime_ns == s1.st_mtime_ns and s3.st_ctime_ns > s1.st_ctime_ns
    time.sleep(TICK)
    d0 = os.stat(e.d)
    os.rename(f, e.p("g"))
    s4 = os.stat(e.p("g"))
    assert s4.st_mtime_ns == s1.st_mtime_ns
    d1 = os.stat(e.d)
    assert d1.st_mtime_ns > d0.st_mtime_ns and d1.st_ctime_ns > d0.st_ctime_ns
    # utimes with explicit values survive a later read and close
    os.utime(e.p("g"), ns=(10**18, 10**18 + 1))
    assert get(e.p("g")) == b"012ab56789"
    assert os.stat(e.p("g")).st_mtime_ns == 10**18 + 1


@case
def truncate(e: Env) -> None:
    f = e.p("f")
    data = pattern(10000)
    put(f, data)
    m0 = os.stat(f).st_mtime_ns
    time.sleep(TICK)
    os.truncate(f, 4000)
    st = os.stat(f)
    assert st.st_size == 4000 and st.st_mtime_ns > m0
    assert get(f) == data[:4000]
    os.truncate(f, 20000)
    assert get(f) == data[:4000] + bytes(16000)
    fd = os.open(f, os.O_RDWR)
    try:
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_size == 100
        assert os.pread(fd, 200, 0) == data[:100]
        os.ftruncate(fd, 5 * GiB + 1)
        assert os.fstat(fd).st_size == 5 * GiB + 1
        assert os.pread(fd, 10, 5 * GiB - 9) == bytes(10)
        os.ftruncate(fd, 0)
        assert os.pread(fd, 10, 0) == b""
        fails(errno.EINVAL, os.ftruncate, fd, -1)
    finally:
        os.close(fd)
    assert os.stat(f).st_size == 0
    os.mkdir(e.p("dir"))
    fails(errno.EISDIR, os.truncate, e.p("dir"), 0)
    ro = os.open(f, os.O_RDONLY)
    try:
        fails(errno.EINVAL, os.ftruncate, ro, 10)
    finally:
        os.close(ro)


# -- data -------------------------------------------------------------------------------
@case
def sparse_beyond_4g(e: Env) -> None:
    f = e.p("f")
    off = 5 * GiB
    block = pattern(4096, 3)
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.pwrite(fd, b"head", 0) == 4
        assert os.pwrite(fd, block, off) == 4096
        st = os.fstat(fd)
        assert st.st_size == off + 4096
        assert st.st_blocks * 512 < 1 << 20, "the hole must not be allocated"
        assert os.pread(fd, 8192, 4096) == bytes(8192)
        assert os.pread(fd, 4096, 4 * GiB - 2048) == bytes(4096)      # across 4 GiB
        assert os.pread(fd, 4096, off) == block
        assert os.pread(fd, 8192, off - 4096) == bytes(4096) + block
        assert os.pread(fd, 4096, off + 4096) == b""
        assert os.pwrite(fd, b"X", (1 << 32) + 7) == 1                   # 32-bit wrap
        assert os.pread(fd, 1, 7) == b"\0"
        assert os.pread(fd, 3, (1 << 32) + 6) == b"\0X\0"
        # SEEK_DATA / SEEK_HOLE: the filesystem may report holes as data, never data as hole
        try:
            data = os.lseek(fd, 4096 * 4, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        else:
            assert data <= (1 << 32) + 7
            hole = os.lseek(fd, 0, os.SEEK_HOLE)
            assert 4 <= hole <= off + 4096
            assert os.lseek(fd, off + 10, os.SEEK_DATA) == off + 10
            assert os.lseek(fd, off, os.SEEK_HOLE) == off + 4096
            fails(errno.ENXIO, os.lseek, fd, off + 4096, os.SEEK_DATA)
            fails(errno.ENXIO, os.lseek, fd, off + 5000, os.SEEK_HOLE)
        assert os.lseek(fd, 0, os.SEEK_END) == off + 4096
    finally:
        os.close(fd)
    assert os.stat(f).st_size == off + 4096


@case
def fallocate_modes(e: Env) -> None:
    f = e.p("f")
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        why = probe(lambda: fallocate(fd, 0, 0, 4096))
        if why in (errno.EOPNOTSUPP, errno.ENOSYS):
            e.na("fallocate is not supported")
        assert why is None, os.strerror(why)
        # default mode: allocates and extends
        fallocate(fd, 0, 0, 1 << 20)
        st = os.fstat(fd)
        assert st.st_size == 1 << 20 and st.st_blocks * 512 >= 1 << 20
        assert os.pread(fd, 1 << 20, 0) == bytes(1 << 20)
        # KEEP_SIZE: allocates beyond EOF, the size stays
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
        st = os.fstat(fd)
        assert st.st_size == 1 << 20 and st.st_blocks * 512 >= 2 << 20
        # PUNCH_HOLE | KEEP_SIZE: zeros, size kept, blocks freed
        data = pattern(1 << 20, 1)
        os.pwrite(fd, data, 0)
        blocks = os.fstat(fd).st_blocks
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 65536, 131072)
        st = os.fstat(fd)
        assert st.st_size == 1 << 20 and st.st_blocks < blocks
        got = os.pread(fd, 1 << 20, 0)
        assert got == data[:65536] + bytes(131072) + data[196608:]
        fails(errno.EOPNOTSUPP, fallocate, fd, FALLOC_FL_PUNCH_HOLE, 0, 4096)
        # ZERO_RANGE: zeros inside, extends the file past EOF
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 1000, 3000)
        expect = bytearray(got)
        expect[1000:4000] = bytes(3000)
        assert os.pread(fd, 1 << 20, 0) == bytes(expect)
        fallocate(fd, FALLOC_FL_ZERO_RANGE, (1 << 20) - 100, 300)
        assert os.fstat(fd).st_size == (1 << 20) + 200
        assert os.pread(fd, 400, (1 << 20) - 200) == bytes(expect[-200:-100]) + bytes(300)
        fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (2 << 20), 4096)
        assert os.fstat(fd).st_size == (1 << 20) + 200
        fails(errno.EINVAL, fallocate, fd, 0, 0, 0)
    finally:
        os.close(fd)
    ro = os.open(f, os.O_RDONLY)
    try:
        fails(errno.EBADF, fallocate, ro, 0, 0, 4096)
    finally:
        os.close(ro)


@case
def mmap_shared(e: Env) -> None:
    f = e.p("f")
    size = 3 * mmap.PAGESIZE
    put(f, pattern(size))
    fd = os.open(f, os.O_RDWR)
    try:
        try:
            m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            if exc.errno == errno.ENODEV and not e.t.raw:
                e.na("FUSE direct I/O: no shared writable mappings")
            raise
        try:
            assert m[:] == pattern(size)
            m[100:110] = b"0123456789"
            m[size - 5:] = b"tail!"
            m.flush()                                       # msync(MS_SYNC)
            assert os.pread(fd, 10, 100) == b"0123456789"
        finally:
            m.close()
    finally:
        os.close(fd)
    expect = bytearray(pattern(size))
    expect[100:110] = b"0123456789"
    expect[size - 5:] = b"tail!"
    assert get(f) == bytes(expect)
    # read a file written with write() through a mapping
    g = e.p("g")
    data = pattern(50000, 9)
    put(g, data)
    with open(g, "rb") as fh:
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            assert len(m) == 50000 and m[:] == data
    # write() after mapping is visible in the mapping (one page cache)
    fd = os.open(g, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            os.pwrite(fd, b"XYZ", 4096)
            assert m[4096:4099] == b"XYZ"
        # a private mapping's writes stay private
        with mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[0:3] = b"prv"
        assert os.pread(fd, 3, 0) == data[:3]
    finally:
        os.close(fd)


@case
def concurrent_pwrite(e: Env) -> None:
    f = e.p("f")
    put(f, b"")
    procs, chunks, chunk = 4, 96, 3001          # unaligned: pages shared between writers

    def block(i: int) -> bytes:
        return bytes([(i * 31 + 7) & 0xFF]) * chunk

    def writer(k: int) -> None:
        fd = os.open(f, os.O_WRONLY)
        try:
            for i in range(k, chunks, procs):
                assert os.pwrite(fd, block(i), i * chunk) == chunk
            os.fsync(fd)
        finally:
            os.close(fd)

    in_children([partial(writer, k) for k in range(procs)])
    data = get(f)
    assert len(data) == chunks * chunk
    for i in range(chunks):
        assert data[i * chunk:(i + 1) * chunk] == block(i), f"chunk {i} is wrong"


# -- locks ------------------------------------------------------------------------------
_FLOCK = "hh4xqqi4x"          # struct flock on 64-bit Linux: type, whence, start, len, pid


def _getlk(fd: int, start: int, length: int) -> tuple[int, int, int, int]:
    """F_GETLK for a write lock: (type, start, len, pid) of a conflicting lock."""
    import fcntl
    import struct
    got = fcntl.fcntl(fd, fcntl.F_GETLK,
                      struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    t, _, s, ln, pid = struct.unpack(_FLOCK, got)
    return t, s, ln, pid


@case
def locks(e: Env) -> None:
    import fcntl
    f = e.p("f")
    put(f, bytes(100))
    me = os.getpid()
    fd = os.open(f, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)              # bytes 0..9
        fcntl.lockf(fd, fcntl.LOCK_SH, 10, 50)             # bytes 50..59, shared

        def other() -> list:
            cfd = os.open(f, os.O_RDWR)
            try:
                out = [errno_of(fcntl.lockf, cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 5),
                       errno_of(fcntl.lockf, cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10),
                       errno_of(fcntl.lockf, cfd, fcntl.LOCK_SH | fcntl.LOCK_NB, 5, 50),
                       errno_of(fcntl.lockf, cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 50),
                       _getlk(cfd, 0, 100), _getlk(cfd, 20, 10)]
                return out
            finally:
                os.close(cfd)

        res = as_user(0, other)
        assert res[0] in (errno.EAGAIN, errno.EACCES), res
        assert res[1:3] == [0, 0], res
        assert res[3] in (errno.EAGAIN, errno.EACCES), res
        assert res[4] == (fcntl.F_WRLCK, 0, 10, me), res
        assert res[5][0] == fcntl.F_UNLCK, res
        # our own locks never conflict with us
        assert _getlk(fd, 0, 100)[0] == fcntl.F_UNLCK
        # closing any descriptor of the file drops the process's POSIX locks
        os.close(os.open(f, os.O_RDONLY))
        assert as_user(0, lambda: _getlk(os.open(f, os.O_RDWR), 0, 100))[0] == fcntl.F_UNLCK
        # a blocking lock waits for the holder
        fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)                # the whole file
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                cfd = os.open(f, os.O_RDWR)
                os.write(w, b"s")
                t0 = time.monotonic()
                fcntl.lockf(cfd, fcntl.LOCK_EX, 0, 0)
                code = 0 if time.monotonic() - t0 > 0.15 else 2
            finally:
                os._exit(code)
        os.close(w)
        os.read(r, 1)
        os.close(r)
        time.sleep(0.3)
        fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the waiter did not wait, or failed"
    finally:
        os.close(fd)
    # flock: per open file description
    fd = os.open(f, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)

        def try_flock() -> int:
            cfd = os.open(f, os.O_RDWR)
            try:
                return errno_of(fcntl.flock, cfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(cfd)

        assert as_user(0, try_flock) == errno.EWOULDBLOCK
        fd2 = os.open(f, os.O_RDWR)                         # another description, same process
        try:
            assert errno_of(fcntl.flock, fd2, fcntl.LOCK_SH | fcntl.LOCK_NB) == errno.EWOULDBLOCK
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
    assert as_user(0, try_flock) == 0                        # released by the last close


# -- xattrs -----------------------------------------------------------------------------
@case
def xattrs(e: Env) -> None:
    f = e.p("f")
    put(f, b"x")
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "user.empty", b"")
    assert os.getxattr(f, "user.a") == b"1"
    assert os.getxattr(f, "user.empty") == b""
    assert {"user.a", "user.empty"} <= set(os.listxattr(f))
    fails(errno.EEXIST, os.setxattr, f, "user.a", b"2", os.XATTR_CREATE)
    fails(errno.ENODATA, os.setxattr, f, "user.b", b"2", os.XATTR_REPLACE)
    os.setxattr(f, "user.a", b"22", os.XATTR_REPLACE)
    os.setxattr(f, "user.b", b"333", os.XATTR_CREATE)
    assert os.getxattr(f, "user.a") == b"22" and os.getxattr(f, "user.b") == b"333"
    # size probing, as getfattr and friends do it
    assert getxattr_size(f, "user.b") == 3
    assert getxattr_into(f, "user.b", 3) == b"333"
    fails(errno.ERANGE, getxattr_into, f, "user.b", 2)
    names = b"".join(n.encode() + b"\0" for n in os.listxattr(f))
    assert listxattr_size(f) == len(names)
    os.removexattr(f, "user.a")
    fails(errno.ENODATA, os.getxattr, f, "user.a")
    fails(errno.ENODATA, os.removexattr, f, "user.a")
    assert "user.a" not in os.listxattr(f)
    fails(errno.ERANGE, os.setxattr, f, "user." + "n" * 251, b"v")
    # directories have them; user.* on a symlink is not permitted
    os.mkdir(e.p("dir"))
    os.setxattr(e.p("dir"), "user.d", b"dirval")
    assert os.getxattr(e.p("dir"), "user.d") == b"dirval"
    os.symlink("f", e.p("l"))
    fails(errno.EPERM, os.setxattr, e.p("l"), "user.s", b"v", follow_symlinks=False)
    assert os.getxattr(e.p("l"), "user.b") == b"333"                  # follows
    # only those who may write the file may set them
    os.chmod(f, 0o644)
    assert user(os.setxattr, f, "user.u", b"v") == errno.EACCES
    assert as_user(1000, os.getxattr, f, "user.b") == b"333"
    # values that fill a block and beyond, when the backing filesystem allows them
    for size in (4000, 64 * 1024 - 1, 64 * 1024):
        value = pattern(size, size)
        why = probe(lambda: os.setxattr(f, "user.big", value))
        if why is not None:
            assert e.t.posix_backed and why in (errno.ENOSPC, errno.E2BIG), \
                f"a {size}-byte value: {os.strerror(why)}"
            continue
        assert os.getxattr(f, "user.big") == value
        assert getxattr_size(f, "user.big") == size
    fails(errno.E2BIG, os.setxattr, f, "user.huge", bytes(64 * 1024 + 1))


# -- statfs -----------------------------------------------------------------------------
@case
def statfs(e: Env) -> None:
    sv = os.statvfs(e.d)
    assert sv.f_bsize > 0 and sv.f_frsize > 0
    assert sv.f_blocks >= sv.f_bfree >= sv.f_bavail >= 0
    assert sv.f_blocks > 0
    assert sv.f_files >= sv.f_ffree >= 0
    assert sv.f_namemax == 255
    fd = os.open(e.p("f"), os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fsv = os.fstatvfs(fd)
        assert (fsv.f_bsize, fsv.f_blocks) == (sv.f_bsize, sv.f_blocks)
    finally:
        os.close(fd)


# -- directories ------------------------------------------------------------------------
def _mkmany(d: str, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"entry-{i:05d}-" + "x" * (i % 37)
        if i % 50 == 0:
            os.mkdir(os.path.join(d, name))
        else:
            os.mknod(os.path.join(d, name), stat.S_IFREG | 0o644)
        names.append(name)
    return names


_libc = ctypes.CDLL(None, use_errno=True)
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.opendir.restype = ctypes.c_void_p
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.readdir.restype = ctypes.c_void_p
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.closedir.argtypes = [ctypes.c_void_p]
_DIRENT_NAME = 19          # struct dirent on x86_64/aarch64 glibc: ino, off, reclen, type


def _readdir(dirp: int) -> str | None:
    ptr = _libc.readdir(dirp)
    if not ptr:
        return None
    return ctypes.string_at(ptr + _DIRENT_NAME).decode()


@case
def large_directory(e: Env) -> None:
    n = 5000
    names = _mkmany(str(e.d), n)
    listed = os.listdir(e.d)
    assert len(listed) == n, f"{len(listed)} entries listed, {n} made"
    assert sorted(listed) == sorted(names)
    with os.scandir(e.d) as it:
        kinds = {de.name: (de.is_dir(follow_symlinks=False), de.inode()) for de in it}
    for i in (0, 1, 50, 4999, 2500, 777):
        st = os.lstat(e.p(names[i]))
        assert kinds[names[i]] == (stat.S_ISDIR(st.st_mode), st.st_ino), names[i]
    assert os.stat(e.d).st_nlink == 2 + n // 50
    # telldir/seekdir: a saved position resumes at the same entry
    dirp = _libc.opendir(str(e.d).encode())
    assert dirp
    try:
        order = []
        marks = {}
        while True:
            if len(order) in (100, 1234, 4000):
                marks[len(order)] = _libc.telldir(dirp)
            name = _readdir(dirp)
            if name is None:
                break
            order.append(name)
        assert sorted(x for x in order if x not in (".", "..")) == sorted(names)
        for at, pos in sorted(marks.items(), reverse=True):
            _libc.seekdir(dirp, pos)
            assert [_readdir(dirp) for _ in range(3)] == order[at:at + 3]
    finally:
        _libc.closedir(dirp)


@case
def readdir_while_changing(e: Env) -> None:
    n = 1500
    names = set(_mkmany(str(e.d), n))
    seen: list[str] = []
    created = 0
    with os.scandir(e.d) as it:
        for de in it:
            seen.append(de.name)
            if de.name.startswith("entry-"):
                if de.is_dir(follow_symlinks=False):
                    os.rmdir(de.path)
                else:
                    os.unlink(de.path)
            if created < 300 and len(seen) % 5 == 0:
                os.mknod(e.p(f"new-{created:04d}"), stat.S_IFREG | 0o644)
                created += 1
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    missing = names - set(seen)
    assert not missing, f"{len(missing)} untouched entries never listed, e.g. {sorted(missing)[:3]}"
    rest = sorted(os.listdir(e.d))
    assert rest == [f"new-{i:04d}" for i in range(created)]


@case
def name_max(e: Env) -> None:
    ok = "a" * 255
    utf = "é" * 127 + "b"                      # 255 bytes
    assert len(os.fsencode(utf)) == 255
    for name in (ok, utf):
        put(e.p(name), b"n")
        assert get(e.p(name)) == b"n"
        assert name in os.listdir(e.d)
    os.mkdir(e.p("d" * 255))
    os.rename(e.p(ok), e.p("d" * 255, "c" * 255))
    assert get(e.p("d" * 255, "c" * 255)) == b"n"
    long = "L" * 256
    fails(errno.ENAMETOOLONG, os.open, e.p(long), os.O_CREAT | os.O_WRONLY, 0o644)
    fails(errno.ENAMETOOLONG, os.stat, e.p(long))
    fails(errno.ENAMETOOLONG, os.mkdir, e.p(long))
    fails(errno.ENAMETOOLONG, os.symlink, "x", e.p(long))
    fails(errno.ENAMETOOLONG, os.link, e.p(utf), e.p(long))
    fails(errno.ENAMETOOLONG, os.rename, e.p(utf), e.p(long))
    fails(errno.ENAMETOOLONG, os.mknod, e.p(long), stat.S_IFREG | 0o644)
    assert sorted(os.listdir(e.d)) == sorted(["d" * 255, utf])


@case
def path_beyond_path_max(e: Env) -> None:
    comp = "p" * 200
    depth = 24                                          # > 4800 bytes below e.d
    fds = [os.open(e.d, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            os.mkdir(comp, 0o755, dir_fd=fds[-1])
            fds.append(os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        bottom = fds[-1]
        fd = os.open("leaf", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=bottom)
        try:
            data = pattern(100000, 5)
            assert os.write(fd, data) == len(data)
            assert os.pread(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)
        assert os.listdir(bottom) == ["leaf"]
        assert os.stat("leaf", dir_fd=bottom).st_size == 100000
        os.rename("leaf", "leaf2", src_dir_fd=bottom, dst_dir_fd=fds[1])
        assert os.stat("leaf2", dir_fd=fds[1]).st_size == 100000
        full = os.path.join(str(e.d), *[comp] * depth)
        assert len(full) > 4096
        fails(errno.ENAMETOOLONG, os.stat, full)
        fd = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=bottom)
        try:
            assert os.fstat(fd).st_ino == os.fstat(fds[-2]).st_ino
        finally:
            os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)


@case
def directory_basics(e: Env) -> None:
    os.mkdir(e.p("a"), 0o750)
    st = os.stat(e.p("a"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_nlink == 2
    fails(errno.EEXIST, os.mkdir, e.p("a"))
    put(e.p("a", "f"), b"1")
    fails(errno.ENOTEMPTY, os.rmdir, e.p("a"))
    fails(errno.ENOTDIR, os.rmdir, e.p("a", "f"))
    fails(errno.EISDIR, os.unlink, e.p("a"))
    fails(errno.ENOENT, os.rmdir, e.p("missing"))
    os.unlink(e.p("a", "f"))
    fd = os.open(e.p("a"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(e.p("a"))
        assert os.listdir(fd) == []
        fails(errno.ENOENT, os.open, "x", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
    finally:
        os.close(fd)
    assert os.listdir(e.d) == []
    m0 = os.stat(e.d).st_mtime_ns
    time.sleep(TICK)
    os.mknod(e.p("n"), stat.S_IFREG)
    assert os.stat(e.d).st_mtime_ns > m0, "creating an entry changes the directory's mtime"


# -- the test: every case on every target -----------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_posix(name: str, target: Target, d: Path) -> None:
    CASES[name](Env(target, d))
