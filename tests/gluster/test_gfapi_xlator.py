"""storage/gfapi over a real replica-2 volume (two glusterfsd bricks, no glusterd),
driven through xlators.testing: no mount."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time

import pytest
import trio

from tests.gluster.conftest import brick_files, closes_settled, gfapi_volfile, second_client
from xlators.core.errors import FopError
from xlators.core.events import Event
from xlators.core.graph import Graph, GraphError
from xlators.core.inode import Fd
from xlators.core.types import LK_GET, LK_SET, Lock, SetAttr
from xlators.core.upcall import InvalidateEntry, InvalidateInode


async def keeps_cache(h, inode, flags: int = os.O_RDONLY) -> bool:
    """Whether an open of ``inode`` (no lookup first) lets the kernel keep its pages."""
    fd = Fd(inode, flags, 0)
    await h.top.open(h.frame(), inode, flags, fd)
    h.client.new_fh(fd)
    try:
        return "keep_cache" in fd.open_flags
    finally:
        await h.close(fd)
        await closes_settled(h)


async def test_data_reaches_both_bricks(h, bricks):
    fd = await h.create("/both", 0o640)
    await h.write(fd, b"replicated " * 1000, 0)
    assert await h.read(fd, 20, 0) == b"replicated replicate"
    await h.close(fd)
    for p in brick_files(bricks, "both"):
        assert p.read_bytes() == b"replicated " * 1000
        assert stat.S_IMODE(p.stat().st_mode) == 0o640


async def test_inode_number_is_the_gfid(h, bricks):
    await h.write_file("/ident", b"x")
    attr = await h.stat("/ident")
    gfid = os.getxattr(brick_files(bricks, "ident")[0], "trusted.gfid")
    assert attr.ino == int.from_bytes(gfid[8:], "big")
    # the same inode on a second lookup, and the root is the root
    e1, e2 = await h.lookup("/ident"), await h.lookup("/ident")
    assert e1.inode is e2.inode
    assert (await h.lookup("/")).inode is h.itable.root


async def test_namespace_fops(h, bricks):
    await h.mkdir("/ns")
    await h.write_file("/ns/a", b"aaa")
    await h.symlink("a", "/ns/ln")
    assert await h.top.readlink(h.frame(), (await h.lookup("/ns/ln")).inode) == b"a"
    e = await h.lookup("/ns/a")
    await h.top.link(h.frame(), e.inode, await h.parent_loc("/ns/hard"))
    assert (await h.stat("/ns/a")).nlink == 2
    loc = await h.parent_loc("/ns/fifo")
    fifo = await h.top.mknod(h.frame(), loc, stat.S_IFIFO | 0o600, 0, 0)
    assert stat.S_ISFIFO(fifo.attr.mode)
    await h.rename("/ns/a", "/ns/b")
    names = sorted(d.name for d in await h.listdir("/ns"))
    assert names == [b".", b"..", b"b", b"fifo", b"hard", b"ln"]
    with pytest.raises(FopError) as ei:
        await h.rename("/ns/b", "/ns/hard", flags=1)       # RENAME_NOREPLACE
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(FopError) as ei:
        await h.rename("/ns/b", "/ns/hard", flags=2)       # RENAME_EXCHANGE
    assert ei.value.errno == errno.EINVAL
    await h.rename("/ns/b", "/ns/c", flags=1)
    await h.rename("/ns/c", "/ns/b")
    with pytest.raises(FopError) as ei:
        await h.rmdir("/ns/b")
    assert ei.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as ei:
        await h.rmdir("/ns")
    assert ei.value.errno == errno.ENOTEMPTY
    for n in ("b", "fifo", "hard", "ln"):
        await h.unlink(f"/ns/{n}")
    await h.rmdir("/ns")
    with pytest.raises(OSError) as ei:
        await h.lookup("/ns")
    assert ei.value.errno == errno.ENOENT
    assert not any(p.exists() for p in brick_files(bricks, "ns"))


async def test_readdirp_links_inodes_and_resumes(h):
    await h.mkdir("/many")
    for i in range(300):
        await h.write_file(f"/many/f{i:03}", b"")
    d = (await h.lookup("/many")).inode
    fd = Fd(d, is_dir=True)
    await h.top.opendir(h.frame(), d, fd)
    seen, off = [], 0
    while True:
        batch = await h.top.readdirp(h.frame(), fd, off, 4096)
        if not batch:
            break
        for de in batch:
            if de.name not in (b".", b".."):
                assert de.entry is not None and de.entry.attr.ino == de.ino
                assert h.itable.find(de.ino) is de.entry.inode
            seen.append(de.name)
        off = batch[-1].off
    # resuming at an earlier cookie lists the same entries again
    again, off = [], 0
    while batch := await h.top.readdir(h.frame(), fd, off, 1 << 20):
        again.extend(batch)
        off = batch[-1].off
    await h.top.releasedir(h.frame(), fd)
    names = sorted(n for n in seen if n not in (b".", b".."))
    assert names == [f"f{i:03}".encode() for i in range(300)]
    assert sorted(de.name for de in again if de.name not in (b".", b"..")) == names


@contextlib.contextmanager
def counted_calls(gf, *names):
    """Count the calls storage/gfapi makes to these libgfapi functions."""
    lib = gf._b.lib
    counts = dict.fromkeys(names, 0)
    real = {n: getattr(lib, n) for n in names}

    def counting(n):
        def call(*args):
            counts[n] += 1
            return real[n](*args)
        return call
    for n in names:
        setattr(lib, n, counting(n))
    try:
        yield counts
    finally:
        for n in names:
            setattr(lib, n, real[n])


async def _listing(h, path, size, plus, start=0):
    """Every (name, ino, off) from cookie ``start``, ``size`` bytes per step, and the
    number of steps."""
    d = (await h.lookup(path)).inode
    fd = Fd(d, is_dir=True)
    await h.top.opendir(h.frame(), d, fd)
    out, off, steps = [], start, 0
    try:
        while True:
            fop = h.top.readdirp if plus else h.top.readdir
            batch = await fop(h.frame(), fd, off, size)
            if not batch:
                return out, steps
            steps += 1
            out.extend((de.name, de.ino, de.off) for de in batch)
            off = batch[-1].off
    finally:
        await h.top.releasedir(h.frame(), fd)


async def test_plain_readdir_fills_the_buffer_with_the_files_numbers(h):
    await h.mkdir("/names")
    for i in range(600):
        await h.write_file(f"/names/n{i:03}", b"")
    gf = h.top
    calls_of = ("glfs_readdirplus_r", "glfs_xreaddirplus_r", "glfs_readdir_r")
    with counted_calls(gf, *calls_of) as calls:
        rows, steps = await _listing(h, "/names", 1 << 20, plus=False)
    names = sorted(r[0] for r in rows if r[0] not in (b".", b".."))
    assert names == [f"n{i:03}".encode() for i in range(600)]
    # one step answers as much as the buffer holds, not a fixed number of entries
    assert steps == 1
    # d_ino is the file's st_ino (the gfid's), so the bricks are asked for READDIRP
    assert calls["glfs_readdirplus_r"] >= 602 and calls["glfs_readdir_r"] == 0
    for name, ino, _ in rows[:20]:
        if name not in (b".", b".."):
            assert (await h.lookup(f"/names/{name.decode()}")).attr.ino == ino
    # readdir-names-only: the bricks' READDIR, no stat of every entry
    gf.opts.readdir_names_only = True
    try:
        with counted_calls(gf, *calls_of) as calls:
            quick, steps = await _listing(h, "/names", 1 << 20, plus=False)
    finally:
        gf.opts.readdir_names_only = False
    assert calls["glfs_readdirplus_r"] == calls["glfs_xreaddirplus_r"] == 0
    assert calls["glfs_readdir_r"] >= 602 and steps == 1
    assert sorted(r[0] for r in quick) == sorted(r[0] for r in rows)
    # readdir-batch bounds the entries of one step (256: what storage/gfapi did before)
    gf.opts.readdir_batch = 256
    try:
        bounded, steps = await _listing(h, "/names", 1 << 20, plus=False)
    finally:
        gf.opts.readdir_batch = 0
    assert steps == 3 and bounded == rows


def _writes_of_this_process() -> int:
    """write(2)-family system calls of this process so far: libgfapi's requests to the
    bricks (every thread's, /proc/self/io's syscw)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscw:"))


