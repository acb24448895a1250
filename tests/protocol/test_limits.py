"""Sizes the kernel sends are capped at what INIT negotiated, and entries a READDIRPLUS
(or LOOKUP) linked but the kernel never received are released: over storage/posix (a
temporary brick) and storage/memory, through the fake kernel."""
from __future__ import annotations

import errno
import socket
import stat

import pytest
import trio

from fuse_bridge import abi
from tests.protocol.kernel import ALL_FLAGS, cstr, serve
from tests.protocol.limits_lib import graph, open_fds
from xlators.core.inode import InodeTable, LinkPins

try:
    import tracemalloc
except ImportError:                 # PyPy has no tracemalloc
    tracemalloc = None
needs_tracemalloc = pytest.mark.skipif(tracemalloc is None, reason="no tracemalloc (PyPy)")

O = abi.Opcode
I = abi.InitFlag
HUGE = (1 << 32) - 1                 # the largest u32 size a request can carry
MIB = 1 << 20
PEAK_LIMIT = 64 * MIB                # far above any reply, far below the sizes asked


@pytest.fixture(params=["posix", "memory"])
def kind(request):
    return request.param


@pytest.fixture
def make(kind, tmp_path):
    brick = tmp_path / "brick"
    brick.mkdir()
    return lambda *over: graph(kind, str(brick), *over)


def cap_of(k) -> int:
    """What this kernel asks at most per READ/READDIR: max_pages pages (32 by default)."""
    pages = k.init_reply.max_pages if k.init_reply.flags & I.MAX_PAGES else 32
    return pages * abi.PAGE_SIZE


async def traced_call(k, opcode, body, nodeid):
    """One request with tracemalloc on: (reply, peak bytes allocated meanwhile)."""
    tracemalloc.start()
    try:
        r = await k.call(opcode, body, nodeid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return r, peak


async def forget_all(k, s, handed: dict) -> None:
    await k.batch_forget(list(handed.items()))
    handed.clear()
    await k.sync()


# --------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("flags", [ALL_FLAGS, ALL_FLAGS & ~I.MAX_PAGES],
                         ids=["max_pages", "default_pages"])
