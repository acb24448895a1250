"""Offsets, lengths, sizes and flags at the edges of their kernel types, on both storages.

The bridge passes the kernel's unsigned fields through, so an application's -1 reaches a
storage as 2**64-1.  storage/posix (over ext4 here) and storage/memory (tmpfs-like) must
answer what ext4 and tmpfs answer to the same system call (the numbers in the tables were
measured on this kernel with pread/pwrite/lseek/ftruncate/fallocate/copy_file_range/
fsetxattr on an ext4 directory and on /dev/shm), never an EIO from an OverflowError, and
storage/memory must answer a request over an exabyte range as fast as one over a block.

A watchdog (SIGALRM) turns a hang into a failure: a fop that walks a huge range never
returns to the event loop, so no trio timeout could stop it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal

import pytest

from xlators import Fd, SetAttr
from xlators.core.bounds import MAX_RW_COUNT, VALID_OPEN_FLAGS
from xlators.core.types import O_EXEC_OPEN
from xlators.testing import Harness

KEEP, PUNCH, ZERO = 0x01, 0x02, 0x10
SEEK_END, SEEK_DATA, SEEK_HOLE = 2, 3, 4
EiB = 1 << 60
MAX = (1 << 63) - 1
# The boundary values of a kernel u64, as an application's values arrive: 2**64-1 is -1.
U64_EDGES = (MAX, 1 << 63, (1 << 64) - 1, 1 << 31, (1 << 32) - 1)
U32_EDGES = (1 << 31, (1 << 32) - 1)


class Hung(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: float = 30.0):
    """Fail (instead of hanging the suite) if the block does not finish in time: a guard
    against a fop that works in proportion to a range, not a timing assertion."""
    def fire(signum, frame):
        raise Hung(f"still running after {seconds} s: work proportional to the range?")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


async def fails(err: int, coro) -> None:
    with pytest.raises(OSError) as info:
        await coro
    assert info.value.errno == err, (errno.errorcode[err],
                                     errno.errorcode.get(info.value.errno), info.value)


def memory(size: str = "1MB") -> Harness:
    return Harness.stack(options={"storage/memory": {"size": size}})


@pytest.fixture(params=["memory", "posix"])
def h(request, tmp_path):
    if request.param == "memory":
        harness = memory()
    else:
        if os.geteuid() != 0:
            pytest.skip("storage/posix tests run as root")
        harness = Harness.stack(leaf="storage/posix", options={"storage/posix": {
            "directory": str(tmp_path), "reserve": "0"}})
    harness.kind = request.param
    yield harness
    harness.fini()


async def ten(h: Harness, path: str = "/f") -> Fd:
    fd = await h.create(path)
    await h.write(fd, b"0123456789")
    return fd


def per_storage(h: Harness, ext4, tmpfs):
    """What ext4 (under storage/posix) and tmpfs (as storage/memory) answer."""
    return ext4 if h.kind == "posix" else tmpfs


# -- storage/memory: no work or memory proportional to a requested range ---------------
async def test_memory_fallocate_of_exabytes_fails_fast_with_enospc():
    h = memory()
    fd = await h.create("/f")
    top, fr = h.top, h.frame()
    with watchdog():
        for mode in (0, KEEP, ZERO, ZERO | KEEP):
            await fails(errno.ENOSPC, top.fallocate(fr, fd, mode, 0, 4 * EiB))   # as tmpfs
            await fails(errno.ENOSPC, top.fallocate(fr, fd, mode, 0, MAX))
            await fails(errno.ENOSPC, top.fallocate(fr, fd, mode, EiB, 64 << 30))
        await fails(errno.EFBIG, top.fallocate(fr, fd, 0, 1, MAX))
        await fails(errno.EFBIG, top.fallocate(fr, fd, 0, MAX, 1))
    a = await top.getattr(fr, fd.inode)
    assert (a.size, a.blocks, top.used) == (0, 0, 0)          # a refused call changes nothing


async def test_memory_unlimited_brick_refuses_more_than_half_the_ram():
    """size 0 is half of the RAM (what statfs reports), not a licence to allocate 4 EiB."""
    h = Harness.stack()
    fd = await h.create("/f")
    top, fr = h.top, h.frame()
    sf = await top.statfs(fr, h.root)
    with watchdog():
        await fails(errno.ENOSPC, top.fallocate(fr, fd, 0, 0, 4 * EiB))
        await fails(errno.ENOSPC, top.fallocate(fr, fd, 0, 0, sf.bfree * sf.bsize + 4096))
    big = min(1 << 30, sf.bfree * sf.bsize // 2)             # accounted, not backed
    await top.fallocate(fr, fd, 0, 0, big)
    assert (await top.getattr(fr, fd.inode)).blocks == big // 512
    assert (await top.statfs(fr, h.root)).bfree == sf.bfree - big // sf.bsize


async def test_memory_sparse_exabyte_file_costs_what_it_stores():
    h = memory()
    fd = await h.create("/f")
    top, fr = h.top, h.frame()
    with watchdog():
        await top.setattr(fr, fd.inode, SetAttr(size=4 * EiB), fd)
        assert await h.write(fd, b"tail", 1 << 62) == 4         # a write at 2**62: as tmpfs
        assert await h.write(fd, b"head", 0) == 4
        await top.setattr(fr, fd.inode, SetAttr(size=MAX), fd)
        a = await top.getattr(fr, fd.inode)
        assert (a.size, a.blocks) == (MAX, 16)                  # two pages
        assert top.used == 8192
        assert await h.read(fd, 6, (1 << 62) - 2) == b"\0\0tail"
        assert await top.lseek(fr, fd, 4, SEEK_DATA) == 4              # in the first page
        assert await top.lseek(fr, fd, 4096, SEEK_DATA) == 1 << 62
        assert await top.lseek(fr, fd, 0, SEEK_HOLE) == 4096
        assert await top.lseek(fr, fd, (1 << 62) + 1, SEEK_HOLE) == (1 << 62) + 4096
        await fails(errno.ENXIO, top.lseek(fr, fd, (1 << 62) + 4096, SEEK_DATA))
        assert await top.lseek(fr, fd, 2 * EiB, SEEK_HOLE) == 2 * EiB
        # zero-range would allocate it all; punching the whole file frees the two pages
        await fails(errno.ENOSPC, top.fallocate(fr, fd, ZERO | KEEP, 2, MAX - 2))
        assert await h.read(fd, 4, 0) == b"head"
        await top.fallocate(fr, fd, PUNCH | KEEP, 2, MAX - 2)
        assert await h.read(fd, 4, 0) == b"he\0\0"
        assert await h.read(fd, 4, 1 << 62) == bytes(4)
        assert (await top.getattr(fr, fd.inode)).blocks == 8     # the partial first page
        await top.fallocate(fr, fd, PUNCH | KEEP, 0, MAX)
        assert (await top.getattr(fr, fd.inode)).blocks == 0 and top.used == 0
        assert await h.read(fd, 1 << 20, EiB) == bytes(1 << 20)      # a hole reads zeros
        await h.write(fd, b"again", 3 * EiB)
        await top.setattr(fr, fd.inode, SetAttr(size=0), fd)
    assert top.used == 0


async def test_memory_copy_file_range_of_a_sparse_exabyte_file():
    h = memory()
    src = await h.create("/src")
    dst = await h.create("/dst")
    top, fr = h.top, h.frame()
    await h.write(src, b"head", 0)
    await h.write(src, b"tail", 1 << 62)
    await h.write(dst, b"x" * 10000, 0)
    with watchdog():
        # one call moves at most MAX_RW_COUNT bytes, as the kernel's copy does
        assert await top.copy_file_range(fr, src, 0, dst, 2, (1 << 64) - 1, 0) == MAX_RW_COUNT
        assert await h.read(dst, 8, 0) == b"xxhead\0\0"     # the source's hole overwrites
        assert await h.read(dst, 4, 9000) == bytes(4)
        assert (await top.getattr(fr, dst.inode)).size == MAX_RW_COUNT + 2
        # the source's last 8 bytes (a hole, then "tail") to 2 EiB
        assert await top.copy_file_range(fr, src, (1 << 62) - 4, dst, 2 * EiB, 1 << 40, 0) == 8
        assert await h.read(dst, 8, 2 * EiB) == b"\0\0\0\0tail"
    assert top.used == (await top.getattr(fr, dst.inode)).blocks * 512 + 8192
    await fails(errno.ENOSPC, top.fallocate(fr, dst, 0, 0, 2 << 20))


# -- readdir / readdirp with a 0-byte budget --------------------------------------------
@pytest.mark.parametrize("plus", [False, True])
async def test_readdir_with_no_room_returns_nothing(h, plus):
    """An empty batch, as libfuse gives for a buffer too small for one entry (the bridge
    already answers so for 1..23 bytes); it used to spin forever in posix's readdirp."""
    for i in range(3):
        await h.close(await h.create(f"/f{i}"))
    e = await h.lookup("/")
    fr = h.frame()
    fd = Fd(e.inode, os.O_RDONLY, fr.pid, is_dir=True)
    await h.top.opendir(fr, e.inode, fd)
    fop = h.top.readdirp if plus else h.top.readdir
    with watchdog():
        for offset in (0, 1, 3, (1 << 64) - 1):
            assert await fop(fr, fd, offset, 0) == []
    names = [d.name for d in await fop(fr, fd, 0, 4096)]
    assert sorted(names) == [b".", b"..", b"f0", b"f1", b"f2"]
    assert await fop(fr, fd, (1 << 64) - 1, 4096) == []     # a cookie past the end
    await h.top.releasedir(fr, fd)