async def test_listing_files_another_client_made_needs_no_lookup_of_each(
        h, bricks, gluster_base):
    """Listing entries this client never looked up: replicate passes the bricks'
    attributes on, so libgfapi does not look up every entry (its glfd_entry_refresh
    does, for entries replicate leaves without an inode).  Replicate strips them only
    while it believes a heal is pending, which it reads from the bricks' features/index
    ("link-count" in every lookup reply): a brick graph without index (what the test
    bricks had) looks always in need of heal, and the cold listing cost two network
    requests per entry (docs/gluster.md, "The cold listing")."""
    with second_client(bricks, gluster_base / "lister.log") as oh:
        await oh.mkdir("/strangers")
        for i in range(300):
            await oh.write_file(f"/strangers/s{i:03}", b"")
    await h.lookup("/")                       # a fresh lookup reply sets replicate's view
    before = _writes_of_this_process()
    rows, _ = await _listing(h, "/strangers", 1 << 20, plus=True)
    writes = _writes_of_this_process() - before
    names = sorted(r[0] for r in rows if r[0] not in (b".", b".."))
    assert names == [f"s{i:03}".encode() for i in range(300)]
    assert writes < 60, f"{writes} network writes to list 300 entries"
    for name, ino, _ in rows:
        if name not in (b".", b".."):
            assert (await h.lookup(f"/strangers/{name.decode()}")).attr.ino == ino


