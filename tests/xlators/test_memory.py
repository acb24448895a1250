"""storage/memory: POSIX semantics through path-level operations (no mount)."""
from __future__ import annotations

import errno
import os
import random
import stat
import time

import pytest

from xlators import NOW, Fd, FopError, Loc, SetAttr, StatFs
from xlators.core.events import Event
from xlators.storage.memory import Memory
from xlators.storage.memory_node import CHUNK
from xlators.testing import Harness

KEEP, PUNCH, ZERO = 0x01, 0x02, 0x10
SEEK_DATA, SEEK_HOLE = 3, 4


@pytest.fixture
def h() -> Harness:
    return Harness.stack()       # storage/memory alone


@pytest.fixture
def clock(monkeypatch):
    """A time.time_ns that moves 1 µs per call, so timestamp changes are visible."""
    state = {"now": 1_700_000_000_000_000_000}

    def fake() -> int:
        state["now"] += 1000
        return state["now"]
    monkeypatch.setattr(time, "time_ns", fake)
    return state


async def fails(err: int, coro) -> None:
    with pytest.raises(OSError) as info:
        await coro
    assert info.value.errno == err, f"expected {errno.errorcode[err]}, got " \
                                    f"{errno.errorcode.get(info.value.errno)}"


def user(h: Harness, uid: int = 1000, gid: int = 1000, groups=()):
    return h.frame(uid, gid, groups)


async def names(h: Harness, path: str = "/", frame=None) -> list[bytes]:
    return [e.name for e in await h.listdir(path, frame=frame)]


# -- files ---------------------------------------------------------------------------
async def test_registered_as_leaf_and_default_harness_leaf(h):
    assert isinstance(h.top, Memory)
    assert h.top.type == "storage/memory"
    attr = await h.stat("/")
    assert stat.S_ISDIR(attr.mode) and attr.nlink == 2 and attr.ino == h.root.ino


async def test_write_read_and_sizes(h):
    fd = await h.create("/f")
    assert await h.write(fd, b"hello world") == 11
    assert await h.read(fd, 5, 6) == b"world"
    assert await h.read(fd, 100, 0) == b"hello world"
    assert await h.read(fd, 10, 11) == b""
    assert await h.read(fd, 10, 1000) == b""
    await h.write(fd, b"X", 20)                       # past EOF: a hole in between
    assert await h.read(fd, 100) == b"hello world" + bytes(9) + b"X"
    attr = await h.top.getattr(h.frame(), fd.inode, fd)
    assert attr.size == 21 and attr.blocks == 8 and stat.S_ISREG(attr.mode)
    await h.close(fd)


async def test_random_io_matches_a_bytearray_model(h):
    """Writes, truncates, punches and zero-ranges across chunk boundaries."""
    rng = random.Random(1234)
    fd = await h.create("/model")
    model = bytearray()
    span = 3 * CHUNK + 1000
    for step in range(300):
        op = rng.random()
        off = rng.randrange(span)
        n = rng.randrange(1, CHUNK + 5000)
        if op < 0.5:
            data = rng.randbytes(n)
            await h.write(fd, data, off)
            if len(model) < off:
                model.extend(bytes(off - len(model)))
            model[off:off + n] = data
        elif op < 0.6:
            await h.top.setattr(h.frame(), fd.inode, SetAttr(size=off), fd)
            del model[off:]
            model.extend(bytes(off - len(model)))
        elif op < 0.8:
            await h.top.fallocate(h.frame(), fd, PUNCH | KEEP, off, n)
            end = min(off + n, len(model))
            if off < end:
                model[off:end] = bytes(end - off)
        else:
            await h.top.fallocate(h.frame(), fd, ZERO, off, n)
            if len(model) < off + n:
                model.extend(bytes(off + n - len(model)))
            model[off:off + n] = bytes(n)
        if step % 10 == 0:
            assert await h.read(fd, span + CHUNK, 0) == bytes(model)
            o = rng.randrange(span)
            assert await h.read(fd, 7000, o) == bytes(model[o:o + 7000])
    assert (await h.top.getattr(h.frame(), fd.inode)).size == len(model)
    assert await h.read(fd, span + CHUNK, 0) == bytes(model)


async def test_append_and_access_modes(h):
    await h.write_file("/f", b"abc")
    fd = await h.open("/f", os.O_WRONLY | os.O_APPEND)
    await h.write(fd, b"def", 0)                      # O_APPEND: at the end anyway
    await fails(errno.EBADF, h.read(fd, 10))
    await h.close(fd)
    fd = await h.open("/f", os.O_RDONLY)
    await fails(errno.EBADF, h.write(fd, b"x"))
    assert await h.read(fd, 10) == b"abcdef"
    await h.close(fd)