# -- every fop at the edges of its kernel type, on both storages -------------------------
@pytest.mark.parametrize("offset", U64_EDGES)
async def test_read_offsets(h, offset):
    fd = await ten(h)
    if offset >= 1 << 63 or offset + 10 > MAX:       # negative, or the end passes 2**63-1
        await fails(errno.EINVAL, h.read(fd, 10, offset))
    else:
        assert await h.read(fd, 10, offset) == b""
    await h.close(fd)


@pytest.mark.parametrize("size", U32_EDGES)
async def test_read_sizes(h, size):
    fd = await ten(h)
    assert await h.read(fd, size, 0) == b"0123456789"
    assert await h.read(fd, size, 4) == b"456789"
    await h.close(fd)


@pytest.mark.parametrize("offset", U64_EDGES + (1 << 62,))
async def test_write_offsets(h, offset):
    fd = await ten(h)
    if offset >= 1 << 63 or offset + 1 > MAX:
        await fails(errno.EINVAL, h.write(fd, b"x", offset))
    elif offset == 1 << 62:
        if h.kind == "posix":
            await fails(errno.EFBIG, h.write(fd, b"x", offset))    # past ext4's 16 TiB
        else:
            assert await h.write(fd, b"x", offset) == 1            # tmpfs takes it
    else:
        assert await h.write(fd, b"x", offset) == 1
        assert await h.read(fd, 2, offset) == b"x"
    await h.close(fd)