@pytest.mark.parametrize("names_only", [False, True])
async def test_listing_cookies_resume_exactly(h, names_only):
    """Small buffers, plain and plus steps mixed on one open directory, and resuming
    at any cookie: every entry once, in the library's order."""
    if not names_only:
        await h.mkdir("/cookies")
        for i in range(150):
            await h.write_file(f"/cookies/c{i:03}", b"")
    h.top.opts.readdir_names_only = names_only
    try:
        await _cookies_resume(h)
    finally:
        h.top.opts.readdir_names_only = False


async def _cookies_resume(h):
    whole, _ = await _listing(h, "/cookies", 1 << 20, plus=False)
    assert len(whole) == 152
    small, steps = await _listing(h, "/cookies", 256, plus=False)
    assert small == whole and steps > 10
    plus, _ = await _listing(h, "/cookies", 512, plus=True)
    assert [(n, o) for n, _, o in plus] == [(n, o) for n, _, o in whole]
    for k in (1, 37, 100, 151):
        rest, _ = await _listing(h, "/cookies", 300, plus=bool(k % 2), start=whole[k - 1][2])
        assert [(n, o) for n, _, o in rest] == [(n, o) for n, _, o in whole[k:]]
    # plain then plus steps on the same open directory (READDIRPLUS_AUTO's pattern)
    d = (await h.lookup("/cookies")).inode
    fd = Fd(d, is_dir=True)
    await h.top.opendir(h.frame(), d, fd)
    got, off, step = [], 0, 0
    try:
        while True:
            fop = h.top.readdirp if step % 2 else h.top.readdir
            batch = await fop(h.frame(), fd, off, 700)
            if not batch:
                break
            for de in batch:
                if de.entry is not None:        # attributes given are right ones
                    assert de.entry.attr.ino == de.ino and de.entry.attr.ctime_ns
            got.extend((de.name, de.off) for de in batch)
            off, step = batch[-1].off, step + 1
    finally:
        await h.top.releasedir(h.frame(), fd)
    assert got == [(n, o) for n, _, o in whole]


async def test_setattr_and_xattrs(h, bricks):
    await h.write_file("/attrs", b"0123456789")
    inode = (await h.lookup("/attrs")).inode
    a = await h.top.setattr(h.frame(), inode, SetAttr(mode=0o600, uid=1234, gid=4321,
                                                       size=4, mtime_ns=10**18,
                                                       atime_ns=10**18 + 7))
    assert (stat.S_IMODE(a.mode), a.uid, a.gid, a.size) == (0o600, 1234, 4321, 4)
    assert a.mtime_ns == 10**18
    brick = brick_files(bricks, "attrs")[1].stat()
    assert (brick.st_uid, brick.st_gid, brick.st_size) == (1234, 4321, 4)
    await h.top.setxattr(h.frame(), inode, b"user.note", b"kept", 0)
    assert await h.top.getxattr(h.frame(), inode, b"user.note") == b"kept"
    assert b"user.note" in await h.top.listxattr(h.frame(), inode)
    await h.top.removexattr(h.frame(), inode, b"user.note")
    with pytest.raises(OSError) as ei:
        await h.top.getxattr(h.frame(), inode, b"user.note")
    assert ei.value.errno == errno.ENODATA
    sf = await h.top.statfs(h.frame(), inode)
    assert sf.blocks > 0 and sf.bsize > 0


CAPS = b"security.capability"
# a valid VFS_CAP_REVISION_2 value (cap_net_bind_service permitted), 20 bytes
CAP_VALUE = bytes.fromhex("0000000200040000000000000000000000000000")


async def test_absent_capability_is_remembered_briefly_and_coherently(h, bricks,
                                                                       monkeypatch):
    """The kernel asks security.capability before every write: "absent" is remembered
    (a new O_EXCL file, or ENODATA from the bricks) so it costs no round trip, and is
    forgotten when this client sets or removes it, or after CAPS_ABSENT_TTL."""
    import xlators.storage.gfapi_attr as gfapi_attr
    gf = h.top
    asked = []
    real = gf._getx

    def spy(obj, name):
        asked.append(name)
        return real(obj, name)
    monkeypatch.setattr(gf, "_getx", spy)

    async def caps(inode):
        try:
            return await gf.getxattr(h.frame(), inode, CAPS)
        except OSError as exc:
            assert exc.errno == errno.ENODATA
            return None

    fd = await h.create("/capfile", 0o755, flags=os.O_RDWR | os.O_CREAT | os.O_EXCL)
    inode = fd.inode
    for _ in range(3):
        assert await caps(inode) is None
    assert asked == []                                  # a new file: known absent
    await gf.setxattr(h.frame(), inode, CAPS, CAP_VALUE, 0)
    assert await caps(inode) == CAP_VALUE               # forgotten at once
    assert os.getxattr(brick_files(bricks, "capfile")[0], CAPS) == CAP_VALUE
    monkeypatch.setattr(gfapi_attr, "CAPS_ABSENT_TTL", 0.5)
    await gf.removexattr(h.frame(), inode, CAPS)
    asked.clear()
    assert await caps(inode) is None and await caps(inode) is None
    assert asked == [CAPS]                              # ENODATA from the bricks, once
    for brick in brick_files(bricks, "capfile"):        # behind the client's back
        os.setxattr(brick, CAPS, CAP_VALUE)
    assert await caps(inode) is None                    # still remembered
    await trio.sleep(0.6)
    assert await caps(inode) == CAP_VALUE               # not past the bound
    await h.close(fd)


