"""Export keys and the resolve fop: an inode the table forgot is found again from its
nodeid alone (what the bridge needs for file handles after the kernel dropped its
caches), for storage/memory and storage/posix, through pass-through translators; a
deleted object, a reused backing inode number, a directory outside the brick and a
garbage key are ESTALE."""
from __future__ import annotations

import errno
import os
import stat
import sys

import pytest

from xlators import FopError
from xlators.core.inode import COUNTED_GENERATION, ROOT_NODEID, Fd, Inode, InodeTable
from xlators.storage import posix_handle
from xlators.testing import Harness
from tests.mount.fhandle import small_ext4

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")


# -- the inode table ---------------------------------------------------------------------

def test_a_key_becomes_the_nodeid_with_generation_zero():
    t = InodeTable()
    keyed = t.link(10, 0x1234_5678_9ABC)
    assert (keyed.nodeid, keyed.generation) == (0x1234_5678_9ABC, 0)
    assert t.link(10, 0x999) is keyed                 # identity stays the ino
    counted = t.link(11)
    assert counted.nodeid == ROOT_NODEID + 1 and counted.generation == COUNTED_GENERATION


def test_a_taken_or_impossible_key_falls_back_to_the_counter():
    t = InodeTable()
    a = t.link(10)                                     # counted nodeid 2
    for ino, key in ((11, a.nodeid), (12, ROOT_NODEID), (13, 1 << 64), (14, -5)):
        inode = t.link(ino, key)
        assert inode.generation == COUNTED_GENERATION and inode.nodeid != key
        assert t.get(inode.nodeid) is inode


def test_the_counter_skips_nodeids_that_keys_hold():
    t = InodeTable()
    keyed = t.link(100, 3)
    nodeids = [t.link(ino).nodeid for ino in range(4)]
    assert keyed.nodeid == 3 and 3 not in nodeids and len(set(nodeids)) == 4


async def test_resolve_winds_only_to_a_child_sharing_the_table():
    """An export key is a nodeid of the storage's table: a translator whose child has a
    table of its own (cluster/*) must not pass child inodes up as its own."""
    from xlators.core.translator import Translator
    from xlators.testing import make_translator
    leaf = make_translator("storage/memory", itable=InodeTable())
    leaf.init()
    f = await Harness(leaf).create("/f")
    await Harness(leaf).close(f)
    shared = Translator("shared", [leaf])
    private = Translator("private", [leaf], itable=InodeTable())
    assert (await shared.resolve(Harness(leaf).frame(), f.inode.nodeid)).inode is f.inode
    with pytest.raises(FopError) as info:
        await private.resolve(Harness(leaf).frame(), f.inode.nodeid)
    assert info.value.errno == errno.ESTALE


# -- both storages -------------------------------------------------------------------------

@pytest.fixture(params=["memory", "posix"])
def h(request, tmp_path):
    if request.param == "posix":
        if os.geteuid() != 0:
            pytest.skip("storage/posix tests run as root")
        (tmp_path / "brick").mkdir()
        harness = Harness.stack(
            "features/locks", "debug/io-stats", "debug/trace", leaf="storage/posix",
            options={"storage/posix": {"directory": str(tmp_path / "brick"),
                                       "reserve": "0"}})
    else:
        harness = Harness.stack("features/locks", "debug/io-stats", "debug/trace")
    yield harness
    harness.fini()


async def forget(h: Harness, inode: Inode) -> None:
    """As the bridge does when the kernel's last reference goes."""
    inode.nlookup = 0
    assert h.itable.purge(inode)
    await h.top.forget(h.frame(), inode)


async def read_inode(h: Harness, inode: Inode) -> bytes:
    fd = Fd(inode, os.O_RDONLY)
    await h.top.open(h.frame(), inode, os.O_RDONLY, fd)
    try:
        return await h.top.readv(h.frame(), fd, 1 << 16, 0)
    finally:
        await h.top.release(h.frame(), fd)


async def resolve_errno(h: Harness, nodeid: int) -> int:
    with pytest.raises(FopError) as info:
        await h.top.resolve(h.frame(), nodeid)
    return info.value.errno


async def test_a_forgotten_file_and_directory_resolve_to_their_nodeids(h):
    await h.mkdir("/d")
    await h.write_file("/d/f", b"hello")
    f = (await h.lookup("/d/f")).inode
    d = (await h.lookup("/d")).inode
    fid, did = f.nodeid, d.nodeid
    assert f.generation == d.generation == 0          # keyed, not counted
    await forget(h, f)
    await forget(h, d)
    assert h.itable.get(fid) is None and h.itable.get(did) is None

    entry = await h.top.resolve(h.frame(), fid)
    assert entry.inode.nodeid == fid and entry.inode is not f
    assert stat.S_ISREG(entry.attr.mode) and entry.attr.size == 5
    assert await read_inode(h, entry.inode) == b"hello"
    dentry = await h.top.resolve(h.frame(), did)
    assert dentry.inode.nodeid == did and stat.S_ISDIR(dentry.attr.mode)
    # a name lookup gives the same inode back: one nodeid per object
    assert (await h.lookup("/d/f")).inode is entry.inode
    stats = h.top.child.as_dict()["fops"]["resolve"]          # debug/io-stats counted it
    assert stats["count"] == 2 and stats["errors"] == 0