async def test_open_trunc_and_create_existing(h, clock):
    await h.write_file("/f", b"data")
    before = await h.stat("/f")
    fd = await h.open("/f", os.O_RDWR | os.O_TRUNC)
    after = await h.top.getattr(h.frame(), fd.inode)
    assert after.size == 0 and after.mtime_ns > before.mtime_ns
    await h.close(fd)
    await fails(errno.EEXIST, h.create("/f", flags=os.O_RDWR | os.O_CREAT | os.O_EXCL))
    fd = await h.create("/f", flags=os.O_RDWR | os.O_CREAT)       # opens the existing
    assert fd.inode.ino == before.ino
    await h.close(fd)
    await h.mkdir("/d")
    await fails(errno.EISDIR, h.create("/d"))
    await fails(errno.EISDIR, h.open("/d", os.O_RDWR))


async def test_lookup_errors(h):
    await fails(errno.ENOENT, h.lookup("/nope"))
    await h.write_file("/f", b"")
    await fails(errno.ENOTDIR, h.lookup("/f/x"))
    await fails(errno.ENAMETOOLONG, h.lookup("/" + "x" * 256))
    await fails(errno.ENAMETOOLONG, h.create("/" + "x" * 256))
    await h.create("/" + "x" * 255)
    e = await h.top.lookup(h.frame(), Loc(h.root, b"."))
    assert e.inode is h.root
    await h.mkdir("/d")
    d = await h.lookup("/d")
    e = await h.top.lookup(h.frame(), Loc(d.inode, b".."))
    assert e.inode is h.root


async def test_truncate_via_setattr(h):
    await h.write_file("/f", b"0123456789")
    attr = await h.setattr("/f", size=4)
    assert attr.size == 4
    await h.setattr("/f", size=CHUNK * 2 + 3)
    data = await h.read_file("/f")
    assert data == b"0123" + bytes(CHUNK * 2 + 3 - 4)
    await h.mkdir("/d")
    await fails(errno.EISDIR, h.setattr("/d", size=0))


async def test_unlinked_open_file_lives_until_release(h):
    h.top.reconfigure({"size": "1MB"})
    fd = await h.create("/f")
    await h.write(fd, b"x" * 100_000)
    used = h.top.used
    assert used >= 100_000
    await h.unlink("/f")
    await fails(errno.ENOENT, h.lookup("/f"))
    assert await h.read(fd, 3, 99_997) == b"xxx"
    await h.write(fd, b"more", 100_000)
    assert (await h.top.getattr(h.frame(), fd.inode)).nlink == 0
    assert h.top.used >= used
    await h.close(fd)
    assert h.top.used == 0
    assert (await h.top.getattr(h.frame(), fd.inode)).nlink == 0   # the kernel's inode


# -- directories ---------------------------------------------------------------------
async def test_mkdir_rmdir_nlink(h):
    await h.mkdir("/a")
    await h.mkdir("/a/b")
    assert (await h.stat("/")).nlink == 3
    assert (await h.stat("/a")).nlink == 3
    await fails(errno.EEXIST, h.mkdir("/a"))
    await fails(errno.ENOTEMPTY, h.rmdir("/a"))
    await h.write_file("/a/f", b"")
    await fails(errno.ENOTDIR, h.rmdir("/a/f"))
    await fails(errno.EISDIR, h.unlink("/a/b"))
    await h.rmdir("/a/b")
    assert (await h.stat("/a")).nlink == 2
    await h.unlink("/a/f")
    await h.rmdir("/a")
    assert (await h.stat("/")).nlink == 2
    assert await names(h) == [b".", b".."]
    await fails(errno.ENOENT, h.rmdir("/a"))


async def test_readdir_types_and_plus(h):
    await h.mkdir("/d")
    await h.write_file("/d/f", b"abc")
    await h.symlink(b"f", "/d/l")
    d = await h.lookup("/d")
    plain = await h.listdir("/d")
    assert [(e.name, e.type) for e in plain] == [
        (b".", stat.S_IFDIR >> 12), (b"..", stat.S_IFDIR >> 12), (b"f", stat.S_IFREG >> 12),
        (b"l", stat.S_IFLNK >> 12)]
    assert plain[0].ino == d.attr.ino and plain[1].ino == h.root.ino
    plus = await h.listdir("/d", plus=True)
    assert plus[0].entry is None and plus[1].entry is None
    f = plus[2].entry
    assert f.attr.size == 3 and f.inode.ino == plus[2].ino
    assert h.itable.find(plus[2].ino) is f.inode
    assert all(a.off < b.off for a, b in zip(plain, plain[1:]))


async def _open_dir(h: Harness, path: str) -> Fd:
    e = await h.lookup(path)
    fd = Fd(e.inode, os.O_RDONLY, is_dir=True)
    await h.top.opendir(h.frame(), e.inode, fd)
    e.inode.refs += 1
    return fd


async def _read_rest(h: Harness, fd: Fd, offset: int, size: int = 4096) -> list:
    out = []
    while True:
        batch = await h.top.readdir(h.frame(), fd, offset, size)
        if not batch:
            return out
        out.extend(batch)
        offset = batch[-1].off


