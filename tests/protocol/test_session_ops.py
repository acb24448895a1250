"""Every request the bridge serves, over storage/memory, checked on the wire (reply bytes)
and in the bridge's tables (inode table, fh table, lookup counts); plus the reader pool's
hand-over when a request waits."""
from __future__ import annotations

import errno
import os
import stat
import struct
import time

import pytest
import trio

from fuse_bridge import abi
from fuse_bridge.options import BridgeOptions
from tests.protocol.kernel import ALL_FLAGS, cstr, memory_graph, serve

O = abi.Opcode
I = abi.InitFlag
V = abi.SetattrValid
HDR = struct.Struct("<IiQ")
ENTRY = struct.Struct("<QQQQII" + "QQQQQQIIIIIIIIII")   # fuse_entry_out, by hand
ATTR_OUT = struct.Struct("<QI4x" + "QQQQQQIIIIIIIIII")  # fuse_attr_out, by hand
OPTS = BridgeOptions(entry_timeout=2.5, attribute_timeout=1.25)

XATTR_CREATE, XATTR_REPLACE = 1, 2
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE = 0, 1, 2, 3, 4


async def make_file(k, parent: int, name: bytes, data: bytes = b"", keep_open=False):
    """CREATE (+ WRITE) (+ RELEASE): (nodeid, fh or None)."""
    e, o = (await k.create(parent, name)).create()
    if data:
        assert (await k.write(e.nodeid, o.fh, data)).u32() == len(data)
    if keep_open:
        return e.nodeid, o.fh
    (await k.release(e.nodeid, o.fh)).ok()
    return e.nodeid, None


# --------------------------------------------------------------------------- LOOKUP

async def test_lookup_entry_out_golden():
    async with serve(options=OPTS) as (k, s):
        made = (await k.mkdir(1, b"d", 0o750)).entry()
        u = await k.send(O.LOOKUP, cstr(b"d"), 1)
        r = await k.recv()
        inode = s.itable.by_nodeid[made.nodeid]
        a = r.entry().attr
        want = ENTRY.pack(made.nodeid, 0, 2, 1, 500_000_000, 250_000_000, inode.ino,
                          a.size, a.blocks, a.atime, a.mtime, a.ctime, a.atimensec,
                          a.mtimensec, a.ctimensec, stat.S_IFDIR | 0o750, 2, 0, 0, 0,
                          a.blksize, 0)
        assert r.raw == HDR.pack(16 + 128, 0, u) + want
        assert made.nodeid not in (0, 1)
        assert inode.nlookup == 2            # MKDIR's entry and LOOKUP's
        assert a.ino == inode.ino and abs(a.mtime - time.time()) < 60


async def test_lookup_file_and_dot_names():
    async with serve(options=OPTS) as (k, s):
        nodeid, _ = await make_file(k, 1, b"f", b"12345")
        e = (await k.lookup(1, b"f")).entry()
        assert e.nodeid == nodeid
        assert stat.S_ISREG(e.attr.mode) and e.attr.size == 5 and e.attr.nlink == 1
        root = (await k.lookup(1, b".")).entry()
        assert root.nodeid == 1
        assert (await k.lookup(nodeid, b"x")).errno == errno.ENOTDIR


async def test_negative_lookup_without_negative_timeout_is_enoent():
    async with serve(options=OPTS) as (k, s):
        u = await k.send(O.LOOKUP, cstr(b"nothere"), 1)
        assert (await k.recv()).raw == HDR.pack(16, -errno.ENOENT, u)


async def test_negative_lookup_with_negative_timeout_is_nodeid_0():
    opts = BridgeOptions(entry_timeout=2.5, attribute_timeout=1.25, negative_timeout=3.25)
    async with serve(memory_graph("test/gate"), options=opts) as (k, s):
        n = len(s.itable)
        u = await k.send(O.LOOKUP, cstr(b"nothere"), 1)
        r = await k.recv()
        assert r.raw == HDR.pack(16 + 128, 0, u) + ENTRY.pack(0, 0, 3, 0, 250_000_000, 0,
                                                            *([0] * 16))
        assert len(s.itable) == n
        # other errors stay errors
        assert (await k.lookup(1, b"fop")).errno == errno.EACCES


# --------------------------------------------------------------------------- GETATTR

async def test_getattr_root_golden():
    async with serve(options=OPTS) as (k, s):
        u = await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1)
        r = await k.recv()
        a = r.attr().attr
        want = ATTR_OUT.pack(1, 250_000_000, s.itable.root.ino, a.size, a.blocks, a.atime,
                             a.mtime, a.ctime, a.atimensec, a.mtimensec, a.ctimensec,
                             stat.S_IFDIR | 0o755, 2, 0, 0, 0, a.blksize, 0)
        assert r.raw == HDR.pack(16 + 104, 0, u) + want