async def test_a_deleted_object_is_stale(h):
    await h.mkdir("/d")
    await h.write_file("/f", b"x")
    f = (await h.lookup("/f")).inode
    d = (await h.lookup("/d")).inode
    fid, did = f.nodeid, d.nodeid
    await h.unlink("/f")
    await h.rmdir("/d")
    await forget(h, f)
    await forget(h, d)
    assert await resolve_errno(h, fid) == errno.ESTALE
    assert await resolve_errno(h, did) == errno.ESTALE


async def test_an_unlinked_file_still_open_is_stale(h):
    fd = await h.create("/f")
    fid = fd.inode.nodeid
    await h.unlink("/f")
    # the Inode is still held open, but nothing may find the object by its key
    h.itable.by_nodeid.pop(fid)
    try:
        assert await resolve_errno(h, fid) == errno.ESTALE
    finally:
        h.itable.by_nodeid[fid] = fd.inode
        await h.close(fd)


async def test_a_key_that_names_nothing_is_stale(h):
    for nodeid in (0xDEAD_BEEF_0000_0042, 987654321):
        assert await resolve_errno(h, nodeid) == errno.ESTALE


# -- storage/posix -------------------------------------------------------------------------

def posix_harness(brick) -> Harness:
    return Harness.stack(leaf="storage/posix",
                         options={"storage/posix": {"directory": str(brick), "reserve": "0"}})


@root_only
async def test_posix_key_is_the_bricks_file_handle(tmp_path):
    (tmp_path / "brick").mkdir()
    h = posix_harness(tmp_path / "brick")
    try:
        await h.write_file("/f", b"x")
        inode = (await h.lookup("/f")).inode
        fd = os.open(tmp_path / "brick" / "f", os.O_PATH)
        try:
            htype, data = posix_handle._handle(fd)
        finally:
            os.close(fd)
        assert inode.nodeid == int.from_bytes(data, sys.byteorder)
    finally:
        h.fini()


@root_only
async def test_posix_key_without_the_generation_is_stale(tmp_path):
    """ext4 opens a handle whose generation is 0 whatever the inode's generation is."""
    (tmp_path / "brick").mkdir()
    h = posix_harness(tmp_path / "brick")
    try:
        await h.write_file("/f", b"x")
        inode = (await h.lookup("/f")).inode
        if h.top._handles.type != 1:                       # FILEID_INO32_GEN
            pytest.skip("the brick's handles are not ext4's inode+generation")
        nodeid = inode.nodeid
        inode.nlookup = 0
        h.itable.purge(inode)
        await h.top.forget(h.frame(), inode)
        no_generation = nodeid & 0xFFFF_FFFF
        assert await resolve_errno(h, no_generation) == errno.ESTALE
        assert (await h.top.resolve(h.frame(), nodeid)).inode.nodeid == nodeid
    finally:
        h.fini()


@root_only
async def test_posix_reused_inode_number_is_stale(tmp_path):
    with small_ext4(tmp_path) as fs:
        (fs / "brick").mkdir()
        h = posix_harness(fs / "brick")
        try:
            await _reuse_an_inode_number(h)
        finally:
            h.fini()


async def _reuse_an_inode_number(h: Harness) -> None:
    await h.write_file("/old", b"old")
    old = (await h.lookup("/old")).inode
    old_ino, old_nodeid = old.ino, old.nodeid
    await h.unlink("/old")
    await forget(h, old)
    for i in range(20):                   # ext4 hands a freed inode number out again
        await h.write_file(f"/new{i}", b"new")
        new = (await h.lookup(f"/new{i}")).inode
        if new.ino == old_ino:
            break
    else:
        pytest.fail("a fresh ext4 did not reuse the freed inode number")
    assert new.nodeid != old_nodeid
    assert await resolve_errno(h, old_nodeid) == errno.ESTALE
    await forget(h, new)
    assert (await h.top.resolve(h.frame(), new.nodeid)).attr.ino == old_ino


@root_only
async def test_posix_directory_outside_the_brick_is_stale(tmp_path):
    (tmp_path / "brick" / "in").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    h = posix_harness(tmp_path / "brick")
    try:
        keys = {}
        for name in ("brick/in", "outside"):
            fd = os.open(tmp_path / name, os.O_PATH)
            try:
                keys[name] = h.top._handles.key(fd)
            finally:
                os.close(fd)
        assert all(keys.values())
        assert stat.S_ISDIR((await h.top.resolve(h.frame(), keys["brick/in"])).attr.mode)
        assert await resolve_errno(h, keys["outside"]) == errno.ESTALE
    finally:
        h.fini()


@root_only
async def test_posix_brick_without_small_handles_uses_counted_nodeids(tmp_path):
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.statvfs(shm).f_fsid == os.statvfs(tmp_path).f_fsid:
        pytest.skip("no tmpfs at /dev/shm")
    import tempfile
    with tempfile.TemporaryDirectory(dir=shm) as brick:
        h = posix_harness(brick)
        try:
            assert h.top._handles is None        # tmpfs handles are 12 bytes
            await h.write_file("/f", b"x")
            f = (await h.lookup("/f")).inode
            assert f.generation == COUNTED_GENERATION
            await forget(h, f)
            assert await resolve_errno(h, f.nodeid) == errno.ESTALE
        finally:
            h.fini()