async def test_readdir_cookies_stable_under_concurrent_changes(h):
    await h.mkdir("/d")
    for i in range(200):
        await h.write_file(f"/d/f{i:03}", b"")
    fd = await _open_dir(h, "/d")
    first = await h.top.readdir(h.frame(), fd, 0, 400)      # a small budget: a part
    assert 2 < len(first) < 100
    seen = [e.name for e in first]
    resume = first[-1].off
    # Change the directory between the batches: remove entries already read and not yet
    # read (including the one the cookie points at), add new ones.
    await h.unlink(b"/d/" + first[-1].name)
    removed = {f"f{i:03}".encode() for i in range(100, 150)}
    for n in removed:
        await h.unlink(b"/d/" + n)
    for n in seen[2:5]:
        await h.unlink(b"/d/" + n)
    added = {f"new{i}".encode() for i in range(20)}
    for n in added:
        await h.write_file(b"/d/" + n, b"")
    rest = await _read_rest(h, fd, resume, 300)
    rest_names = [e.name for e in rest]
    all_names = seen + rest_names
    assert len(all_names) == len(set(all_names)), "an entry came twice"
    assert not removed & set(rest_names)
    assert added <= set(rest_names)
    kept = {f"f{i:03}".encode() for i in range(200)} - removed
    assert kept <= set(all_names)
    assert all(a.off < b.off for a, b in zip(rest, rest[1:]))
    # resuming from any cookie gives the tail of a full listing
    full = await _read_rest(h, fd, 0)
    for k in (0, 1, 2, 50, len(full) - 1):
        tail = await _read_rest(h, fd, full[k].off)
        assert [e.name for e in tail] == [e.name for e in full[k + 1:]]
    await h.close(fd)


async def test_readdir_after_many_removals_and_of_removed_dir(h):
    await h.mkdir("/d")
    for i in range(300):
        await h.write_file(f"/d/{i}", b"")
    fd = await _open_dir(h, "/d")
    batch = await h.top.readdir(h.frame(), fd, 0, 200)
    for i in range(295):                                   # compaction happens
        await h.unlink(f"/d/{i}")
    rest = await _read_rest(h, fd, batch[-1].off)
    assert {e.name for e in rest} == {str(i).encode() for i in range(295, 300)}
    for i in range(295, 300):
        await h.unlink(f"/d/{i}")
    await h.rmdir("/d")
    assert await h.top.readdir(h.frame(), fd, 0, 4096) == []
    await h.close(fd)


async def test_readdir_entry_renamed_within_dir_reappears_once(h):
    await h.mkdir("/d")
    for n in "abc":
        await h.write_file(f"/d/{n}", b"")
    fd = await _open_dir(h, "/d")
    full = await _read_rest(h, fd, 0)
    await h.rename("/d/a", "/d/z")
    rest = await _read_rest(h, fd, full[-1].off)
    assert [e.name for e in rest] == [b"z"]
    await h.close(fd)


# -- links, symlinks, nodes ----------------------------------------------------------
async def test_hard_links(h):
    await h.write_file("/f", b"shared")
    e = await h.lookup("/f")
    await h.mkdir("/d")
    d = await h.lookup("/d")
    le = await h.top.link(h.frame(), e.inode, Loc(d.inode, b"g"))
    assert le.inode is e.inode and le.attr.nlink == 2
    assert await h.read_file("/d/g") == b"shared"
    await fails(errno.EEXIST, h.top.link(h.frame(), e.inode, Loc(d.inode, b"g")))
    await fails(errno.EPERM, h.top.link(h.frame(), d.inode, Loc(h.root, b"dl")))
    await h.unlink("/f")
    assert (await h.stat("/d/g")).nlink == 1
    assert await h.read_file("/d/g") == b"shared"


async def test_symlinks(h):
    e = await h.symlink(b"/some/where", "/l")
    assert stat.S_ISLNK(e.attr.mode) and e.attr.size == 11
    assert stat.S_IMODE(e.attr.mode) == 0o777
    assert await h.top.readlink(h.frame(), e.inode) == b"/some/where"
    await h.write_file("/f", b"")
    f = await h.lookup("/f")
    await fails(errno.EINVAL, h.top.readlink(h.frame(), f.inode))
    await fails(errno.ENOENT, h.symlink(b"", "/empty"))
    await fails(errno.EEXIST, h.symlink(b"x", "/l"))


async def test_mknod(h):
    loc = Loc(h.root, b"fifo")
    e = await h.top.mknod(h.frame(), loc, stat.S_IFIFO | 0o666, 0, 0o022)
    assert stat.S_ISFIFO(e.attr.mode) and stat.S_IMODE(e.attr.mode) == 0o644
    e = await h.top.mknod(h.frame(), Loc(h.root, b"null"), stat.S_IFCHR | 0o666,
                          os.makedev(1, 3), 0)
    assert stat.S_ISCHR(e.attr.mode) and e.attr.rdev == os.makedev(1, 3)
    e = await h.top.mknod(h.frame(), Loc(h.root, b"plain"), 0o600, 0, 0)
    assert stat.S_ISREG(e.attr.mode)
    await h.mkdir("/pub", 0o777, umask=0)
    pub = await h.lookup("/pub")
    await fails(errno.EPERM, h.top.mknod(user(h), Loc(pub.inode, b"c"), stat.S_IFCHR | 0o600,
                                         1, 0))
    await fails(errno.EPERM, h.top.mknod(h.frame(), Loc(h.root, b"d"), stat.S_IFDIR | 0o755,
                                         0, 0))
    e = await h.top.mknod(user(h), Loc(pub.inode, b"sock"), stat.S_IFSOCK | 0o600, 0, 0)
    assert stat.S_ISSOCK(e.attr.mode) and e.attr.uid == 1000


