"""storage/posix data fops against the raw directory: read/write (inline, threaded,
uncached, O_DIRECT), open flags, fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range, fsync,
and the lk fop (OFD record locks and flocks per owner)."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

import pytest
import trio

from xlators import LK_GET, LK_SET, LK_SETW, OFFSET_MAX, Fd, Loc, Lock
from xlators.testing import Harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")

KEEP, PUNCH, ZERO = 0x01, 0x02, 0x10
SEEK_DATA, SEEK_HOLE = 3, 4
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def raw_fallocate(fd: int, mode: int, off: int, length: int) -> None:
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def brick(tmp_path, **opts):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(exist_ok=True)
    b.mkdir(exist_ok=True)
    options = {"directory": str(a), "reserve": "0", **opts}
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": options})
    return h, str(a), str(b)


@pytest.fixture(params=["inline", "threads"])
def env(tmp_path, request):
    extra = {"io-threads": "on"} if request.param == "threads" else {}
    h, a, b = brick(tmp_path, **extra)
    yield h, h.top, a, b
    h.fini()


async def fails(err: int, coro) -> None:
    with pytest.raises(OSError) as info:
        await coro
    assert info.value.errno == err, (errno.errorcode[err],
                                     errno.errorcode.get(info.value.errno))


def drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def test_write_read_sizes_and_offsets(env):
    h, xl, a, b = env
    fd = await h.create("/f")
    rawfd = os.open(f"{b}/f", os.O_RDWR | os.O_CREAT, 0o644)
    blobs = [(0, b"hello"), (10, b"world"), (4096 * 3 + 7, os.urandom(200_000)),
             (1 << 20, os.urandom(70_000)), (5, b"")]
    for off, data in blobs:
        assert await h.write(fd, data, off) == os.pwrite(rawfd, data, off) == len(data)
    size = os.fstat(rawfd).st_size
    for off, n in ((0, 20), (0, size + 100), (4096 * 3, 300_000), (size - 3, 10),
                   (size, 10), (size + 5000, 10), (1 << 20, 1 << 17)):
        assert await h.read(fd, n, off) == os.pread(rawfd, n, off)
    assert (await h.stat("/f")).size == size
    await h.close(fd)
    os.close(rawfd)
    assert open(f"{a}/f", "rb").read() == open(f"{b}/f", "rb").read()


class ThreadSpy:
    """Counts trio.to_thread.run_sync calls."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        orig = trio.to_thread.run_sync

        async def spy(fn, *args, **kw):
            self.calls += 1
            return await orig(fn, *args, **kw)
        monkeypatch.setattr(trio.to_thread, "run_sync", spy)


async def test_uncached_reads_go_through_a_thread(tmp_path, monkeypatch):
    h, a, _ = brick(tmp_path)
    try:
        data = os.urandom(3 << 20)
        await h.write_file("/f", data)
        fd = await h.open("/f", os.O_RDONLY)
        spy = ThreadSpy(monkeypatch)
        assert await h.read(fd, 1 << 20, 0) == data[:1 << 20]        # cached: inline
        assert await h.read(fd, 10, (3 << 20) - 4) == data[-4:]      # short at EOF: inline
        assert spy.calls == 0
        drop_cache(f"{a}/f")
        assert await h.read(fd, 1 << 20, 1 << 20) == data[1 << 20:2 << 20]
        assert spy.calls == 1
        drop_cache(f"{a}/f")
        os.pread(os.open(f"{a}/f", os.O_RDONLY), 4096, 0)           # partly cached
        assert await h.read(fd, 256 << 10, 0) == data[:256 << 10]
        await h.close(fd)
    finally:
        h.fini()


async def test_open_flags_pass_through(env):
    h, xl, a, b = env
    await h.write_file("/f", b"0123456789")
    fd = await h.open("/f", os.O_WRONLY | os.O_APPEND)
    assert await h.write(fd, b"AB", 0) == 2                   # O_APPEND: at the end
    await h.close(fd)
    assert open(f"{a}/f", "rb").read() == b"0123456789AB"
    fd = await h.open("/f", os.O_RDWR | os.O_TRUNC | os.O_SYNC | os.O_NOATIME)
    assert (await h.stat("/f")).size == 0
    await h.write(fd, b"sync")
    await h.close(fd)
    fd = await h.open("/f", os.O_RDONLY | os.O_CREAT | os.O_EXCL)  # stripped on open
    await fails(errno.EBADF, h.write(fd, b"x"))
    await h.close(fd)
    fd = await h.open("/f", os.O_RDONLY | os.O_DIRECT)
    assert await h.read(fd, 4096, 0) == b"sync"
    await h.close(fd)
    await h.mkdir("/d")
    await fails(errno.EISDIR, h.open("/d", os.O_WRONLY))