@pytest.mark.parametrize("offset", U64_EDGES)
async def test_lseek_offsets(h, offset):
    fd = await ten(h)
    top, fr = h.top, h.frame()
    for whence in (SEEK_DATA, SEEK_HOLE):             # -1 and every offset past EOF: ENXIO
        await fails(errno.ENXIO, top.lseek(fr, fd, offset, whence))
    assert await top.lseek(fr, fd, (1 << 64) - 3, SEEK_END) == 7          # SEEK_END, -3
    if offset >= 1 << 63:
        await fails(errno.EINVAL, top.lseek(fr, fd, (1 << 64) - 11, SEEK_END))   # -11
    await h.close(fd)


@pytest.mark.parametrize("whence", U32_EDGES + (5,))
async def test_lseek_unknown_whence(h, whence):
    fd = await ten(h)
    await fails(errno.EINVAL, h.top.lseek(h.frame(), fd, 0, whence))
    await h.close(fd)


@pytest.mark.parametrize("high", U32_EDGES)
async def test_open_and_create_ignore_unknown_flags(h, high):
    """open(2) ignores flag bits it does not know (measured: O_RDWR|0x80000000 opens)."""
    unknown = high & ~VALID_OPEN_FLAGS
    await h.close(await ten(h))
    fd = await h.open("/f", os.O_RDWR | unknown)
    assert await h.write(fd, b"ab", 0) == 2
    assert await h.read(fd, 3, 0) == b"ab2"
    await h.close(fd)
    fd = await h.create("/g", flags=os.O_RDWR | os.O_CREAT | unknown)
    assert await h.write(fd, b"cd", 0) == 2
    assert await h.read(fd, 3, 0) == b"cd"
    await h.close(fd)