# -- rename --------------------------------------------------------------------------
async def test_rename_basic_and_replace(h, clock):
    await h.mkdir("/a")
    await h.mkdir("/b")
    await h.write_file("/a/f", b"one")
    await h.write_file("/b/g", b"two")
    g = await h.lookup("/b/g")
    f_before = await h.stat("/a/f")
    await h.rename("/a/f", "/b/g")
    assert await h.read_file("/b/g") == b"one"
    await fails(errno.ENOENT, h.lookup("/a/f"))
    assert (await h.top.getattr(h.frame(), g.inode)).nlink == 0     # replaced
    f_after = await h.stat("/b/g")
    assert f_after.ino == f_before.ino and f_after.ctime_ns > f_before.ctime_ns
    await fails(errno.ENOENT, h.rename("/a/nope", "/b/x"))


async def test_rename_directory_rules(h):
    for d in ("/a", "/a/sub", "/b", "/empty", "/full", "/full/x"):
        await h.mkdir(d)
    await h.write_file("/file", b"")
    await fails(errno.EINVAL, h.rename("/a", "/a/sub/inside"))
    await fails(errno.EINVAL, h.rename("/a", "/a/inside"))
    await fails(errno.ENOTDIR, h.rename("/a", "/file"))
    await fails(errno.EISDIR, h.rename("/file", "/a"))
    await fails(errno.ENOTEMPTY, h.rename("/a", "/full"))
    await h.rename("/a/sub", "/b/sub2")                       # across parents
    assert (await h.stat("/a")).nlink == 2 and (await h.stat("/b")).nlink == 3
    b = await h.lookup("/b")
    listing = await h.listdir("/b/sub2")
    assert listing[1].name == b".." and listing[1].ino == b.attr.ino
    await h.rename("/a", "/empty")                            # onto an empty directory
    await fails(errno.ENOENT, h.lookup("/a"))
    assert (await h.stat("/")).nlink == 2 + 3                 # empty(=a), b, full


async def test_rename_onto_itself_and_hard_link_is_a_no_op(h):
    await h.write_file("/f", b"x")
    e = await h.lookup("/f")
    await h.top.link(h.frame(), e.inode, Loc(h.root, b"g"))
    await h.rename("/f", "/f")
    await h.rename("/f", "/g")                                # same inode: nothing
    assert set(await names(h)) == {b".", b"..", b"f", b"g"}
    assert (await h.stat("/f")).nlink == 2


async def test_rename_noreplace_and_exchange(h):
    await h.mkdir("/d1")
    await h.mkdir("/d2")
    await h.mkdir("/d1/sub")
    await h.write_file("/d2/file", b"F")
    await fails(errno.EEXIST, h.rename("/d1/sub", "/d2/file", flags=1))
    await fails(errno.EINVAL, h.rename("/d1/sub", "/d2/file", flags=3))
    await fails(errno.EINVAL, h.rename("/d1/sub", "/d2/file", flags=8))
    await fails(errno.ENOENT, h.rename("/d1/sub", "/d2/missing", flags=2))
    await h.rename("/d1/sub", "/d2/new", flags=1)
    await h.rename("/d2/new", "/d1/sub")
    sub = await h.lookup("/d1/sub")
    f = await h.lookup("/d2/file")
    await h.rename("/d1/sub", "/d2/file", flags=2)             # exchange dir and file
    assert (await h.lookup("/d1/sub")).inode is f.inode
    assert (await h.lookup("/d2/file")).inode is sub.inode
    assert await h.read_file("/d1/sub") == b"F"
    assert (await h.stat("/d1")).nlink == 2 and (await h.stat("/d2")).nlink == 3
    d2 = await h.lookup("/d2")
    assert (await h.listdir("/d2/file"))[1].ino == d2.attr.ino
    await fails(errno.EINVAL, h.rename("/d2", "/d2/file/x", flags=0))
    await h.mkdir("/d2/file/deep")
    await fails(errno.EINVAL, h.rename("/d2", "/d2/file/deep", flags=2))


async def test_rename_keeps_cookie_of_replaced_name(h):
    await h.mkdir("/d")
    for n in "abc":
        await h.write_file(f"/d/{n}", n.encode())
    before = {e.name: e.off for e in await h.listdir("/d")}
    await h.rename("/d/a", "/d/c")
    after = {e.name: e.off for e in await h.listdir("/d")}
    assert after[b"c"] == before[b"c"] and b"a" not in after