async def test_o_direct_option_with_aligned_and_unaligned_requests(tmp_path):
    h, a, _ = brick(tmp_path, **{"o-direct": "on"})
    try:
        fd = await h.create("/f")
        assert fd.ctx[h.top].direct
        block = os.urandom(8192)
        assert await h.write(fd, block, 0) == 8192                   # aligned: direct
        assert await h.write(fd, b"tail", 8192) == 4                 # unaligned: buffered
        assert await h.read(fd, 4096, 4096) == block[4096:]
        assert await h.read(fd, 100, 8190) == block[-2:] + b"tail"
        await h.close(fd)
        assert open(f"{a}/f", "rb").read() == block + b"tail"
        fd = await h.open("/f", os.O_RDONLY)
        assert await h.read(fd, 8192, 0) == block
        await h.close(fd)
    finally:
        h.fini()


async def test_large_writes_use_threads_and_threshold_option(tmp_path, monkeypatch):
    h, a, _ = brick(tmp_path, **{"io-thread-threshold": "4KB"})
    try:
        fd = await h.create("/f")
        spy = ThreadSpy(monkeypatch)
        await h.write(fd, b"x" * 100)
        assert spy.calls == 0
        await h.write(fd, b"y" * 10000, 100)
        assert spy.calls == 1
        await h.top.fsync(h.frame(), fd, 0)                          # always a thread
        assert spy.calls == 2
        await h.close(fd)
        assert os.stat(f"{a}/f").st_size == 10100
    finally:
        h.fini()