async def test_capability_removed_for_a_writer_as_the_kernel_asks(h, bricks):
    """After another user's write the kernel removes security.capability as that user:
    allowed to whoever may write the file (as on a local disk), refused otherwise."""
    for name, mode, want in (("capw", 0o666, None), ("capr", 0o644, errno.EACCES)):
        await h.write_file(f"/{name}", b"x", mode)
        inode = (await h.lookup(f"/{name}")).inode
        await h.top.setattr(h.frame(), inode, SetAttr(mode=mode))
        await h.top.setxattr(h.frame(), inode, CAPS, CAP_VALUE, 0)
        try:
            await h.top.removexattr(h.frame(uid=1000, gid=1000), inode, CAPS)
            got = None
        except OSError as exc:
            got = exc.errno
        assert got == want, name
        present = [CAPS.decode() in os.listxattr(f) for f in brick_files(bricks, name)]
        assert present == [want is not None] * 2, name


async def test_runs_as_the_caller(h, bricks):
    await h.mkdir("/private", mode=0o755)
    await h.mkdir("/open", mode=0o777, umask=0)
    user = h.frame(uid=1000, gid=1000, groups=(1000,))
    with pytest.raises(OSError) as ei:
        await h.create("/private/no", frame=user)
    assert ei.value.errno == errno.EACCES
    fd = await h.create("/open/mine", 0o644, frame=user)
    await h.close(fd)
    st = brick_files(bricks, "open/mine")[0].stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    # supplementary groups count: a group-writable directory of group 2000
    await h.mkdir("/grp", mode=0o770, umask=0)
    await h.top.setattr(h.frame(), (await h.lookup("/grp")).inode, SetAttr(gid=2000))
    member = h.frame(uid=1001, gid=1001, groups=(1001, 2000))
    outsider = h.frame(uid=1002, gid=1002, groups=(1002,))
    await h.close(await h.create("/grp/ok", frame=member))
    with pytest.raises(OSError) as ei:
        await h.create("/grp/no", frame=outsider)
    assert ei.value.errno == errno.EACCES
    e = await h.lookup("/open/mine")
    with pytest.raises(OSError) as ei:
        await h.top.access(h.frame(uid=1002, gid=1002, groups=()), e.inode, os.W_OK)
    assert ei.value.errno == errno.EACCES


async def test_fallocate_seek_copy(h, bricks):
    fd = await h.create("/space")
    await h.write(fd, b"A" * 8192, 0)
    await h.top.fallocate(h.frame(), fd, 0x01 | 0x02, 0, 4096)          # punch
    assert await h.read(fd, 8192, 0) == b"\0" * 4096 + b"A" * 4096
    await h.top.fallocate(h.frame(), fd, 0x10, 6000, 10000)              # zero range
    assert (await h.top.getattr(h.frame(), fd.inode, fd)).size == 16000
    assert await h.read(fd, 100, 5950) == b"A" * 50 + b"\0" * 50
    await h.top.fallocate(h.frame(), fd, 0, 0, 20000)
    assert (await h.top.getattr(h.frame(), fd.inode, fd)).size == 20000
    assert await h.top.lseek(h.frame(), fd, 0, os.SEEK_DATA) >= 0
    out = await h.create("/space-copy")
    n = await h.top.copy_file_range(h.frame(), fd, 4096, out, 0, 2000, 0)
    assert n == 2000
    assert await h.read(out, 4000, 0) == b"A" * 1904 + b"\0" * 96
    for p in brick_files(bricks, "space-copy"):            # on both replicas
        assert p.read_bytes() == b"A" * 1904 + b"\0" * 96
    await h.top.fsync(h.frame(), out, 0)
    await h.close(out)
    await h.close(fd)


async def test_posix_locks_between_owners(h):
    fd = await h.create("/locked")
    inode = fd.inode
    fd2 = Fd(inode)
    await h.top.open(h.frame(), inode, os.O_RDWR, fd2)
    mine = Lock(fcntl.F_WRLCK, 0, 99, pid=10, owner=111)
    assert h.top.locks_held() == 0
    await h.top.lk(h.frame(lk_owner=111), fd, LK_SET, mine)
    assert h.top.locks_held() == 1           # a graph switch would be refused
    theirs = Lock(fcntl.F_WRLCK, 50, 60, pid=20, owner=222)
    with pytest.raises(OSError) as ei:
        await h.top.lk(h.frame(lk_owner=222), fd2, LK_SET, theirs)
    assert ei.value.errno == errno.EAGAIN
    got = await h.top.lk(h.frame(lk_owner=222), fd2, LK_GET, theirs)
    assert (got.type, got.start, got.end) == (fcntl.F_WRLCK, 0, 99)
    # a free range is granted; unlocking (or flush of the owner) frees the rest
    await h.top.lk(h.frame(lk_owner=222), fd2, LK_SET, Lock(fcntl.F_RDLCK, 200, 300, 20, 222))
    await h.top.flush(h.frame(lk_owner=111), fd)
    await h.top.lk(h.frame(lk_owner=222), fd2, LK_SET, theirs)
    assert h.top.locks_held() == 1           # fd2's owner still holds its lock
    await h.close(fd2)
    await h.close(fd)
    assert h.top.locks_held() == 0