# -- timestamps ----------------------------------------------------------------------
async def test_timestamps_follow_posix(h, clock):
    await h.mkdir("/d")
    d0 = await h.stat("/d")
    fd = await h.create("/d/f")
    d1 = await h.stat("/d")
    assert d1.mtime_ns > d0.mtime_ns and d1.ctime_ns > d0.ctime_ns
    f0 = await h.top.getattr(h.frame(), fd.inode)
    assert f0.atime_ns == f0.mtime_ns == f0.ctime_ns
    await h.write(fd, b"abc")
    f1 = await h.top.getattr(h.frame(), fd.inode)
    assert f1.mtime_ns > f0.mtime_ns and f1.ctime_ns == f1.mtime_ns
    assert f1.atime_ns == f0.atime_ns
    await h.read(fd, 3)                                        # relatime: atime <= mtime
    f2 = await h.top.getattr(h.frame(), fd.inode)
    assert f2.atime_ns > f1.atime_ns and f2.mtime_ns == f1.mtime_ns
    await h.read(fd, 3)
    assert (await h.top.getattr(h.frame(), fd.inode)).atime_ns == f2.atime_ns
    await h.setattr("/d/f", mode=0o600)                        # chmod: ctime only
    f3 = await h.stat("/d/f")
    assert f3.ctime_ns > f2.ctime_ns and f3.mtime_ns == f2.mtime_ns
    await h.setattr("/d/f", atime_ns=5, mtime_ns=7)
    f4 = await h.stat("/d/f")
    assert (f4.atime_ns, f4.mtime_ns) == (5, 7) and f4.ctime_ns > f3.ctime_ns
    await h.setattr("/d/f", mtime_ns=NOW)
    assert (await h.stat("/d/f")).mtime_ns > f4.ctime_ns
    f5 = await h.stat("/d/f")
    await h.top.setxattr(h.frame(), fd.inode, b"user.k", b"v", 0)
    f6 = await h.stat("/d/f")
    assert f6.ctime_ns > f5.ctime_ns and f6.mtime_ns == f5.mtime_ns
    d2 = await h.stat("/d")
    await h.unlink("/d/f")
    d3 = await h.stat("/d")
    assert d3.mtime_ns > d2.mtime_ns
    assert (await h.top.getattr(h.frame(), fd.inode)).ctime_ns > f6.ctime_ns
    await h.close(fd)


# -- xattrs --------------------------------------------------------------------------
async def test_xattrs(h):
    await h.write_file("/f", b"")
    f = (await h.lookup("/f")).inode
    top, fr = h.top, h.frame()
    await top.setxattr(fr, f, b"user.a", b"1", 0)
    await top.setxattr(fr, f, b"trusted.b", b"2", 0)
    await top.setxattr(fr, f, b"security.c", b"3", 0)
    assert await top.getxattr(fr, f, b"user.a") == b"1"
    assert sorted(await top.listxattr(fr, f)) == [b"security.c", b"trusted.b", b"user.a"]
    await fails(errno.EEXIST, top.setxattr(fr, f, b"user.a", b"x", 1))     # XATTR_CREATE
    await fails(errno.ENODATA, top.setxattr(fr, f, b"user.z", b"x", 2))    # XATTR_REPLACE
    await top.setxattr(fr, f, b"user.a", b"new", 2)
    assert await top.getxattr(fr, f, b"user.a") == b"new"
    await fails(errno.ENODATA, top.getxattr(fr, f, b"user.none"))
    await fails(errno.EOPNOTSUPP, top.setxattr(fr, f, b"bogus.x", b"", 0))
    await fails(errno.EOPNOTSUPP, top.getxattr(fr, f, b"system.posix_acl_access"))
    await fails(errno.E2BIG, top.setxattr(fr, f, b"user.big", bytes(65537), 0))
    await top.removexattr(fr, f, b"user.a")
    await fails(errno.ENODATA, top.removexattr(fr, f, b"user.a"))
    link = await h.symlink(b"f", "/l")
    await fails(errno.EPERM, top.setxattr(fr, link.inode, b"user.x", b"", 0))
    # non-root: trusted.* invisible, security.* read-only, user.* by permission
    u = user(h)
    assert sorted(await top.listxattr(u, f)) == [b"security.c"]
    await fails(errno.ENODATA, top.getxattr(u, f, b"trusted.b"))
    await fails(errno.EPERM, top.setxattr(u, f, b"trusted.b", b"", 0))
    assert await top.getxattr(u, f, b"security.c") == b"3"
    await fails(errno.EPERM, top.setxattr(u, f, b"security.c", b"", 0))
    await fails(errno.EACCES, top.setxattr(u, f, b"user.k", b"", 0))      # 0644 root file