async def test_fallocate_punch_hole_and_zero_range(env):
    h, xl, a, b = env
    data = os.urandom(64 << 10)
    fd = await h.create("/f")
    await h.write(fd, data)
    rawfd = os.open(f"{b}/f", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(rawfd, data, 0)
    fr = h.frame()
    for mode, off, length in ((PUNCH | KEEP, 4096, 8192), (ZERO, 20000, 5000),
                              (0, 60000, 100000), (KEEP, 200000, 8192),
                              (ZERO | KEEP, 1 << 20, 4096)):
        await xl.fallocate(fr, fd, mode, off, length)
        raw_fallocate(rawfd, mode, off, length)
        sa, sb = os.stat(f"{a}/f"), os.fstat(rawfd)
        assert (sa.st_size, sa.st_blocks) == (sb.st_size, sb.st_blocks)
    assert open(f"{a}/f", "rb").read() == open(f"{b}/f", "rb").read()
    with pytest.raises(OSError) as info:
        raw_fallocate(rawfd, PUNCH, 0, 10)
    await fails(info.value.errno, xl.fallocate(fr, fd, PUNCH, 0, 10))
    os.close(rawfd)
    await h.close(fd)


async def test_lseek_data_and_hole_on_a_sparse_file(env):
    h, xl, a, b = env
    fd = await h.create("/s")
    rawfd = os.open(f"{b}/s", os.O_RDWR | os.O_CREAT, 0o644)
    for off in (1 << 20, 5 << 20):
        await h.write(fd, b"D" * 4096, off)
        os.pwrite(rawfd, b"D" * 4096, off)
    await xl.setattr(h.frame(), fd.inode, __import__("xlators").SetAttr(size=8 << 20))
    os.ftruncate(rawfd, 8 << 20)
    fr = h.frame()
    for off in (0, 4096, (1 << 20) + 100, 2 << 20, (5 << 20) + 4095, (8 << 20) - 1, 8 << 20,
                9 << 20):
        for whence in (SEEK_DATA, SEEK_HOLE):
            try:
                want = ("ok", os.lseek(rawfd, off, whence))
            except OSError as e:
                want = ("err", e.errno)
            try:
                got = ("ok", await xl.lseek(fr, fd, off, whence))
            except OSError as e:
                got = ("err", e.errno)
            assert got == want, (off, whence)
    os.close(rawfd)
    await h.close(fd)


async def test_copy_file_range(env):
    h, xl, a, b = env
    data = os.urandom(300_000)
    await h.write_file("/src", data)
    src = await h.open("/src", os.O_RDONLY)
    dst = await h.create("/dst")
    n = await xl.copy_file_range(h.frame(), src, 1000, dst, 5, 200_000, 0)
    assert n == 200_000
    assert open(f"{a}/dst", "rb").read() == b"\0" * 5 + data[1000:201_000]
    assert await xl.copy_file_range(h.frame(), src, 300_000, dst, 0, 10, 0) == 0
    await fails(errno.EINVAL, xl.copy_file_range(h.frame(), src, 0, dst, 0, 10, 1))
    await h.close(src)
    await h.close(dst)


async def test_fsync_flush_release_and_bad_fds(env):
    h, xl, a, b = env
    fd = await h.create("/f")
    await h.write(fd, b"x")
    await xl.fsync(h.frame(), fd, 0)
    await xl.fsync(h.frame(), fd, 1)
    await h.close(fd)
    await fails(errno.EBADF, h.read(fd, 1))
    await fails(errno.EBADF, xl.fsync(h.frame(), fd, 0))
    dfd = Fd(h.root, is_dir=True)
    await xl.opendir(h.frame(), h.root, dfd)
    await xl.fsyncdir(h.frame(), dfd, 0)
    await xl.releasedir(h.frame(), dfd)
    await xl.release(h.frame(), fd)                      # twice: harmless


async def test_writes_by_others_clear_setid_bits(env):
    h, xl, a, b = env
    await h.write_file("/f", b"x")
    os.chmod(f"{a}/f", 0o6777)
    await h.stat("/f")
    fd = await h.open("/f", os.O_RDWR, frame=h.frame(1000, 1000))
    await h.write(fd, b"y", 0, frame=h.frame(1000, 1000))
    assert stat.S_IMODE(os.stat(f"{a}/f").st_mode) == 0o0777
    await h.close(fd)
    os.chmod(f"{a}/f", 0o6777)
    fd = await h.open("/f", os.O_RDWR)
    await h.write(fd, b"z", 0)                            # root keeps them
    assert stat.S_IMODE(os.stat(f"{a}/f").st_mode) == 0o6777
    await h.close(fd)


# -- locks ----------------------------------------------------------------------------------
def wr(start=0, end=OFFSET_MAX, owner=1, pid=10, flock=False, type=fcntl.F_WRLCK):
    return Lock(type, start, end, pid, owner, flock)


async def test_posix_locks_between_owners(env):
    h, xl, a, b = env
    await h.write_file("/f", b"x" * 100)
    f1 = await h.open("/f")
    f2 = await h.open("/f")
    fr = h.frame()
    assert await xl.lk(fr, f1, LK_SET, wr(0, 49, owner=1, pid=111)) == wr(0, 49, 1, 111)
    await fails(errno.EAGAIN, xl.lk(fr, f2, LK_SET, wr(10, 20, owner=2)))
    await xl.lk(fr, f2, LK_SET, wr(50, 99, owner=2, pid=222))       # no overlap
    got = await xl.lk(fr, f2, LK_GET, wr(0, 10, owner=2, type=fcntl.F_RDLCK))
    assert (got.type, got.start, got.end, got.pid) == (fcntl.F_WRLCK, 0, 49, 111)
    got = await xl.lk(fr, f1, LK_GET, wr(0, 10, owner=1))           # its own: no conflict
    assert got.type == fcntl.F_UNLCK
    await xl.lk(fr, f1, LK_SET, wr(0, 49, owner=1, pid=111))        # same owner, other fd
    await xl.lk(fr, f2, LK_SET, wr(0, 9, owner=1, type=fcntl.F_UNLCK))
    await xl.lk(fr, f2, LK_SET, wr(0, 9, owner=2))                   # freed range
    # a raw process on the brick sees the locks
    rawfd = os.open(f"{a}/f", os.O_RDWR)
    with pytest.raises(OSError):
        fcntl.lockf(rawfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 20)
    os.close(rawfd)
    # flush by the owner drops its POSIX locks (close semantics)
    await xl.flush(h.frame(lk_owner=1), f1)
    await xl.lk(fr, f2, LK_SET, wr(20, 30, owner=2))
    await h.close(f1)
    await h.close(f2)


async def test_setlkw_waits_and_can_be_cancelled(env):
    h, xl, a, b = env
    await h.write_file("/f", b"")
    f1, f2 = await h.open("/f"), await h.open("/f")
    fr = h.frame()
    await xl.lk(fr, f1, LK_SET, wr(owner=1))
    got = []
    async with trio.open_nursery() as n:
        async def waiter():
            got.append(await xl.lk(fr, f2, LK_SETW, wr(owner=2)))
        n.start_soon(waiter)
        await trio.sleep(0.05)
        assert not got
        await xl.lk(fr, f1, LK_SET, wr(owner=1, type=fcntl.F_UNLCK))
    assert got and got[0].owner == 2
    with trio.move_on_after(0.1) as scope:
        await xl.lk(fr, f1, LK_SETW, wr(owner=1))
    assert scope.cancelled_caught
    await h.close(f1)
    await h.close(f2)
    f3 = await h.open("/f")                              # every lock went with the closes
    await xl.lk(fr, f3, LK_SET, wr(owner=3))
    await h.close(f3)


async def test_flock_per_owner(env):
    h, xl, a, b = env
    await h.write_file("/f", b"")
    f1, f2 = await h.open("/f", os.O_RDONLY), await h.open("/f", os.O_RDONLY)
    fr = h.frame()
    await xl.lk(fr, f1, LK_SET, wr(owner=7, flock=True))
    await fails(errno.EAGAIN, xl.lk(fr, f2, LK_SET, wr(owner=8, flock=True)))
    await xl.lk(fr, f2, LK_SET, wr(owner=8, type=fcntl.F_WRLCK))   # POSIX: independent
    f1.lk_owner = 7
    await xl.release(fr, f1)                                       # releases the flock
    await xl.lk(fr, f2, LK_SET, wr(owner=8, flock=True, type=fcntl.F_RDLCK))
    await h.close(f2)
    f1.inode.refs -= 1


async def test_lk_on_a_directory(env):
    h, xl, a, b = env
    await h.mkdir("/d")
    e = await h.lookup("/d")
    fd = Fd(e.inode, is_dir=True)
    await xl.opendir(h.frame(), e.inode, fd)
    await xl.lk(h.frame(), fd, LK_SET, wr(owner=1, flock=True))
    await xl.releasedir(h.frame(), fd)
    await xl.forget(h.frame(), e.inode)


async def test_create_loc_and_entry(env):
    h, xl, a, b = env
    fd = Fd(h.root)
    e = await xl.create(h.frame(), Loc(h.root, b"c"), os.O_WRONLY | os.O_CREAT, 0o100600,
                        0o022, fd)
    assert e.attr.ino == os.stat(f"{a}/c").st_ino and e.inode.ctx[xl].opens == 1
    await fails(errno.EBADF, xl.readv(h.frame(), fd, 1, 0))
    await xl.release(h.frame(), fd)
    assert e.inode.ctx[xl].opens == 0


async def test_create_leaves_a_blocking_descriptor_unless_asked(env):
    """A new file is opened without O_NONBLOCK (an exclusive create cannot meet a FIFO);
    an existing one is opened O_NONBLOCK (a FIFO would block) and set back; O_NONBLOCK
    asked for stays."""
    h, xl, a, b = env
    open(f"{a}/old", "wb").close()
    for name, flags, nonblock in ((b"new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, False),
                                  (b"old", os.O_WRONLY | os.O_CREAT, False),
                                  (b"nb", os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, True),
                                  (b"old", os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, True)):
        fd = Fd(h.root)
        await xl.create(h.frame(), Loc(h.root, name), flags, 0o100600, 0o022, fd)
        got = fcntl.fcntl(fd.ctx[xl].fd, fcntl.F_GETFL)
        assert bool(got & os.O_NONBLOCK) is nonblock, (name, oct(got))
        assert bool(fd.ctx[xl].flags & os.O_NONBLOCK) is nonblock, name
        await xl.release(h.frame(), fd)


async def test_noatime_for_the_owner_and_everyone_else(env):
    """An O_NOATIME open by a caller who may not have it (not the owner) is opened
    without it, then the daemon sets it: the kernel already allowed it above."""
    h, xl, a, b = env
    await h.write_file("/f", b"x")
    os.chmod(f"{a}/f", 0o644)
    user = h.frame(1000, 1000)
    fd = await h.open("/f", os.O_RDONLY | os.O_NOATIME, frame=user)   # not EPERM
    assert fd.ctx[xl].flags & os.O_NOATIME
    assert fcntl.fcntl(fd.ctx[xl].fd, fcntl.F_GETFL) & os.O_NOATIME
    await h.close(fd)
    os.chown(f"{a}/f", 1000, 1000)
    fd = await h.open("/f", os.O_RDONLY | os.O_NOATIME, frame=user)
    assert fd.ctx[xl].flags & os.O_NOATIME
    await h.close(fd)


async def test_kernel_requests_to_clear_setid_bits(env):
    from xlators import SetAttr
    h, xl, a, b = env
    await h.write_file("/f", b"x")
    os.chown(f"{a}/f", 0, 1000)
    os.chmod(f"{a}/f", 0o6775)                 # root's, group-writable by 1000
    e = await h.lookup("/f")
    user, other = h.frame(1000, 1000), h.frame(1002, 1002)
    await fails(errno.EPERM, xl.setattr(user, e.inode, SetAttr(mode=0o7775)))  # not only
    await fails(errno.EACCES, xl.setattr(other, e.inode, SetAttr(mode=0o0775)))  # can't write
    a1 = await xl.setattr(user, e.inode, SetAttr(mode=0o4775))                # kill by writer
    assert stat.S_IMODE(a1.mode) == 0o4775
    a1 = await xl.setattr(user, e.inode, SetAttr(mode=0o0775))
    assert stat.S_IMODE(a1.mode) == 0o775
    os.chmod(f"{a}/f", 0o6775)
    a2 = await xl.setattr(user, e.inode, SetAttr(size=0, kill_suidgid=True))
    assert stat.S_IMODE(a2.mode) == 0o775 and a2.size == 0
    await fails(errno.EPERM, xl.setattr(user, e.inode, SetAttr(mode=0o777)))