@pytest.mark.parametrize("flags", U32_EDGES + (4, 8))
async def test_setxattr_unknown_flags_einval(h, flags):
    await h.close(await ten(h))
    e = await h.lookup("/f")
    await fails(errno.EINVAL, h.top.setxattr(h.frame(), e.inode, b"user.k", b"v", flags))
    await h.top.setxattr(h.frame(), e.inode, b"user.k", b"v", 1)        # XATTR_CREATE
    assert await h.top.getxattr(h.frame(), e.inode, b"user.k") == b"v"


@pytest.mark.parametrize("size", U64_EDGES)
async def test_setattr_sizes(h, size):
    fd = await ten(h)
    top, fr = h.top, h.frame()
    if size >= 1 << 63:
        await fails(errno.EINVAL, top.setattr(fr, fd.inode, SetAttr(size=size), fd))
        await fails(errno.EINVAL, h.setattr("/f", size=size))
        assert (await top.getattr(fr, fd.inode)).size == 10
    elif size == MAX and h.kind == "posix":
        await fails(errno.EFBIG, top.setattr(fr, fd.inode, SetAttr(size=size), fd))
    else:                                             # tmpfs takes 2**63-1 too
        with watchdog():
            a = await top.setattr(fr, fd.inode, SetAttr(size=size), fd)
            assert a.size == size
            assert await h.read(fd, 4, 8) == b"89\0\0"
            await top.setattr(fr, fd.inode, SetAttr(size=3), fd)
    await h.close(fd)


@pytest.mark.parametrize("value", U64_EDGES)
async def test_copy_file_range_edges(h, value):
    src = await ten(h, "/src")
    dst = await h.create("/dst")
    top, fr = h.top, h.frame()
    with watchdog():
        # any length: the copy stops at the source's end
        assert await top.copy_file_range(fr, src, 0, dst, 0, value, 0) == 10
        assert await h.read(dst, 20, 0) == b"0123456789"
        if value >= 1 << 63:
            await fails(errno.EINVAL, top.copy_file_range(fr, src, value, dst, 0, 5, 0))
            await fails(errno.EINVAL, top.copy_file_range(fr, src, 0, dst, value, 5, 0))
        else:
            assert await top.copy_file_range(fr, src, value, dst, 0, 5, 0) == 0   # past EOF
            if value + 5 > MAX:
                await fails(errno.EFBIG, top.copy_file_range(fr, src, 0, dst, value, 5, 0))
            else:
                assert await top.copy_file_range(fr, src, 0, dst, value, 5, 0) == 5
                assert await h.read(dst, 5, value) == b"01234"
        await fails(errno.EINVAL, top.copy_file_range(fr, src, 0, dst, 0, 5, value))  # flags
    await h.close(src)
    await h.close(dst)