# -- fallocate, lseek, copy_file_range -------------------------------------------------
async def test_fallocate_modes(h):
    fd = await h.create("/f")
    top, fr = h.top, h.frame()
    await top.fallocate(fr, fd, 0, 0, 10000)
    a = await top.getattr(fr, fd.inode)
    assert a.size == 10000 and a.blocks >= 10000 // 512
    await top.fallocate(fr, fd, KEEP, 0, 50000)
    assert (await top.getattr(fr, fd.inode)).size == 10000
    await h.write(fd, b"\xff" * 3 * CHUNK)
    await top.fallocate(fr, fd, PUNCH | KEEP, CHUNK, CHUNK)
    a = await top.getattr(fr, fd.inode)
    assert a.size == 3 * CHUNK and a.blocks == 2 * CHUNK // 512
    assert await h.read(fd, 4, CHUNK - 2) == b"\xff\xff\x00\x00"
    await fails(errno.EOPNOTSUPP, top.fallocate(fr, fd, PUNCH, 0, 10))
    await fails(errno.EINVAL, top.fallocate(fr, fd, PUNCH | ZERO | KEEP, 0, 10))
    await fails(errno.EOPNOTSUPP, top.fallocate(fr, fd, 0x08, 0, 10))   # collapse-range
    await fails(errno.EINVAL, top.fallocate(fr, fd, 0, 0, 0))
    await top.fallocate(fr, fd, ZERO, 10, 20)
    assert await h.read(fd, 32, 0) == b"\xff" * 10 + bytes(20) + b"\xff\xff"
    await top.fallocate(fr, fd, ZERO, 3 * CHUNK, 100)                  # extends
    assert (await top.getattr(fr, fd.inode)).size == 3 * CHUNK + 100


async def test_lseek_data_and_holes(h):
    fd = await h.create("/sparse")
    top, fr = h.top, h.frame()
    await h.write(fd, b"a" * 10, 0)
    await h.write(fd, b"b" * 10, 5 * CHUNK)
    size = 5 * CHUNK + 10
    assert await top.lseek(fr, fd, 0, SEEK_DATA) == 0
    assert await top.lseek(fr, fd, 0, SEEK_HOLE) == 4096                  # a page, as tmpfs
    assert await top.lseek(fr, fd, CHUNK + 5, SEEK_HOLE) == CHUNK + 5
    assert await top.lseek(fr, fd, CHUNK + 5, SEEK_DATA) == 5 * CHUNK
    assert await top.lseek(fr, fd, 5 * CHUNK, SEEK_HOLE) == size
    await fails(errno.ENXIO, top.lseek(fr, fd, size, SEEK_DATA))
    await fails(errno.ENXIO, top.lseek(fr, fd, size, SEEK_HOLE))
    await top.setattr(fr, fd.inode, SetAttr(size=8 * CHUNK), fd)
    await fails(errno.ENXIO, top.lseek(fr, fd, 6 * CHUNK, SEEK_DATA))
    assert await top.lseek(fr, fd, 6 * CHUNK, SEEK_HOLE) == 6 * CHUNK
    assert await top.lseek(fr, fd, -3, 2) == 8 * CHUNK - 3                # SEEK_END
    await top.fallocate(fr, fd, PUNCH | KEEP, 0, CHUNK)
    assert await top.lseek(fr, fd, 0, SEEK_DATA) == 5 * CHUNK


async def test_copy_file_range(h):
    await h.write_file("/src", b"0123456789")
    src = await h.open("/src", os.O_RDONLY)
    dst = await h.create("/dst")
    top, fr = h.top, h.frame()
    assert await top.copy_file_range(fr, src, 2, dst, 5, 100, 0) == 8
    assert await h.read(dst, 100) == bytes(5) + b"23456789"
    assert await top.copy_file_range(fr, src, 10, dst, 0, 5, 0) == 0
    await fails(errno.EINVAL, top.copy_file_range(fr, src, 0, dst, 0, 5, 1))
    await fails(errno.EBADF, top.copy_file_range(fr, dst, 0, src, 0, 5, 0))
    await fails(errno.EINVAL, top.copy_file_range(fr, dst, 0, dst, 4, 8, 0))
    assert await top.copy_file_range(fr, dst, 0, dst, 13, 5, 0) == 5


# -- capacity ------------------------------------------------------------------------
async def test_statfs_and_limits():
    h = Harness.stack(options={"storage/memory": {"size": "1MB", "inodes": "5"}})
    sf = await h.top.statfs(h.frame(), h.root)
    assert isinstance(sf, StatFs)
    assert sf.blocks == 256 and sf.bfree == 256 and sf.bsize == 4096
    assert sf.files == 5 and sf.ffree == 4 and sf.namelen == 255
    fd = await h.create("/f")
    await h.write(fd, bytes(512 * 1024))
    sf = await h.top.statfs(h.frame(), h.root)
    assert sf.bfree == 128
    await fails(errno.ENOSPC, h.write(fd, bytes(600 * 1024), 512 * 1024))
    await h.write(fd, b"x" * 1000, 0)                     # overwriting needs no space
    await fails(errno.ENOSPC, h.top.fallocate(h.frame(), fd, 0, 0, 2 << 20))
    for i in range(3):
        await h.mkdir(f"/d{i}")
    await fails(errno.ENOSPC, h.mkdir("/one-too-many"))
    await h.top.setattr(h.frame(), fd.inode, SetAttr(size=0), fd)
    assert h.top.used == 0
    unlimited = Harness.stack()
    sf = await unlimited.top.statfs(unlimited.frame(), unlimited.root)
    assert sf.blocks > 0 and sf.files > 0