@needs_tracemalloc
async def test_read_is_capped_at_the_negotiated_size(make, flags):
    async with serve(make(), flags=flags) as (k, s):
        cap = cap_of(k)
        e, o = (await k.create(1, b"big")).create()
        chunk = bytes(range(256)) * (cap // 256)
        for i in range(3):
            assert (await k.write(e.nodeid, o.fh, chunk, i * cap)).u32() == cap
        r, peak = await traced_call(k, O.READ, abi.READ_IN.pack(o.fh, 0, HUGE, 0, 0, 0),
                                    e.nodeid)
        assert r.ok().body == chunk, (len(r.body), cap)
        assert peak < PEAK_LIMIT, peak
        (await k.release(e.nodeid, o.fh)).ok()


@pytest.mark.parametrize("plus", [False, True], ids=["readdir", "readdirplus"])
@needs_tracemalloc
async def test_readdir_buffer_is_capped(make, plus):
    async with serve(make()) as (k, s):
        handed = {}
        for i in range(20):
            handed[(await k.mknod(1, b"f%02d" % i, stat.S_IFREG | 0o644)).entry().nodeid] = 1
        fh = (await k.opendir(1)).open().fh
        r, peak = await traced_call(k, O.READDIRPLUS if plus else O.READDIR,
                                    abi.READ_IN.pack(fh, 0, HUGE, 0, 0, 0), 1)
        got = r.direntplus() if plus else r.dirents()
        assert sorted(d.name for d in got)[2:] == [b"f%02d" % i for i in range(20)]
        assert peak < PEAK_LIMIT, peak
        (await k.releasedir(1, fh)).ok()
        for d in got:
            if d.entry is not None and d.entry.nodeid:
                handed[d.entry.nodeid] = handed.get(d.entry.nodeid, 0) + 1
        await forget_all(k, s, handed)
        assert len(s.itable) == 1


@pytest.mark.parametrize("plus", [False, True], ids=["readdir", "readdirplus"])
async def test_readdir_reply_fits_what_the_kernel_can_take(make, plus):
    """Without MAX_PAGES the kernel reads directories 32 pages at a time: a bigger size
    in the request is not honoured, and the listing still ends up complete."""
    async with serve(make(), flags=ALL_FLAGS & ~I.MAX_PAGES) as (k, s):
        cap = cap_of(k)
        names = [b"n" * 200 + b"%04d" % i for i in range(600)]    # 232 or 360 bytes a record
        (await k.mkdir(1, b"d")).entry()
        d = (await k.lookup(1, b"d")).entry().nodeid
        handed = {d: 2}
        for n in names:
            handed[(await k.mknod(d, n, stat.S_IFREG | 0o644)).entry().nodeid] = 1
        fh = (await k.opendir(d)).open().fh
        offset, seen = 0, []
        while True:
            r = await k.readdir(d, fh, offset, 4 * MIB, plus)
            assert len(r.ok().body) <= cap, (len(r.body), cap)
            batch = r.direntplus() if plus else r.dirents()
            if not batch:
                break
            seen += batch
            offset = batch[-1].off
            for b in batch:
                if b.entry is not None and b.entry.nodeid:
                    handed[b.entry.nodeid] = handed.get(b.entry.nodeid, 0) + 1
        assert sorted(b.name for b in seen if b.name not in (b".", b"..")) == names
        (await k.releasedir(d, fh)).ok()
        await forget_all(k, s, handed)
        assert len(s.itable) == 1


async def test_xattr_sizes_are_capped_at_xattr_size_max(make):
    async with serve(make("test/oversize")) as (k, s):
        # Over the limit on the way in: E2BIG for a value, ERANGE for a name.
        r = await k.setxattr(1, b"user.big", b"v" * (abi.XATTR_SIZE_MAX + 1), ext=True)
        assert r.errno == errno.E2BIG
        r = await k.setxattr(1, b"user." + b"n" * 300, b"v", ext=True)
        assert r.errno == errno.ERANGE
        assert (await k.getxattr(1, b"user." + b"n" * 300, 100)).errno == errno.ERANGE
        # A value (and a name list) bigger than any kernel buffer: a size of 4 GiB in the
        # request does not make it fit.
        assert (await k.getxattr(1, b"user.big", HUGE)).errno == errno.E2BIG
        r = await k.getxattr(1, b"user.big", 0)           # the size query still answers
        assert abi.GETXATTR_OUT.unpack(r.ok().body)[0] == abi.XATTR_SIZE_MAX + 10
        assert (await k.listxattr(1, HUGE)).errno == errno.E2BIG
        (await k.setxattr(1, b"user.small", b"12345", ext=True)).ok()
        assert (await k.getxattr(1, b"user.small", HUGE)).ok().body == b"12345"


async def test_copy_file_range_32_is_capped_at_what_its_reply_can_count(make):
    g = make("test/recorder")
    async with serve(g) as (k, s):
        a, oa = (await k.create(1, b"a")).create()
        b, ob = (await k.create(1, b"b")).create()
        (await k.write(a.nodeid, oa.fh, b"x" * 100)).ok()
        huge = 1 << 40
        r = await k.copy_file_range(a.nodeid, oa.fh, 0, b.nodeid, ob.fh, 0, huge)
        assert r.u32() == 100
        r = await k.copy_file_range(a.nodeid, oa.fh, 0, b.nodeid, ob.fh, 0, huge, wide=True)
        assert r.u64() == 100
        assert g.xlators["recorder"].lengths == [(1 << 32) - abi.PAGE_SIZE, huge]


@pytest.mark.parametrize("flags", [1 << 31 | 2, 0xFFFFFFFF])
async def test_open_flags_beyond_a_c_int_are_einval(make, flags):
    """Found by the fuzzer: posix handed such flags to os.open (OverflowError, EIO and a
    traceback).  No kernel sends them (f_flags is an int): EINVAL, nothing opened."""
    async with serve(make()) as (k, s):
        e = (await k.mknod(1, b"f", stat.S_IFREG | 0o644)).entry()
        assert (await k.open(e.nodeid, flags)).errno == errno.EINVAL
        assert (await k.opendir(1, flags)).errno == errno.EINVAL
        assert (await k.create(1, b"g", flags)).errno == errno.EINVAL
        assert s.stats["exceptions"] == 0 and s.client.fds == {}
        await k.forget(e.nodeid, 1)
        await k.sync()
        assert len(s.itable) == 1


# --------------------------------------------------------------------------- leaks

async def make_dir(k, count: int = 12) -> int:
    """d/ with ``count`` files, all forgotten again: the table holds d (one lookup)."""
    d = (await k.mkdir(1, b"d")).entry().nodeid
    items = []
    for i in range(count):
        items.append(((await k.mknod(d, b"e%02d" % i, stat.S_IFREG | 0o644)).entry()
                      .nodeid, 1))
    await k.batch_forget(items)
    await k.sync()
    return d


async def check_released(k, s, d: int, fds_before: int) -> None:
    await k.forget(d, 1)
    await k.sync()
    assert [i.nodeid for i in s.itable] == [1], list(s.itable)
    assert open_fds() == fds_before


async def test_readdirplus_failing_after_the_storage_releases_its_entries(make):
    g = make("test/fail-after")
    fail = g.xlators["fail-after"]
    async with serve(g) as (k, s):
        d = await make_dir(k)
        fds_before = open_fds()
        for _ in range(3):
            fh = (await k.opendir(d)).open().fh
            for _ in range(3):
                assert (await k.readdir(d, fh, 0, 4096, plus=True)).errno == errno.EIO
            (await k.releasedir(d, fh)).ok()
            assert sorted(i.nodeid for i in s.itable) == [1, d], list(s.itable)
        fail.fail_lookup = True                      # a LOOKUP failing the same way
        for i in range(3):
            assert (await k.lookup(d, b"e%02d" % i)).errno == errno.EIO
        assert sorted(i.nodeid for i in s.itable) == [1, d], list(s.itable)
        assert open_fds() == fds_before
        await check_released(k, s, d, fds_before - _dir_fd(s))


async def test_readdirplus_whose_reply_cannot_be_encoded_counts_no_lookup(make):
    async with serve(make("test/corrupt")) as (k, s):
        d = await make_dir(k)
        fds_before = open_fds()
        fh = (await k.opendir(d)).open().fh
        for _ in range(3):
            assert (await k.readdir(d, fh, 0, 1 << 16, plus=True)).errno == errno.EIO
        (await k.releasedir(d, fh)).ok()
        assert sorted(i.nodeid for i in s.itable) == [1, d], list(s.itable)
        assert open_fds() == fds_before
        await check_released(k, s, d, fds_before - _dir_fd(s))


async def test_open_failing_after_the_storage_opened_releases_it(make):
    """A translator above the storage fails OPEN/OPENDIR/CREATE after the storage opened
    the file: the bridge releases the fd (GlusterFS releases every fd a translator holds
    context in), so no descriptor (posix) or open count (memory) is left behind."""
    g = make("test/fail-after")
    fail = g.xlators["fail-after"]
    async with serve(g) as (k, s):
        d = await make_dir(k, 2)
        e = (await k.lookup(d, b"e00")).entry()
        fds_before = open_fds()
        fail.fail_open = True
        for _ in range(3):
            assert (await k.open(e.nodeid)).errno == errno.EIO
            assert (await k.opendir(d)).errno == errno.EIO
            assert (await k.create(d, b"new")).errno == errno.EIO
        assert s.client.fds == {} and open_fds() == fds_before
        assert sorted(i.nodeid for i in s.itable) == sorted([1, d, e.nodeid]), list(s.itable)
        if "memory" in g.xlators:
            nodes = g.xlators["memory"].nodes
            assert all(n.opens == 0 for n in nodes.values()), \
                [(n.ino, n.opens) for n in nodes.values()]
        await k.forget(e.nodeid, 1)
        await check_released(k, s, d, fds_before - 2 * _dir_fd(s))


def _dir_fd(s) -> int:
    """1 when the storage keeps a descriptor per inode (posix), else 0."""
    return 1 if "posix" in s.graph.xlators else 0


async def test_readdirplus_interrupted_after_the_storage_releases_its_entries(make):
    g = make("test/hold")
    hold = g.xlators["hold"]
    async with serve(g) as (k, s):
        d = await make_dir(k)
        fds_before = open_fds()
        fh = (await k.opendir(d)).open().fh
        for _ in range(3):
            u = await k.send(O.READDIRPLUS, abi.READ_IN.pack(fh, 0, 4096, 0, 0, 0), d)
            with trio.fail_after(5):
                while not hold.waiting:
                    await trio.sleep(0.001)
            await k.interrupt(u)
            r = await k.recv()
            assert (r.unique, r.errno) == (u, errno.EINTR)
        (await k.releasedir(d, fh)).ok()
        assert sorted(i.nodeid for i in s.itable) == [1, d], list(s.itable)
        assert open_fds() == fds_before
        await check_released(k, s, d, fds_before - _dir_fd(s))


async def test_readdirplus_whose_reply_is_lost_counts_no_lookup(make):
    """The reply write fails (the kernel no longer waits for it): the entries it carried
    are not counted, and the storage's descriptors for them are closed."""
    async with serve(make()) as (k, s):
        d = await make_dir(k)
        fds_before = open_fds()
        fh = (await k.opendir(d)).open().fh
        k.dsock.shutdown(socket.SHUT_WR)             # every reply from now on fails
        done = s.stats["requests"]
        for _ in range(3):
            await k.send(O.READDIRPLUS, abi.READ_IN.pack(fh, 0, 4096, 0, 0, 0), d)
        await k.send(O.RELEASEDIR, abi.RELEASE_IN.pack(fh, 0, 0, 0), d)
        await k.forget(d, 1)
        with trio.fail_after(5):
            while (s.stats["requests"] < done + 5 or s.interrupts.pending
                   or s.client.forgets_pending):
                await trio.sleep(0.001)
        assert [i.nodeid for i in s.itable] == [1], list(s.itable)
        assert open_fds() == fds_before - _dir_fd(s)


async def test_lookup_whose_reply_is_lost_counts_no_lookup(make):
    async with serve(make()) as (k, s):
        d = await make_dir(k)
        fds_before = open_fds()
        k.dsock.shutdown(socket.SHUT_WR)
        done = s.stats["requests"]
        for i in range(3):
            await k.send(O.LOOKUP, cstr(b"e%02d" % i), d)
        await k.forget(d, 1)
        with trio.fail_after(5):
            while (s.stats["requests"] < done + 4 or s.interrupts.pending
                   or s.client.forgets_pending):
                await trio.sleep(0.001)
        assert [i.nodeid for i in s.itable] == [1], list(s.itable)
        assert open_fds() == fds_before - _dir_fd(s)


async def test_entries_made_whose_reply_is_lost_count_no_lookup(make):
    """MKDIR, MKNOD and SYMLINK (ops_entry's pinned entry requests) whose reply write
    fails: the new objects are not counted and leave the table again."""
    async with serve(make()) as (k, s):
        d = await make_dir(k)
        fds_before = open_fds()
        k.dsock.shutdown(socket.SHUT_WR)
        done = s.stats["requests"]
        await k.send(O.MKDIR, abi.MKDIR_IN.pack(0o755, 0) + cstr(b"m"), d)
        await k.send(O.MKNOD, abi.MKNOD_IN.pack(stat.S_IFREG | 0o644, 0, 0) + cstr(b"n"),
                     d)
        await k.send(O.SYMLINK, cstr(b"s") + cstr(b"target"), d)
        await k.forget(d, 1)
        with trio.fail_after(5):
            while (s.stats["requests"] < done + 4 or s.interrupts.pending
                   or s.client.forgets_pending):
                await trio.sleep(0.001)
        assert [i.nodeid for i in s.itable] == [1], list(s.itable)
        assert open_fds() == fds_before - _dir_fd(s)


async def test_link_pins_hold_only_the_requests_own_links():
    """A request's pins hold what its own task links; a task it starts (a cache's
    prefetch) links unpinned, so the request's end does not purge the cache's inodes."""
    table = InodeTable()
    pins = LinkPins()
    mine = table.link(100)
    other = []

    async def prefetch():
        other.append(table.link(200))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetch)
    assert mine.refs == 1 and other[0].refs == 0
    assert pins.release() == [mine] and mine.refs == 0
    assert table.link(300).refs == 0              # released: no longer pinning


def test_the_locs_entry_handlers_build_by_hand_have_the_slots_they_set():
    """fuse_bridge.ops_entry builds its Locs without Loc.__init__ (object.__new__ and
    three attribute stores: cheaper per LOOKUP); a slot added to Loc would be left unset
    there, so adding one must fail here first."""
    from xlators.core.inode import Loc
    assert Loc.__slots__ == ("parent", "name", "inode"), (
        "Loc has new slots: set them where fuse_bridge/ops_entry.py builds Locs by hand")