@pytest.mark.parametrize("value", U64_EDGES)
async def test_fallocate_edges(h, value):
    fd = await ten(h)
    top, fr = h.top, h.frame()
    with watchdog():
        for mode in (0, KEEP, PUNCH | KEEP):
            # offset
            if value >= 1 << 63:
                await fails(errno.EINVAL, top.fallocate(fr, fd, mode, value, 1))
            elif value == MAX:
                await fails(errno.EFBIG, top.fallocate(fr, fd, mode, value, 1))
            else:
                await top.fallocate(fr, fd, mode, value, 1)
            # length
            if value >= 1 << 63:
                await fails(errno.EINVAL, top.fallocate(fr, fd, mode, 0, value))
            elif value == MAX:
                await fails(errno.EFBIG, top.fallocate(fr, fd, mode, 1, value))
                if mode & PUNCH and h.kind == "memory":
                    await top.fallocate(fr, fd, mode, 0, value)      # tmpfs punches it all
                else:                                      # ext4: past 16 TiB; tmpfs: space
                    await fails(per_storage(h, errno.EFBIG, errno.ENOSPC),
                                top.fallocate(fr, fd, mode, 0, value))
            elif mode & PUNCH:
                await top.fallocate(fr, fd, mode, 0, value)
        for mode in U32_EDGES:                     # unknown mode bits
            await fails(errno.EOPNOTSUPP, top.fallocate(fr, fd, mode, 0, 1))
    await h.close(fd)


# -- storage/memory's block map against tmpfs itself -----------------------------------
def _tmpfs_dir() -> str | None:
    try:
        with open("/proc/self/mounts") as f:
            if any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f):
                return "/dev/shm"
    except OSError:
        pass
    return None


def _seek(fd: int, offset: int, whence: int):
    try:
        return os.lseek(fd, offset, whence)
    except OSError as e:
        return errno.errorcode[e.errno]


async def _mseek(h: Harness, fd: Fd, offset: int, whence: int):
    try:
        return await h.top.lseek(h.frame(), fd, offset, whence)
    except OSError as e:
        return errno.errorcode[e.errno]