async def test_getattr_with_fh():
    async with serve(options=OPTS) as (k, s):
        nodeid, fh = await make_file(k, 1, b"f", b"abc", keep_open=True)
        a = (await k.getattr(nodeid, fh=fh)).attr()
        assert a.attr.size == 3 and (a.attr_valid, a.attr_valid_nsec) == (1, 250_000_000)
        # an fh the bridge does not know is ignored (GETATTR by nodeid)
        assert (await k.getattr(nodeid, fh=999)).attr().attr.size == 3


# --------------------------------------------------------------------------- SETATTR

async def test_setattr_mode_size_and_times():
    async with serve(options=OPTS) as (k, s):
        nodeid, fh = await make_file(k, 1, b"f", b"hello", keep_open=True)
        a = (await k.setattr(nodeid, V.MODE, mode=stat.S_IFREG | 0o4600)).attr()
        assert a.attr.mode == stat.S_IFREG | 0o4600
        assert (a.attr_valid, a.attr_valid_nsec) == (1, 250_000_000)

        a = (await k.setattr(nodeid, V.SIZE, size=10)).attr().attr
        assert a.size == 10
        assert (await k.read(nodeid, fh, 100)).ok().body == b"hello" + bytes(5)
        a = (await k.setattr(nodeid, V.SIZE | V.FH, size=2, fh=fh)).attr().attr
        assert a.size == 2

        a = (await k.setattr(nodeid, V.ATIME | V.MTIME, atime=1000, atimensec=5,
                             mtime=2000, mtimensec=7)).attr().attr
        assert (a.atime, a.atimensec, a.mtime, a.mtimensec) == (1000, 5, 2000, 7)

        before = time.time()
        a = (await k.setattr(nodeid, V.ATIME | V.MTIME | V.ATIME_NOW | V.MTIME_NOW,
                             atime=1, mtime=1)).attr().attr     # UTIME_NOW wins
        assert a.atime >= int(before) - 1 and a.mtime >= int(before) - 1
        assert a.mtime <= time.time() + 1

        a = (await k.setattr(nodeid, V.UID | V.GID, uid=1234, gid=5678)).attr().attr
        assert (a.uid, a.gid) == (1234, 5678)
        assert a.mode & 0o7777 == 0o600                  # chown kills setuid

        a = (await k.setattr(nodeid, V.CTIME, ctime=3000, ctimensec=9)).attr().attr
        assert (a.ctime, a.ctimensec) == (3000, 9)


async def test_setattr_errors():
    async with serve() as (k, s):
        d = (await k.mkdir(1, b"d")).entry()
        assert (await k.setattr(d.nodeid, V.SIZE, size=0)).errno == errno.EISDIR
        assert (await k.setattr(12345, V.MODE, mode=0o600)).errno == errno.ESTALE


# --------------------------------------------------------------------------- create

async def test_mkdir_and_create():
    async with serve(options=OPTS) as (k, s):
        d = (await k.mkdir(1, b"dir", 0o700)).entry()
        assert stat.S_ISDIR(d.attr.mode) and d.attr.mode & 0o777 == 0o700
        assert (d.entry_valid, d.attr_valid) == (2, 1)
        assert s.itable.by_nodeid[d.nodeid].nlookup == 1

        u = await k.send(O.CREATE, abi.CREATE_IN.pack(os.O_RDWR | os.O_CREAT,
                                                      stat.S_IFREG | 0o640, 0o022, 0)
                         + cstr(b"file"), d.nodeid)
        r = await k.recv()
        e, o = r.create()
        assert r.len == 16 + 128 + 16
        # storage/memory needs no FLUSH: the kernel is told not to send it
        assert r.raw[16 + 128:] == struct.pack("<QIi", o.fh, abi.FopenFlag.NOFLUSH, 0)
        assert stat.S_ISREG(e.attr.mode) and e.attr.mode & 0o777 == 0o640
        inode = s.itable.by_nodeid[e.nodeid]
        assert inode.nlookup == 1 and inode.refs == 1
        assert s.client.fds[o.fh].inode is inode and not s.client.fds[o.fh].is_dir
        # CREATE of an existing name opens it (no O_EXCL), EEXIST with O_EXCL
        e2, o2 = (await k.create(d.nodeid, b"file")).create()
        assert e2.nodeid == e.nodeid and o2.fh != o.fh and inode.nlookup == 2
        assert inode.refs == 2
        r = await k.create(d.nodeid, b"file", flags=os.O_RDWR | os.O_CREAT | os.O_EXCL)
        assert r.errno == errno.EEXIST