async def test_cancelled_call_returns_at_once(h, bricks):
    """A request cancelled while its library call runs unwinds at once (the thread is
    abandoned and finishes by itself)."""
    fd = await h.create("/cancel")
    gf = h.top
    real = gf._as_caller
    gate = __import__("threading").Event()

    def slow(creds, fn, args):
        gate.wait(10)
        return real(creds, fn, args)
    gf._as_caller = slow
    try:
        with trio.move_on_after(0.2) as scope:
            await h.write(fd, b"late", 0)
        assert scope.cancelled_caught
    finally:
        gf._as_caller = real
        gate.set()
    await trio.sleep(0.5)
    assert await h.read(fd, 10, 0) == b"late"         # the abandoned call completed
    await h.close(fd)


async def test_keep_cache_while_unchanged_since_the_previous_open(h):
    """An open lets the kernel keep the file's pages when its mtime, ctime and size in
    the last attributes answered are those at its previous open."""
    await h.write_file("/kc", b"some data")
    await closes_settled(h)
    inode = (await h.lookup("/kc")).inode     # the attributes after the write
    assert not await keeps_cache(h, inode)    # changed since the create (this client)
    assert await keeps_cache(h, inode)
    await h.lookup("/kc")                     # nothing changed: still kept
    assert await keeps_cache(h, inode, os.O_RDWR)
    await h.setattr("/kc", mtime_ns=1_000_000_000)   # a change seen in an answer
    assert not await keeps_cache(h, inode)
    assert await keeps_cache(h, inode)
    fd = await h.open("/kc", os.O_RDWR)       # a write, then its attributes
    await h.write(fd, b"more", 9)
    await h.close(fd)
    await closes_settled(h)
    await h.stat("/kc")
    assert not await keeps_cache(h, inode)
    assert await keeps_cache(h, inode)
    assert not await keeps_cache(h, inode, os.O_WRONLY | os.O_TRUNC)
    assert not await keeps_cache(h, inode)    # O_TRUNC: the next open starts afresh
    assert h.top.dump()["opens-keeping-page-cache"] >= 4
    fd = await h.create("/kc-new")
    assert "keep_cache" not in fd.open_flags  # a new file: no previous open
    await h.close(fd)
    await closes_settled(h)
    assert await keeps_cache(h, fd.inode)     # nothing written: unchanged since


async def test_upcall_from_another_client(h, bricks, gluster_base):
    """A change by a second libgfapi client becomes invalidations on this graph."""
    events = []
    graph = h.graph

    def listen(event, data, source):
        if event is Event.UPCALL:
            events.append(data)
    graph.listeners.append(listen)
    try:
        await h.write_file("/shared", b"one")
        await closes_settled(h)
        inode = (await h.lookup("/shared")).inode
        await h.read_file("/shared")
        assert await keeps_cache(h, inode)            # unchanged since the last open
        with second_client(bricks, gluster_base / "o.log") as oh:
            await _change_then_remove(h, oh, inode, events)
    finally:
        graph.listeners.remove(listen)


async def test_own_removal_wakes_nothing_but_another_clients_does(
        h, bricks, gluster_base):
    """The bricks send UP_FORGET to the client that removed a file too (one per
    brick): storage/gfapi drops it in libgfapi's thread instead of waking the loop
    and invalidating what the kernel dropped already; another client's removal of a
    file this client knows is still invalidated here."""
    events = []
    graph = h.graph
    gf = h.top

    def listen(event, data, source):
        if event is Event.UPCALL:
            events.append(data)
    graph.listeners.append(listen)
    try:
        await h.mkdir("/gone")
        await h.write_file("/gone/mine", b"x")
        await h.write_file("/gone/theirs", b"x")
        mine = (await h.lookup("/gone/mine")).inode
        theirs = (await h.lookup("/gone/theirs")).inode
        dropped = gf._upcalls.dump().get("upcalls-of-own-removals-dropped", 0)
        await h.unlink("/gone/mine")
        with trio.move_on_after(10):
            while gf._upcalls.dump().get("upcalls-of-own-removals-dropped", 0) < \
                    dropped + len(bricks.bricks):
                if any(getattr(e, "inode", None) is mine for e in events):
                    break
                await trio.sleep(0.05)
        await trio.sleep(0.3)                     # a late notice would show by now
        assert not [e for e in events if getattr(e, "inode", None) is mine]
        with second_client(bricks, gluster_base / "remover.log") as oh:
            await oh.unlink("/gone/theirs")
        with trio.move_on_after(20):
            while not any(getattr(e, "inode", None) is theirs for e in events):
                await trio.sleep(0.05)
        assert any(isinstance(e, InvalidateInode) and e.inode is theirs for e in events)
        assert any(isinstance(e, InvalidateEntry) and e.name == b"theirs"
                   for e in events)
    finally:
        graph.listeners.remove(listen)