# -- permissions ---------------------------------------------------------------------
async def test_new_nodes_owner_and_umask(h):
    await h.mkdir("/pub", 0o777, umask=0)
    u = user(h, 1000, 100)
    fd = await h.create("/pub/f", 0o666, umask=0o027, frame=u)
    a = await h.top.getattr(u, fd.inode)
    assert (a.uid, a.gid, stat.S_IMODE(a.mode)) == (1000, 100, 0o640)
    e = await h.mkdir("/pub/d", 0o777, umask=0o022, frame=u)
    assert (e.attr.uid, e.attr.gid, stat.S_IMODE(e.attr.mode)) == (1000, 100, 0o755)
    await fails(errno.EACCES, h.create("/f", frame=u))          # root's 0755 dir
    await fails(errno.EACCES, h.mkdir("/x", frame=u))


async def test_setgid_directory_inheritance(h):
    await h.mkdir("/g", 0o2777, umask=0)
    await h.setattr("/g", gid=50)
    u = user(h, 1000, 1000)
    fd = await h.create("/g/f", 0o2755, umask=0, frame=u)      # not in group 50
    a = await h.top.getattr(u, fd.inode)
    assert a.gid == 50 and not a.mode & stat.S_ISGID
    sub = await h.mkdir("/g/sub", 0o755, umask=0, frame=u)
    assert sub.attr.gid == 50 and sub.attr.mode & stat.S_ISGID


async def test_owner_group_other_and_supplementary_groups(h):
    await h.mkdir("/pub", 0o777, umask=0)
    owner = user(h, 1000, 1000)
    await h.write_file("/pub/f", b"secret")
    await h.setattr("/pub/f", uid=1000, gid=50, mode=0o640)
    await h.close(await h.open("/pub/f", os.O_RDWR, frame=owner))
    member = h.frame(2000, 2000, groups=(50,))
    stranger = h.frame(3000, 3000)
    fd = await h.open("/pub/f", os.O_RDONLY, frame=member)
    assert await h.read(fd, 10, frame=member) == b"secret"
    await fails(errno.EACCES, h.open("/pub/f", os.O_WRONLY, frame=member))
    await fails(errno.EACCES, h.open("/pub/f", os.O_RDONLY, frame=stranger))
    await fails(errno.EACCES, h.open("/pub/f", os.O_RDONLY | os.O_TRUNC, frame=member))
    f = (await h.lookup("/pub/f")).inode
    await h.top.access(member, f, os.R_OK)
    await fails(errno.EACCES, h.top.access(member, f, os.W_OK))
    await fails(errno.EACCES, h.top.access(h.frame(), f, os.X_OK))     # root, no x bit
    await h.top.access(h.frame(), f, os.R_OK | os.W_OK)                 # root bypass
    await h.setattr("/pub/f", mode=0)
    assert await h.read_file("/pub/f") == b"secret"                     # root reads 0000


async def test_search_and_read_permission_on_directories(h):
    await h.mkdir("/d", 0o700)
    await h.write_file("/d/f", b"")
    await h.mkdir("/r", 0o711)
    u = user(h)
    await fails(errno.EACCES, h.lookup("/d/f", frame=u))
    await h.lookup("/r", frame=u)
    await fails(errno.EACCES, h.listdir("/r", frame=u))                # opendir needs r
    await fails(errno.EACCES, h.listdir("/d", frame=u))


async def test_sticky_directory(h):
    await h.mkdir("/tmp", 0o1777, umask=0)
    alice, bob = user(h, 1001, 1001), user(h, 1002, 1002)
    await h.close(await h.create("/tmp/a", frame=alice))
    await fails(errno.EPERM, h.unlink("/tmp/a", frame=bob))
    await fails(errno.EPERM, h.rename("/tmp/a", "/tmp/b", frame=bob))
    await h.close(await h.create("/tmp/bobs", frame=bob))
    await fails(errno.EPERM, h.rename("/tmp/bobs", "/tmp/a", frame=bob))  # replace alice's
    await h.rename("/tmp/a", "/tmp/a2", frame=alice)
    await h.unlink("/tmp/a2")                                           # root may


async def test_chmod_chown_utimes_truncate_rules(h):
    await h.mkdir("/pub", 0o777, umask=0)
    owner, other = user(h, 1000, 1000), user(h, 2000, 2000)
    await h.write_file("/pub/f", b"data")
    await h.setattr("/pub/f", uid=1000, gid=1000, mode=0o666)
    await fails(errno.EPERM, h.setattr("/pub/f", frame=other, mode=0o777))
    await h.setattr("/pub/f", frame=owner, mode=0o664)
    await fails(errno.EPERM, h.setattr("/pub/f", frame=owner, uid=2000))
    await fails(errno.EPERM, h.setattr("/pub/f", frame=owner, gid=60))
    both = h.frame(1000, 1000, groups=(60,))
    a = await h.setattr("/pub/f", frame=both, gid=60)
    assert a.gid == 60
    a = await h.setattr("/pub/f", frame=owner, mode=0o2775)           # not in group 60
    assert not a.mode & stat.S_ISGID
    await fails(errno.EPERM, h.setattr("/pub/f", frame=other, atime_ns=1, mtime_ns=1))
    await h.setattr("/pub/f", frame=owner, atime_ns=1, mtime_ns=1)
    await h.setattr("/pub/f", mode=0o666)
    await h.setattr("/pub/f", frame=other, atime_ns=NOW, mtime_ns=NOW)  # may write
    await h.setattr("/pub/f", mode=0o644)
    await fails(errno.EACCES, h.setattr("/pub/f", frame=other, mtime_ns=NOW))
    await fails(errno.EACCES, h.setattr("/pub/f", frame=other, size=0))
    await h.setattr("/pub/f", frame=owner, size=1)
    a = await h.setattr("/pub/f", mode=0o6755)
    assert a.mode & 0o7777 == 0o6755
    a = await h.setattr("/pub/f", uid=1000)                            # chown drops suid
    assert a.mode & 0o7777 == 0o755