@pytest.mark.parametrize("opts,flags", [
    (BridgeOptions(), 0),
    (BridgeOptions(direct_io_mode=True), abi.FopenFlag.DIRECT_IO),
    (BridgeOptions(fopen_keep_cache=True), abi.FopenFlag.KEEP_CACHE),
])
async def test_open_flags_from_options(opts, flags):
    flags |= abi.FopenFlag.NOFLUSH          # storage/memory needs no FLUSH
    async with serve(options=opts) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        assert o.open_flags == flags
        o2 = (await k.open(e.nodeid)).open()
        assert o2.open_flags == flags


async def test_mknod_unlink_rmdir_access():
    async with serve() as (k, s):
        e = (await k.mknod(1, b"fifo", stat.S_IFIFO | 0o600)).entry()
        assert stat.S_ISFIFO(e.attr.mode)
        (await k.access(e.nodeid, os.R_OK | os.W_OK)).ok()
        (await k.unlink(1, b"fifo")).ok()
        assert (await k.lookup(1, b"fifo")).errno == errno.ENOENT
        d = (await k.mkdir(1, b"d")).entry()
        await make_file(k, d.nodeid, b"x")
        assert (await k.rmdir(1, b"d")).errno == errno.ENOTEMPTY
        (await k.unlink(d.nodeid, b"x")).ok()
        (await k.rmdir(1, b"d")).ok()
        assert (await k.lookup(1, b"d")).errno == errno.ENOENT


# --------------------------------------------------------------------------- I/O

async def test_write_and_read_golden():
    async with serve() as (k, s):
        nodeid, fh = await make_file(k, 1, b"f", keep_open=True)
        data = bytes(range(256)) * 20
        u = await k.send(O.WRITE, abi.WRITE_IN.pack(fh, 0, len(data), 0, 0, 0) + data,
                         nodeid)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + struct.pack("<I4x", len(data))
        u = await k.send(O.READ, abi.READ_IN.pack(fh, 100, 10, 0, 0, 0), nodeid)
        assert (await k.recv()).raw == HDR.pack(26, 0, u) + data[100:110]
        assert (await k.read(nodeid, fh, 1 << 16)).ok().body == data
        assert (await k.read(nodeid, fh, 10, offset=1 << 20)).ok().body == b""
        # a write past the end leaves a hole that reads as zeros
        assert (await k.write(nodeid, fh, b"tail", offset=10000)).u32() == 4
        body = (await k.read(nodeid, fh, 1 << 16)).ok().body
        assert body == data + bytes(10000 - len(data)) + b"tail"
        big = os.urandom(100_000)
        assert (await k.write(nodeid, fh, big, offset=0)).u32() == len(big)
        assert (await k.read(nodeid, fh, len(big))).ok().body == big
        assert (await k.getattr(nodeid)).attr().attr.size == len(big)


async def test_read_only_fd_refuses_write():
    async with serve() as (k, s):
        nodeid, _ = await make_file(k, 1, b"f", b"abc")
        fh = (await k.open(nodeid, os.O_RDONLY)).open().fh
        assert (await k.write(nodeid, fh, b"x")).errno == errno.EBADF
        assert (await k.read(nodeid, fh, 3)).ok().body == b"abc"


async def test_fsync_syncfs():
    async with serve() as (k, s):
        nodeid, fh = await make_file(k, 1, b"f", b"abc", keep_open=True)
        (await k.fsync(nodeid, fh)).ok()
        (await k.fsync(nodeid, fh, datasync=True)).ok()
        u = await k.send(O.SYNCFS, abi.SYNCFS_IN.pack(), 1)
        assert (await k.recv()).raw == HDR.pack(16, 0, u)


# --------------------------------------------------------------------------- READDIR

NAMES = [b"f%02d" % i for i in range(12)] + [b"a-much-longer-name-than-the-others"]


async def _populate(k, parent: int, names=NAMES) -> dict[bytes, int]:
    inos = {}
    for n in names:
        e, o = (await k.create(parent, n)).create()
        inos[n] = e.attr.ino
        (await k.release(e.nodeid, o.fh)).ok()
    return inos


@pytest.mark.parametrize("top", [(), ("test/greedy",)])
async def test_readdir_resumes_across_small_buffers(top):
    async with serve(memory_graph(*top)) as (k, s):
        inos = await _populate(k, 1)
        entries, calls = await k.listdir(1, size=100)
        names = [e.name for e in entries]
        assert sorted(names) == sorted([b".", b".."] + NAMES)
        assert len(names) == len(set(names)), "an entry came twice"
        assert calls >= 6                               # 100 bytes hold 2-3 entries
        for e in entries:
            if e.name in inos:
                assert e.ino == inos[e.name] and e.type == stat.S_IFREG >> 12
            else:
                assert e.type == stat.S_IFDIR >> 12
        offs = [e.off for e in entries]
        assert len(set(offs)) == len(offs)
        # one big buffer gives the same listing in one request (and an empty one after)
        big, calls = await k.listdir(1, size=1 << 16)
        assert [e.name for e in big] == names and calls == 2