@pytest.mark.skipif(_tmpfs_dir() is None, reason="no tmpfs at /dev/shm to compare with")
async def test_memory_matches_tmpfs_blocks_data_and_holes(tmp_path):
    """Random writes, truncates, fallocates and punches on storage/memory and on a tmpfs
    file: the same bytes, size, st_blocks and SEEK_DATA/SEEK_HOLE answers.

    Fallocated pages are holes to SEEK_DATA until written, except that tmpfs turns a page
    fallocated a second time (still unwritten) into data: an implementation detail that
    storage/memory does not copy, so the test never fallocates such a page twice."""
    import ctypes
    import random
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    rng = random.Random(20261206)
    h = memory("64MB")
    mfd = await h.create("/f")
    path = f"{_tmpfs_dir()}/xlfs-bounds-{os.getpid()}"
    tfd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    top, fr = h.top, h.frame()
    span = 300_000
    page = 4096
    unwritten: set[int] = set()            # pages fallocated once and not written since

    def pages(a: int, b: int) -> set[int]:
        return set(range(a // page, -(-b // page)))
    try:
        for step in range(400):
            op = rng.random()
            off = rng.randrange(span)
            n = rng.randrange(1, 70_000)
            mode = rng.choice((0, KEEP, PUNCH | KEEP))
            if mode != PUNCH | KEEP and pages(off, off + n) & unwritten:
                mode = PUNCH | KEEP
            if op < 0.35:
                data = rng.randbytes(n)
                assert await h.write(mfd, data, off) == os.pwrite(tfd, data, off)
                unwritten -= pages(off, off + n)
            elif op < 0.5:
                await top.setattr(fr, mfd.inode, SetAttr(size=off), mfd)
                os.ftruncate(tfd, off)
                unwritten = {p for p in unwritten if p < -(-off // page)}
            else:
                if mode == PUNCH | KEEP:
                    unwritten -= set(range(-(-off // page), (off + n) // page))
                else:
                    unwritten |= {p for p in pages(off, off + n)
                                  if await _mseek(h, mfd, p * page, SEEK_DATA) != p * page}
                await top.fallocate(fr, mfd, mode, off, n)
                assert libc.fallocate(tfd, mode, off, n) == 0, ctypes.get_errno()
            st = os.fstat(tfd)
            a = await top.getattr(fr, mfd.inode)
            assert (a.size, a.blocks) == (st.st_size, st.st_blocks), step
            for o in (off, off + n, rng.randrange(span), 0, st.st_size - 1):
                for whence in (SEEK_DATA, SEEK_HOLE):
                    assert await _mseek(h, mfd, o, whence) == _seek(tfd, o, whence), \
                        (step, o, whence)
            if step % 20 == 0:
                assert await h.read(mfd, span * 2, 0) == os.pread(tfd, span * 2, 0)
    finally:
        os.close(tfd)
        os.unlink(path)


def test_extents_match_a_set_of_positions():
    """storage/memory's extent map against the obvious model (a set of positions)."""
    import random

    from xlators.storage.memory_extents import Extents
    rng = random.Random(7)
    e, model = Extents(), set()
    for _ in range(3000):
        a = rng.randrange(200)
        b = a + rng.randrange(0, 40)
        if rng.random() < 0.55:
            assert e.add(a, b) == len(set(range(a, b)) - model)
            model |= set(range(a, b))
        else:
            assert e.remove(a, b) == len(set(range(a, b)) & model)
            model -= set(range(a, b))
        assert e.total == len(model)
        assert all(s < t for s, t in e.spans())
        assert all(t < s for (_, t), (s, _) in zip(e.spans(), e.spans()[1:]))  # not adjacent
        p = rng.randrange(250)
        assert e.next_in(p) == min((x for x in model if x >= p), default=None)
        assert e.next_out(p) == min(x for x in range(p, 300) if x not in model)
        q = p + rng.randrange(50)
        assert e.covered(p, q) == len(model & set(range(p, q)))


def test_bounds_helpers():
    """The kernel's rules in xlators/core/bounds.py, value by value."""
    from xlators.core import bounds
    assert [bounds.loff(v) for v in U64_EDGES] == [MAX, -(1 << 63), -1, 1 << 31, (1 << 32) - 1]
    assert bounds.loff(-5) == -5                          # translators may pass signed values
    with pytest.raises(OSError):
        bounds.loff(1 << 64)
    assert bounds.rw_range(0, (1 << 32) - 1) == (0, MAX_RW_COUNT)      # one transfer's most
    assert bounds.rw_range(MAX - 10, 10) == (MAX - 10, 10)
    for off, n in (((1 << 64) - 1, 1), (MAX - 10, 11), (0, -1)):
        with pytest.raises(OSError) as info:
            bounds.rw_range(off, n)
        assert info.value.errno == errno.EINVAL
    assert bounds.copy_range(0, 0, (1 << 64) - 1) == (0, 0, MAX_RW_COUNT)
    assert bounds.new_size((1 << 32) - 1) == (1 << 32) - 1
    for args, err in ((((1 << 64) - 1,), errno.EINVAL), ((MAX, 1 << 44), errno.EFBIG)):
        with pytest.raises(OSError) as info:
            bounds.new_size(*args)
        assert info.value.errno == err
    for (off, n), err in (((0, 0), errno.EINVAL), ((1 << 63, 1), errno.EINVAL),
                          ((0, (1 << 64) - 1), errno.EINVAL), ((1, MAX), errno.EFBIG)):
        with pytest.raises(OSError) as info:
            bounds.falloc_range(off, n)
        assert info.value.errno == err
    assert bounds.open_flags(0xFFFFFFFF) == bounds.VALID_OPEN_FLAGS | O_EXEC_OPEN
    assert bounds.open_flags(os.O_RDWR | 1 << 31) == os.O_RDWR
    assert bounds.xattr_flags(3) == 3