async def test_write_by_non_root_drops_suid(h):
    await h.mkdir("/pub", 0o777, umask=0)
    u = user(h)
    fd = await h.create("/pub/f", 0o777, umask=0, frame=u)
    await h.top.setattr(u, fd.inode, SetAttr(mode=0o4777), fd)
    await h.write(fd, b"x", frame=u)
    assert (await h.top.getattr(u, fd.inode)).mode & 0o7777 == 0o777


async def test_kernel_kill_privs_setattr_by_a_writer(h):
    """Without handle_killpriv the kernel clears set-id bits after a non-owner's write or
    truncate with a SETATTR of the mode from that caller: allowed when it only drops
    those bits of a file the caller may write; any other chmod stays the owner's."""
    await h.mkdir("/pub", 0o777, umask=0)
    fd = await h.create("/pub/f", 0o6777, umask=0)
    await h.close(fd)
    other = user(h, 1001, 1001)
    a = await h.setattr("/pub/f", frame=other, mode=0o777)
    assert a.mode & 0o7777 == 0o777
    await h.setattr("/pub/f", mode=0o6777)
    await fails(errno.EPERM, h.setattr("/pub/f", frame=other, mode=0o6775))  # more
    await h.setattr("/pub/f", mode=0o6755)
    await fails(errno.EPERM, h.setattr("/pub/f", frame=other, mode=0o755))   # no write


async def test_writeback_cache_times_from_a_writer(h):
    """ctime_ns comes only from a writeback-cache kernel flushing its c/mtime after a
    write, truncate or touch: explicit times from any writer then."""
    await h.mkdir("/pub", 0o777, umask=0)
    fd = await h.create("/pub/f", 0o666, umask=0)
    await h.close(fd)
    other = user(h, 1001, 1001)
    await fails(errno.EPERM, h.setattr("/pub/f", frame=other, mtime_ns=5))
    a = await h.setattr("/pub/f", frame=other, mtime_ns=5, ctime_ns=6)
    assert a.mtime_ns == 5
    await h.setattr("/pub/f", mode=0o644)
    await fails(errno.EPERM, h.setattr("/pub/f", frame=other, mtime_ns=7, ctime_ns=8))


async def test_rename_permissions(h):
    await h.mkdir("/a", 0o777, umask=0)
    await h.mkdir("/b", 0o777, umask=0)
    await h.mkdir("/a/rootdir", 0o755)                         # root's: its ".." is locked
    await h.mkdir("/ro", 0o755)
    u = user(h)
    await fails(errno.EACCES, h.rename("/a/rootdir", "/b/x", frame=u))
    await h.rename("/a/rootdir", "/a/renamed", frame=u)        # same parent: fine
    await h.close(await h.create("/a/f", frame=u))
    await fails(errno.EACCES, h.rename("/a/f", "/ro/f", frame=u))


# -- misc ----------------------------------------------------------------------------
async def test_forget_lk_ipc_and_stale(h):
    await h.write_file("/f", b"x")
    e = await h.lookup("/f")
    await h.top.forget(h.frame(), e.inode)
    assert h.top not in e.inode.ctx
    assert (await h.top.getattr(h.frame(), e.inode)).size == 1          # re-resolved
    fd = await h.open("/f")
    await fails(errno.ENOSYS, h.top.lk(h.frame(), fd, "setlk", None))
    await fails(errno.EOPNOTSUPP, h.top.ipc(h.frame(), "op"))
    await h.close(fd)
    await h.unlink("/f")
    await h.top.forget(h.frame(), e.inode)
    await fails(errno.ESTALE, h.top.getattr(h.frame(), e.inode))


async def test_parent_up_answers_child_up_and_dump(h):
    seen = []

    class Parent:
        def notify(self, event, data, source):
            seen.append(event)
    h.top.parents.append(Parent())
    h.top.notify(Event.PARENT_UP)
    assert seen == [Event.CHILD_UP]
    await h.write_file("/f", b"abc")
    d = h.top.dump()
    assert d["inodes"] == 2 and d["used_bytes"] == 4096


async def test_fop_error_is_fop_error(h):
    with pytest.raises(FopError):
        await h.lookup("/missing")