async def test_readdir_buffer_bytes():
    async with serve() as (k, s):
        await _populate(k, 1, [b"abc"])
        fh = (await k.opendir(1)).open().fh
        r = await k.readdir(1, fh, 0, 4096)
        ino = s.itable.root.ino
        body = r.ok().body
        dot = struct.pack("<QQII", ino, 1, 1, 4) + b".\0\0\0\0\0\0\0"
        dotdot = struct.pack("<QQII", ino, 2, 2, 4) + b"..\0\0\0\0\0\0"
        assert body.startswith(dot + dotdot)
        rest = body[len(dot + dotdot):]
        assert len(rest) == 32 and rest[16:24] == struct.pack("<II", 3, 8)
        assert rest[24:] == b"abc" + bytes(5)
        # a buffer too small for one entry: nothing (the kernel reads that as the end)
        assert (await k.readdir(1, fh, 0, 20)).ok().body == b""


async def test_readdirplus_resumes_and_counts_lookups():
    async with serve(options=OPTS) as (k, s):
        inos = await _populate(k, 1)
        for n in NAMES:                                   # CREATE counted one lookup each
            nid = (await k.lookup(1, n)).entry().nodeid
            await k.forget(nid, 2)
        await k.sync()
        assert len(s.itable) == 1                         # only the root is left
        entries, calls = await k.listdir(1, size=400, plus=True)
        assert sorted(e.name for e in entries) == sorted([b".", b".."] + NAMES)
        assert calls >= 6
        for e in entries:
            if e.name in (b".", b".."):
                assert e.entry.nodeid == 0 and e.entry.entry_valid == 0
                assert e.entry.attr.ino == e.ino and stat.S_ISDIR(e.entry.attr.mode)
                continue
            inode = s.itable.by_nodeid[e.entry.nodeid]
            assert inode.ino == inos[e.name] == e.ino == e.entry.attr.ino
            assert inode.nlookup == 1, (e.name, inode)
            assert (e.entry.entry_valid, e.entry.entry_valid_nsec) == (2, 500_000_000)
            assert (e.entry.attr_valid, e.entry.attr_valid_nsec) == (1, 250_000_000)
        assert s.itable.root.nlookup == 1                 # "." and ".." not counted