def _syncenv_switches() -> int:
    """Voluntary context switches so far of libgfapi's syncenv threads (glfs_sproc*),
    which run its synctasks."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if not f.read().startswith("glfs_sproc"):
                    continue
            with open(f"/proc/self/task/{tid}/status") as f:
                status = f.read()
        except OSError:
            continue
        total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


async def test_upcalls_run_no_synctask_per_notice(h, bricks):
    """Upcalls are taken from libgfapi's queue by polling: with a callback registered,
    libgfapi runs every notice (two UP_FORGETs per own removal on a replica-2 volume)
    as a synctask, waking its syncenv threads each time."""
    gf = h.top
    await h.mkdir("/sync")
    for i in range(20):
        await h.write_file(f"/sync/f{i}", b"x")
    await trio.sleep(0.5)
    before = _syncenv_switches()
    dropped = gf._upcalls.dump()["upcalls-of-own-removals-dropped"]
    for i in range(20):
        await h.unlink(f"/sync/f{i}")
    with trio.move_on_after(10):
        while gf._upcalls.dump()["upcalls-of-own-removals-dropped"] < dropped + 40:
            await trio.sleep(0.05)
    assert gf._upcalls.dump()["upcalls-of-own-removals-dropped"] >= dropped + 40
    # with a callback: 2-4 wake-ups of each syncenv thread per unlink
    assert _syncenv_switches() - before < 20


async def _change_then_remove(h, oh, inode, events) -> None:
    """``oh`` (another client) rewrites /shared, then removes it: invalidations here."""
    fd = await oh.open("/shared")
    await oh.write(fd, b"two, longer", 0)
    await oh.close(fd)
    with trio.move_on_after(20):
        while not any(isinstance(e, InvalidateInode) and e.inode is inode
                      for e in events):
            await trio.sleep(0.05)
    inval = [e for e in events if isinstance(e, InvalidateInode) and e.inode is inode]
    assert inval
    # the kernel drops the pages too (offset 0, length 0: all of them), not only
    # the attributes
    assert all((e.offset, e.length) == (0, 0) for e in inval)
    # and the next open (no lookup before it: a kernel with the dentry cached)
    # does not let the kernel keep what it may still have
    assert not await keeps_cache(h, inode)
    await oh.unlink("/shared")
    with trio.move_on_after(20):
        while not any(isinstance(e, InvalidateEntry) and e.name == b"shared"
                      for e in events):
            await trio.sleep(0.05)
    assert any(isinstance(e, InvalidateEntry) and e.name == b"shared"
               and e.parent is h.itable.root for e in events)


async def test_capability_set_by_another_client_is_seen_within_the_bound(
        h, bricks, gluster_base, monkeypatch):
    """GlusterFS sends no upcall for a security.capability set by another client (its
    upcall filter passes only the xattrs a client registered): such a change is seen
    once CAPS_ABSENT_TTL has run out."""
    import xlators.storage.gfapi_attr as gfapi_attr
    monkeypatch.setattr(gfapi_attr, "CAPS_ABSENT_TTL", 0.5)
    with second_client(bricks, gluster_base / "o2.log") as oh:
        await h.write_file("/capshared", b"x")
        inode = (await h.lookup("/capshared")).inode
        with pytest.raises(OSError):
            await h.top.getxattr(h.frame(), inode, CAPS)
        oinode = (await oh.lookup("/capshared")).inode
        await oh.top.setxattr(oh.frame(), oinode, CAPS, CAP_VALUE, 0)
        await trio.sleep(0.6)
        assert await h.top.getxattr(h.frame(), inode, CAPS) == CAP_VALUE


# -- bad input: one-line errors, no graph ------------------------------------------------
def _init(text: str) -> str:
    g = Graph.from_text(text, filename="/etc/xlfs/bad.vol")
    with pytest.raises(GraphError) as ei:
        g.init()
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_both_forms_or_neither_is_an_error():
    with pytest.raises(GraphError) as ei:
        Graph.from_text("volume g\n type storage/gfapi\n option volfile /x.vol\n"
                        " option volfile-server h\n option volume-name v\nend-volume\n",
                        filename="/etc/xlfs/bad.vol")
    msg = str(ei.value)
    assert msg.startswith("/etc/xlfs/bad.vol:") and "volume 'g'" in msg and "both" in msg
    with pytest.raises(GraphError) as ei:
        Graph.from_text("volume g\n type storage/gfapi\n option log-level info\n"
                        "end-volume\n",
                        filename="/etc/xlfs/bad.vol")
    assert "/etc/xlfs/bad.vol:1" in str(ei.value) and "neither" in str(ei.value)
    with pytest.raises(GraphError) as ei:
        Graph.from_text("volume g\n type storage/gfapi\n option volfile-server h\n"
                        "end-volume\n", filename="/etc/xlfs/bad.vol")
    assert "needs option volume" in str(ei.value)


def test_unreachable_server(tmp_path):
    from tests.gluster.bricks import free_port
    msg = _init("volume g\n type storage/gfapi\n option volfile-server 127.0.0.1\n"
                f" option volfile-server-port {free_port()}\n option \"volume\" v\n"
                f" option log-file {tmp_path}/c.log\nend-volume\n")
    assert "cannot reach GlusterFS volume 127.0.0.1" in msg and "volume 'g'" in msg


def test_bad_client_volfile(tmp_path):
    """In a child process: after a volfile it cannot parse, GlusterFS's (global) volfile
    parser fails every later parse in that process."""
    import subprocess
    import sys
    from tests.mountlib import ROOT
    bad = tmp_path / "client.vol"
    bad.write_text("volume x\n type protocol/nonsense\nend-volume\n")
    for path, want in ((bad, f"client volfile {bad} does not work: Volume 'x', line 2"),
                       (tmp_path / "none.vol", "no such file")):
        code = ("from xlators.core.graph import Graph\n"
                f"g = Graph.from_text({gfapi_volfile(path, tmp_path / 'c.log')!r})\n"
                "g.init()\n")
        res = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT),
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert res.returncode != 0
        last = res.stderr.strip().splitlines()[-1]
        assert "GraphError" in last and want in last, res.stderr


async def test_volume_down_is_enotconn_and_child_down(tmp_path):
    """Every brick gone: calls fail with ENOTCONN (no hang), CHILD_DOWN goes up once; the
    bricks back: calls work again and CHILD_UP goes up."""
    from tests.gluster.bricks import Bricks
    from xlators.testing import Harness
    with Bricks(tmp_path / "b", 2, "down", ping_timeout=2) as bricks:
        g = Graph.from_text(gfapi_volfile(bricks.client_volfile, tmp_path / "c.log"))
        g.init()
        g.activate()
        events = []
        g.listeners.append(lambda ev, data, src: events.append(ev))
        try:
            h = Harness(g)
            await h.write_file("/f", b"data")
            bricks.stop()
            with trio.fail_after(60):
                with pytest.raises(OSError) as ei:
                    for _ in range(100):
                        await h.stat("/f")
                        await trio.sleep(0.1)
            assert ei.value.errno == errno.ENOTCONN
            assert events.count(Event.CHILD_DOWN) == 1
            bricks.start()
            with trio.fail_after(60):
                while True:
                    try:
                        assert await h.read_file("/f") == b"data"
                        break
                    except OSError as exc:
                        assert exc.errno == errno.ENOTCONN
                        await trio.sleep(0.2)
            assert events[-1] is Event.CHILD_UP
        finally:
            g.fini()


def test_missing_library_names_the_package(monkeypatch):
    from xlators.storage import gfapi_binding
    monkeypatch.setattr(gfapi_binding, "LIBRARY", "libgfapi-not-here.so.0")
    with pytest.raises(gfapi_binding.GfapiMissing) as ei:
        gfapi_binding._load()
    msg = str(ei.value)
    assert "\n" not in msg and "libgfapi0" in msg and "apt-get install" in msg


def test_binding_layouts_are_checked():
    """The import-time check compares libc's stat of / through our structures with os's:
    a wrong layout is refused."""
    import ctypes

    from xlators.storage import gfapi_binding as b
    b._check_layouts()
    bad = type("BadStat", (ctypes.Structure,), {"_fields_": b.Stat._fields_[:2]})
    sizes = dict(b.EXPECTED_SIZES)
    try:
        b.EXPECTED_SIZES[bad] = 144
        with pytest.raises(b.GfapiMissing):
            b._check_layouts()
    finally:
        b.EXPECTED_SIZES.clear()
        b.EXPECTED_SIZES.update(sizes)


def test_attributes_unpacked_from_a_stat_are_the_files():
    """storage/gfapi reads a ``struct stat`` with one unpack: every field lands where
    os.stat puts it (times in ns, a missing blksize as 4096)."""
    import ctypes
    from xlators.storage import gfapi_binding as b
    from xlators.storage.gfapi_nodes import GfapiNodes, Node

    class Reader(GfapiNodes):
        _b = b
    st = b.Stat()
    assert ctypes.CDLL(None, use_errno=True).stat(b"/etc/passwd", ctypes.byref(st)) == 0
    ref = os.stat("/etc/passwd")
    node = Node(0, ref.st_ino, ref.st_mode)
    a = Reader()._attr(st, node)
    assert (a.ino, a.size, a.blocks, a.atime_ns, a.mtime_ns, a.ctime_ns, a.mode, a.nlink,
            a.uid, a.gid, a.rdev, a.blksize) == (
        ref.st_ino, ref.st_size, ref.st_blocks, ref.st_atime_ns, ref.st_mtime_ns,
        ref.st_ctime_ns, ref.st_mode, ref.st_nlink, ref.st_uid, ref.st_gid,
        ref.st_rdev, ref.st_blksize)
    assert node.seen == (ref.st_mtime_ns, ref.st_ctime_ns, ref.st_size)
    st.st_blksize = 0
    assert Reader()._attr(st).blksize == 4096


async def test_inline_wait_answers_quick_calls_without_a_suspension(h):
    """option inline-wait: a stat made while no other call runs is answered while the
    event loop's thread waits for it itself (no other task runs in between); with 0,
    through trio (another task gets to run)."""
    gf = h.top
    await h.write_file("/inline", b"x" * 10)
    e = await h.lookup("/inline")
    given = dict(gf.given_options)

    async def getattr_and_see_others_run():
        ran = []

        async def mark():
            ran.append(1)
        async with trio.open_nursery() as n:
            n.start_soon(mark)            # runs at the request's first suspension
            attr = await gf.getattr(h.frame(), e.inode)
            others_ran = bool(ran)
        return attr, others_ran

    try:
        gf.reconfigure({**given, "inline-wait": "1s"})
        before = gf.dump()["calls-answered-inline"]
        attr, others_ran = await getattr_and_see_others_run()
        assert attr.size == 10 and not others_ran
        assert gf.dump()["calls-answered-inline"] == before + 1
        gf.reconfigure({**given, "inline-wait": "0"})
        attr, others_ran = await getattr_and_see_others_run()
        assert attr.size == 10 and others_ran
    finally:
        gf.reconfigure(given)


async def test_sequential_reads_are_read_ahead_and_writes_drop_it(h):
    """A read continuing the previous one starts the next read of its size: the
    kernel's next READ is answered by it.  A write in between drops it: the next read
    sees the new bytes."""
    gf = h.top
    chunk = 64 << 10
    data = bytes(range(256)) * (8 * chunk // 256)
    await h.write_file("/ahead", data)
    await h.lookup("/ahead")
    fd = await h.open("/ahead", os.O_RDONLY)
    wfd = await h.open("/ahead", os.O_RDWR)
    used = gf.dump()["reads-answered-ahead"]
    got = [await h.read(fd, chunk, i * chunk) for i in range(4)]
    assert got == [data[i * chunk:(i + 1) * chunk] for i in range(4)]
    assert gf.dump()["reads-answered-ahead"] == used + 2     # the 3rd and 4th
    await h.write(wfd, b"N" * chunk, 4 * chunk)              # after the 4th read ahead
    assert await h.read(fd, chunk, 4 * chunk) == b"N" * chunk
    assert gf.dump()["reads-answered-ahead"] == used + 2
    assert await h.read(fd, chunk, 5 * chunk) == data[5 * chunk:6 * chunk]
    assert gf.dump()["reads-answered-ahead"] == used + 3
    assert await h.read(fd, chunk, 6 * chunk) == data[6 * chunk:7 * chunk]
    assert gf.dump()["reads-answered-ahead"] == used + 4     # the 6th and 7th
    await h.close(wfd)
    of = fd.ctx[gf]
    await h.read(fd, chunk, 0)
    real = gf._pread

    def slow(glfd, size, offset):
        if offset == 2 * chunk:                              # the one read ahead
            time.sleep(0.5)
        return real(glfd, size, offset)
    gf._pread = slow
    try:
        await h.read(fd, chunk, chunk)                       # starts a slow one ahead
    finally:
        del gf._pread
    other = await h.open("/ahead", os.O_RDWR)
    await h.write(other, data[:10], 0)              # drops it, maybe still running
    assert of.ahead is None and of.started
    await h.close(other)
    await h.close(fd)              # waits for every read ahead, even a dropped one
    assert all(job.finished for job in of.started)
    direct = await h.open("/ahead", os.O_RDONLY | os.O_DIRECT)    # read when asked
    for i in range(4):
        assert await h.read(direct, chunk, i * chunk) == data[i * chunk:(i + 1) * chunk]
    assert gf.dump()["reads-answered-ahead"] == used + 4
    await h.close(direct)


async def test_a_read_past_the_end_returns_only_the_file_bytes(h):
    """A short read (the end of the file) answers exactly the bytes read: the read
    buffer's unfilled rest is never returned."""
    fd = await h.create("/short", 0o644)
    await h.write(fd, b"0123456789", 0)
    data = await h.read(fd, 131072, 0)
    assert data == b"0123456789" and type(data) is bytes
    assert await h.read(fd, 131072, 4) == b"456789"
    assert await h.read(fd, 4096, 10) == b""
    await h.write(fd, b"x" * 200000, 0)
    big = await h.read(fd, 131072, 100000)
    assert big == b"x" * 100000 and type(big) is bytes
    await h.close(fd)