async def test_readdirplus_does_not_count_entries_that_did_not_fit():
    async with serve(memory_graph("test/greedy", "test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        d = (await k.mkdir(1, b"d")).entry()
        names = [b"a%d" % i for i in range(6)]
        nodeids = {}
        for n in names:
            e, o = (await k.create(d.nodeid, n)).create()
            nodeids[n] = e.nodeid
            (await k.release(e.nodeid, o.fh)).ok()
            await k.forget(e.nodeid, 1)
        await k.sync()
        assert set(s.itable.by_nodeid) == {1, d.nodeid}
        kept = (await k.lookup(d.nodeid, b"a5")).entry()   # known to the kernel already
        gate.forgotten.clear()

        fh = (await k.opendir(d.nodeid)).open().fh
        # "." and ".." (160 bytes each) and two 160-byte entries fit in 640 bytes
        r = await k.readdir(d.nodeid, fh, 0, 640, plus=True)
        got = r.direntplus()
        assert [e.name for e in got] == [b".", b"..", b"a0", b"a1"]
        counted = {e.name: s.itable.by_nodeid[e.entry.nodeid] for e in got[2:]}
        assert all(i.nlookup == 1 for i in counted.values())
        # a2..a5 did not fit: not counted; the new inodes (a2..a4) left the table and
        # were forgotten, a5 (looked up before) stays as it was
        assert set(s.itable.by_nodeid) == {1, d.nodeid, kept.nodeid} | {
            i.nodeid for i in counted.values()}
        assert len(gate.forgotten) == 3
        assert {i.ino for i in gate.forgotten}.isdisjoint(i.ino for i in s.itable)
        assert s.itable.by_nodeid[kept.nodeid].nlookup == 1     # not forgotten, not counted
        assert s.itable.by_nodeid[d.nodeid].nlookup == 1        # "." not counted

        r = await k.readdir(d.nodeid, fh, got[-1].off, 640, plus=True)
        rest = r.direntplus()
        assert [e.name for e in rest] == [b"a2", b"a3", b"a4", b"a5"]
        assert rest[-1].entry.nodeid == kept.nodeid
        assert s.itable.by_nodeid[kept.nodeid].nlookup == 2
        assert (await k.readdir(d.nodeid, fh, rest[-1].off, 640, plus=True)).ok().body == b""
        (await k.releasedir(d.nodeid, fh)).ok()


# --------------------------------------------------------------------------- FORGET

async def test_forget_drops_the_inode_and_calls_forget():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        memory = s.graph.xlators["memory"]
        nodeid, _ = await make_file(k, 1, b"f")
        (await k.lookup(1, b"f")).entry()
        inode = s.itable.by_nodeid[nodeid]
        assert inode.nlookup == 2 and memory in inode.ctx
        await k.forget(nodeid, 1)
        await k.sync()
        assert s.itable.by_nodeid[nodeid] is inode and inode.nlookup == 1
        assert gate.forgotten == []
        await k.forget(nodeid, 1)
        await k.sync()
        assert nodeid not in s.itable.by_nodeid and inode.ino not in s.itable.by_ino
        assert gate.forgotten == [inode]
        assert memory not in inode.ctx                    # memory's forget ran
        assert (await k.getattr(nodeid)).errno == errno.ESTALE
        # the file is still there: a new lookup gives a new Inode, under the same nodeid
        # (memory's export key, so that file handles stay valid)
        e = (await k.lookup(1, b"f")).entry()
        assert e.nodeid == nodeid and e.attr.ino == inode.ino
        assert s.itable.by_nodeid[nodeid] is not inode


async def test_batch_forget():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        a, _ = await make_file(k, 1, b"a")
        b, _ = await make_file(k, 1, b"b")
        c, _ = await make_file(k, 1, b"c")
        for _ in range(2):
            (await k.lookup(1, b"b")).entry()
        await k.batch_forget([(a, 1), (b, 2), (c, 10), (424242, 1)])   # c: more than held
        await k.sync()
        assert a not in s.itable.by_nodeid and c not in s.itable.by_nodeid
        assert s.itable.by_nodeid[b].nlookup == 1
        assert sorted(i.nodeid for i in gate.forgotten) == sorted([a, c])


async def test_forget_of_an_open_file_waits_for_release():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        nodeid, fh = await make_file(k, 1, b"f", b"data", keep_open=True)
        await k.forget(nodeid, 1)
        await k.sync()
        inode = s.itable.by_nodeid[nodeid]
        assert inode.nlookup == 0 and inode.refs == 1 and gate.forgotten == []
        assert (await k.read(nodeid, fh, 10)).ok().body == b"data"
        (await k.flush(nodeid, fh)).ok()
        (await k.release(nodeid, fh)).ok()
        assert nodeid not in s.itable.by_nodeid and gate.forgotten == [inode]
        assert s.client.fds == {}


# --------------------------------------------------------------------------- names

async def test_rename_and_rename2_flags():
    async with serve() as (k, s):
        a, _ = await make_file(k, 1, b"a", b"AAA")
        b, _ = await make_file(k, 1, b"b", b"BB")
        ino_a = (await k.lookup(1, b"a")).entry().attr.ino
        ino_b = (await k.lookup(1, b"b")).entry().attr.ino
        assert (await k.rename(1, b"a", 1, b"b", RENAME_NOREPLACE)).errno == errno.EEXIST
        assert (await k.rename(1, b"a", 1, b"b", RENAME_NOREPLACE | RENAME_EXCHANGE)
                ).errno == errno.EINVAL
        assert (await k.rename(1, b"a", 1, b"b", RENAME_WHITEOUT)).errno == errno.EINVAL
        assert (await k.rename(1, b"a", 1, b"zz", RENAME_EXCHANGE)).errno == errno.ENOENT
        (await k.rename(1, b"a", 1, b"b", RENAME_EXCHANGE)).ok()
        assert (await k.lookup(1, b"a")).entry().attr.ino == ino_b
        assert (await k.lookup(1, b"b")).entry().attr.ino == ino_a
        (await k.rename(1, b"a", 1, b"c", RENAME_NOREPLACE)).ok()
        assert (await k.lookup(1, b"a")).errno == errno.ENOENT
        d = (await k.mkdir(1, b"d")).entry()
        (await k.rename(1, b"c", d.nodeid, b"moved")).ok()        # plain RENAME
        assert (await k.lookup(d.nodeid, b"moved")).entry().attr.ino == ino_b
        (await k.rename(d.nodeid, b"moved", 1, b"b", 0)).ok()    # RENAME2, flags 0: replace
        assert (await k.lookup(1, b"b")).entry().attr.ino == ino_b


async def test_link():
    async with serve() as (k, s):
        nodeid, _ = await make_file(k, 1, b"f", b"x")
        d = (await k.mkdir(1, b"d")).entry()
        e = (await k.link(nodeid, d.nodeid, b"hard")).entry()
        assert e.nodeid == nodeid and e.attr.nlink == 2
        assert s.itable.by_nodeid[nodeid].nlookup == 2
        assert (await k.link(nodeid, d.nodeid, b"hard")).errno == errno.EEXIST
        assert (await k.link(d.nodeid, 1, b"dirlink")).errno == errno.EPERM


async def test_symlink_and_readlink():
    async with serve() as (k, s):
        target = b"some/where/else"
        e = (await k.symlink(1, b"sl", target)).entry()
        assert e.attr.mode == stat.S_IFLNK | 0o777 and e.attr.size == len(target)
        u = await k.send(O.READLINK, b"", e.nodeid)
        assert (await k.recv()).raw == HDR.pack(16 + len(target), 0, u) + target
        f, _ = await make_file(k, 1, b"f")
        assert (await k.readlink(f)).errno == errno.EINVAL
        assert (await k.symlink(1, b"sl", b"x")).errno == errno.EEXIST


# --------------------------------------------------------------------------- xattrs

@pytest.mark.parametrize("ext", [True, False])
async def test_xattrs(ext):
    flags = ALL_FLAGS if ext else ALL_FLAGS & ~int(I.SETXATTR_EXT)
    async with serve(flags=flags) as (k, s):
        assert bool(s.client.flags & I.SETXATTR_EXT) == ext
        nodeid, _ = await make_file(k, 1, b"f")
        value = b"value\0with\xffbytes"
        (await k.setxattr(nodeid, b"user.one", value, ext=ext)).ok()
        (await k.setxattr(nodeid, b"user.two", b"", ext=ext)).ok()
        assert (await k.setxattr(nodeid, b"user.one", b"v", XATTR_CREATE, ext=ext)
                ).errno == errno.EEXIST
        assert (await k.setxattr(nodeid, b"user.zzz", b"v", XATTR_REPLACE, ext=ext)
                ).errno == errno.ENODATA

        u = await k.send(O.GETXATTR, abi.GETXATTR_IN.pack(0) + cstr(b"user.one"), nodeid)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + struct.pack("<I4x", len(value))
        assert (await k.getxattr(nodeid, b"user.one", len(value) - 1)).errno == errno.ERANGE
        assert (await k.getxattr(nodeid, b"user.one", len(value))).ok().body == value
        assert (await k.getxattr(nodeid, b"user.one", 4096)).ok().body == value
        assert (await k.getxattr(nodeid, b"user.two", 10)).ok().body == b""
        assert (await k.getxattr(nodeid, b"user.nope", 0)).errno == errno.ENODATA

        blob = b"user.one\0user.two\0"
        u = await k.send(O.LISTXATTR, abi.GETXATTR_IN.pack(0), nodeid)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + struct.pack("<I4x", len(blob))
        assert (await k.listxattr(nodeid, 5)).errno == errno.ERANGE
        got = (await k.listxattr(nodeid, len(blob))).ok().body
        assert sorted(got.split(b"\0")[:-1]) == [b"user.one", b"user.two"]

        (await k.removexattr(nodeid, b"user.one")).ok()
        assert (await k.getxattr(nodeid, b"user.one", 100)).errno == errno.ENODATA
        assert (await k.removexattr(nodeid, b"user.one")).errno == errno.ENODATA
        assert (await k.listxattr(nodeid, 100)).ok().body == b"user.two\0"


async def test_setxattr_ext_layout_carries_setxattr_flags():
    async with serve() as (k, s):
        nodeid, _ = await make_file(k, 1, b"f")
        # the third u32 (setxattr_flags) is not taken for the value
        r = await k.setxattr(nodeid, b"user.k", b"abc", ext=True,
                             setxattr_flags=abi.SetxattrFlag.ACL_KILL_SGID)
        r.ok()
        assert (await k.getxattr(nodeid, b"user.k", 10)).ok().body == b"abc"


# --------------------------------------------------------------------------- STATFS

async def test_statfs_golden():
    async with serve() as (k, s):
        u = await k.send(O.STATFS, b"", 1)
        r = await k.recv()
        st = r.statfs()
        assert r.len == 16 + 80
        blocks = (1 << 30) // 4096
        assert (st.blocks, st.bsize, st.namelen, st.frsize) == (blocks, 4096, 255, 4096)
        assert r.raw == HDR.pack(96, 0, u) + struct.pack(
            "<QQQQQIII4x24x", blocks, st.bfree, st.bavail, st.files, st.ffree, 4096, 255,
            4096)
        assert st.bfree == st.bavail == blocks and st.ffree < st.files


# --------------------------------------------------------------------------- handles

async def test_flush_and_release_empty_the_fh_table():
    async with serve() as (k, s):
        e, o = (await k.create(1, b"f")).create()
        o2 = (await k.open(e.nodeid, os.O_RDONLY)).open()
        inode = s.itable.by_nodeid[e.nodeid]
        assert set(s.client.fds) == {o.fh, o2.fh} and inode.refs == 2
        u = await k.send(O.FLUSH, abi.FLUSH_IN.pack(o.fh, 77), e.nodeid)
        assert (await k.recv()).raw == HDR.pack(16, 0, u)
        u = await k.send(O.RELEASE, abi.RELEASE_IN.pack(o.fh, os.O_RDWR, 0, 0), e.nodeid)
        assert (await k.recv()).raw == HDR.pack(16, 0, u)
        assert set(s.client.fds) == {o2.fh} and inode.refs == 1
        (await k.release(e.nodeid, o2.fh, release_flags=abi.ReleaseFlag.FLUSH)).ok()
        assert s.client.fds == {} and inode.refs == 0
        assert (await k.release(e.nodeid, o.fh)).errno == errno.EBADF
        assert (await k.flush(e.nodeid, o.fh)).errno == errno.EBADF
        assert s.itable.by_nodeid[e.nodeid] is inode               # still looked up


async def test_opendir_releasedir_fsyncdir():
    async with serve() as (k, s):
        d = (await k.mkdir(1, b"d")).entry()
        o = (await k.opendir(d.nodeid)).open()
        fd = s.client.fds[o.fh]
        assert fd.is_dir and fd.inode is s.itable.by_nodeid[d.nodeid]
        assert fd.inode.refs == 1
        (await k.fsync(d.nodeid, o.fh, dir=True)).ok()
        u = await k.send(O.RELEASEDIR, abi.RELEASE_IN.pack(o.fh, 0, 0, 0), d.nodeid)
        assert (await k.recv()).raw == HDR.pack(16, 0, u)
        assert s.client.fds == {} and fd.inode.refs == 0
        assert (await k.releasedir(d.nodeid, o.fh)).errno == errno.EBADF
        f, _ = await make_file(k, 1, b"f")
        assert (await k.opendir(f)).errno == errno.ENOTDIR
        assert s.client.fds == {}


# --------------------------------------------------------------------------- FALLOCATE, LSEEK

async def test_fallocate():
    async with serve() as (k, s):
        nodeid, fh = await make_file(k, 1, b"f", keep_open=True)
        u = await k.send(O.FALLOCATE, abi.FALLOCATE_IN.pack(fh, 0, 8192, 0), nodeid)
        assert (await k.recv()).raw == HDR.pack(16, 0, u)
        assert (await k.getattr(nodeid)).attr().attr.size == 8192
        (await k.fallocate(nodeid, fh, 8192, 4096, FALLOC_FL_KEEP_SIZE)).ok()
        assert (await k.getattr(nodeid)).attr().attr.size == 8192
        assert (await k.fallocate(nodeid, fh, 0, 4096, FALLOC_FL_PUNCH_HOLE)).errno \
            == errno.EOPNOTSUPP
        (await k.fallocate(nodeid, fh, 0, 4096, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
         ).ok()
        assert (await k.fallocate(nodeid, fh, 0, 0)).errno == errno.EINVAL
        assert (await k.fallocate(nodeid, 999, 0, 10)).errno == errno.EBADF


async def test_lseek():
    async with serve() as (k, s):
        nodeid, fh = await make_file(k, 1, b"f", keep_open=True)
        (await k.write(nodeid, fh, b"x" * 10, offset=1 << 20)).u32()
        size = (1 << 20) + 10
        u = await k.send(O.LSEEK, abi.LSEEK_IN.pack(fh, 0, SEEK_DATA), nodeid)
        r = await k.recv()
        assert r.raw == HDR.pack(24, 0, u) + struct.pack("<Q", 1 << 20)
        assert (await k.lseek(nodeid, fh, 0, SEEK_HOLE)).u64() == 0
        assert (await k.lseek(nodeid, fh, 1 << 20, SEEK_HOLE)).u64() == size
        assert (await k.lseek(nodeid, fh, 4, SEEK_END)).u64() == size + 4
        assert (await k.lseek(nodeid, fh, 123, SEEK_SET)).u64() == 123
        assert (await k.lseek(nodeid, fh, size + 1, SEEK_DATA)).errno == errno.ENXIO
        assert (await k.lseek(nodeid, fh, 0, SEEK_CUR)).errno == errno.EINVAL


async def test_copy_file_range():
    async with serve() as (k, s):
        src, sfh = await make_file(k, 1, b"src", b"hello world", keep_open=True)
        dst, dfh = await make_file(k, 1, b"dst", keep_open=True)
        body = abi.COPY_FILE_RANGE_IN.pack(sfh, 6, dst, dfh, 0, 5, 0)
        u = await k.send(O.COPY_FILE_RANGE, body, src)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + struct.pack("<I4x", 5)
        assert (await k.read(dst, dfh, 100)).ok().body == b"world"
        u = await k.send(O.COPY_FILE_RANGE_64, abi.COPY_FILE_RANGE_IN.pack(
            sfh, 0, dst, dfh, 5, 100, 0), src)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + struct.pack("<Q", 11)
        assert (await k.read(dst, dfh, 100)).ok().body == b"worldhello world"
        assert (await k.copy_file_range(src, sfh, 0, dst, dfh, 0, 5, flags=1)).errno \
            == errno.EINVAL
        assert (await k.copy_file_range(src, 999, 0, dst, dfh, 0, 5)).errno == errno.EBADF


# --------------------------------------------------------------------------- concurrency

async def test_a_waiting_request_does_not_stall_the_others():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        await make_file(k, 1, b"slow")
        slow = await k.send(O.LOOKUP, cstr(b"slow"), 1)
        fast = [await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1) for _ in range(50)]
        got = []
        with trio.fail_after(5):
            for _ in fast:
                r = await k.recv()
                r.attr()
                got.append(r.unique)
        assert got == fast                          # in order, and the slow one not among them
        assert gate.waiting == 1 and slow in s.interrupts.pending
        assert await k.silence(0.05)
        gate.gate_open.set()
        r = await k.recv()
        assert r.unique == slow and r.entry().attr.size == 0
        assert s.interrupts.pending == {}
        assert 1 <= s.channels[0].readers <= 1 + s.opts.idle_readers


async def test_many_waiting_requests_grow_the_reader_pool():
    async with serve(memory_graph("test/gate"), BridgeOptions(idle_readers=2)) as (k, s):
        gate = s.graph.xlators["gate"]
        gate.slow = {b"s%d" % i for i in range(5)}
        slow = [await k.send(O.LOOKUP, cstr(b"s%d" % i), 1) for i in range(5)]
        with trio.fail_after(5):
            while gate.waiting < 5:
                await trio.sleep(0.01)
        (await k.getattr(1)).attr()                 # still served
        assert s.channels[0].readers >= 6
        gate.gate_open.set()
        replies = [await k.recv() for _ in slow]
        assert sorted(r.unique for r in replies) == slow
        assert all(r.errno == errno.ENOENT for r in replies)
        # the extra readers park or exit; the device is still served
        for _ in range(3):
            (await k.getattr(1)).attr()
        assert s.channels[0].readers <= 1 + 2


async def test_a_waiting_handler_that_raises_is_eio():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        gate.slow = {b"x-boom"}
        u = await k.send(O.LOOKUP, cstr(b"x-boom"), 1)
        (await k.getattr(1)).attr()
        gate.gate_open.set()
        assert (await k.recv()).raw == HDR.pack(16, -errno.EIO, u)
        assert s.stats["exceptions"] == 1 and s.interrupts.pending == {}
        (await k.getattr(1)).attr()


async def test_interrupting_a_waiting_request_answers_once():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        gate.interruptible = True
        await make_file(k, 1, b"slow")
        u = await k.send(O.LOOKUP, cstr(b"slow"), 1)
        with trio.fail_after(5):
            while not gate.waiting:
                await trio.sleep(0.01)
        await k.interrupt(u)
        assert (await k.recv()).raw == HDR.pack(16, -errno.EINTR, u)
        assert gate.interrupted == [b"slow"] and gate.waiting == 0
        gate.gate_open.set()
        assert await k.silence(0.1)
        assert s.interrupts.pending == {}
        (await k.getattr(1)).attr()
        # the interrupted LOOKUP counted no lookup
        nodeid = next(i.nodeid for i in s.itable if i.nodeid != 1)
        assert s.itable.by_nodeid[nodeid].nlookup == 1            # CREATE's only


async def test_interrupt_without_a_handler_lets_the_request_finish():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        u = await k.send(O.LOOKUP, cstr(b"slow"), 1)
        with trio.fail_after(5):
            while not gate.waiting:
                await trio.sleep(0.01)
        await k.interrupt(u)
        assert await k.silence(0.1)                # no EINTR, no ENOSYS, no EAGAIN
        gate.gate_open.set()
        assert (await k.recv()).raw == HDR.pack(16, -errno.ENOENT, u)
        assert await k.silence(0.05)
