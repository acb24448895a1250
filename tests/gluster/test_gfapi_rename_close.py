"""storage/gfapi's renames without lookups (gfapi_rename, option direct-rename) and its
closes run behind answered releases, over the real replica-2 volume: no mount."""
from __future__ import annotations

import errno
import fcntl
import os

import pytest
import trio

from tests.gluster.conftest import brick_files, gfapi_volfile, second_client
from xlators.core.graph import Graph
from xlators.core.inode import Loc
from xlators.core.types import LK_SET, Lock
from xlators.testing import Harness


def brick_lookups(bricks) -> int:
    return bricks.fop_stats().get("LOOKUP", (0, 0))[0]


async def test_rename_sends_no_lookups_of_its_own(h, bricks):
    """A rename of names this client knows goes to the bricks without glfs_h_rename's
    two forced lookups (gfapi_rename): at least 3 of the 4 LOOKUPs per rename fewer
    (replicate may refresh the directory itself), and the names are right on both
    bricks and in libgfapi's own table."""
    gf = h.top
    assert gf._direct_rename is not None, "gfapi_rename's checks failed here"
    await h.mkdir("/mv")
    parent = (await h.lookup("/mv")).inode
    n = 10
    counted = {}
    for way in ("direct", "forced"):
        for i in range(n):
            await h.close(await h.create(f"/mv/{way}{i}"))
        saved = gf._direct_rename
        if way == "forced":
            gf._direct_rename = None
        try:
            before = brick_lookups(bricks)
            for i in range(n):
                await gf.rename(h.frame(), Loc(parent, f"{way}{i}".encode()),
                                Loc(parent, f"{way}{i}.new".encode()))
            counted[way] = brick_lookups(bricks) - before
        finally:
            gf._direct_rename = saved
    assert counted["direct"] <= counted["forced"] - 3 * n, counted
    for p in brick_files(bricks, "mv"):
        assert sorted(x.name for x in p.iterdir()) == sorted(
            f"{w}{i}.new" for w in ("direct", "forced") for i in range(n))
    with pytest.raises(OSError) as e:
        await h.lookup("/mv/direct0")
    assert e.value.errno == errno.ENOENT
    await h.unlink("/mv/direct0.new")            # resolved through libgfapi's table
    assert not any(p.exists() for p in brick_files(bricks, "mv/direct0.new"))


async def test_rename_over_a_file_and_of_a_name_another_client_moved(h, bricks, gluster_base):
    """Renaming over an existing file replaces it, through glfs_h_rename (which passes
    the target's inode) even with direct-rename on, leaving one file with the source's
    data on both bricks; a rename of a name another client
    renamed away meanwhile is ENOENT (the bricks do not find it, glfs_h_rename looks
    it up), as is one of a directory's entry another client removed."""
    await h.mkdir("/ow")
    await h.write_file("/ow/src", b"source")
    await h.write_file("/ow/dst", b"target")
    src_ino = (await h.lookup("/ow/src")).inode.ino
    await h.lookup("/ow/dst")
    direct = h.top._direct_rename
    sent = direct.sent if direct is not None else 0
    await h.rename("/ow/src", "/ow/dst")
    if direct is not None:      # over a file this client knows: glfs_h_rename's way
        assert direct.sent == sent
    assert await h.read_file("/ow/dst") == b"source"
    assert (await h.lookup("/ow/dst")).inode.ino == src_ino
    for p in brick_files(bricks, "ow"):
        assert sorted(x.name for x in p.iterdir()) == ["dst"]
        assert (p / "dst").read_bytes() == b"source"
        assert (p / "dst").stat().st_nlink == 2        # the name and its gfid link
    for b in bricks.bricks:                             # the old target is gone for good
        assert not any(f.is_file() and f.stat().st_size == 6 and
                       f.read_bytes() == b"target"
                       for f in (b.directory / ".glusterfs").rglob("*")
                       if not f.is_symlink())
    await h.write_file("/ow/moved", b"m")
    parent = (await h.lookup("/ow")).inode
    with second_client(bricks, gluster_base / "gfapi-rename-2.log") as other:
        await other.rename("/ow/moved", "/ow/elsewhere")
    with pytest.raises(OSError) as e:
        await h.top.rename(h.frame(), Loc(parent, b"moved"), Loc(parent, b"again"))
    assert e.value.errno == errno.ENOENT
    assert await h.read_file("/ow/elsewhere") == b"m"


async def test_release_closes_behind_and_the_data_is_there(h, bricks, gluster_base):
    """A release is answered before its close (FLUSH, replicate's post-op, RELEASE)
    runs; the data was written before, so another client reads it at once, and the
    close finishes by itself (``drain`` waits for it).  A file with a lock owner's
    descriptor is closed before the release is answered: its locks are gone from the
    bricks then, as another client taking the same lock shows."""
    gf = h.top
    behind = gf.dump()["releases-closed-behind"]
    await h.write_file("/behind", b"written before the close")
    assert gf.dump()["releases-closed-behind"] == behind + 1
    with second_client(bricks, gluster_base / "gfapi-behind-2.log") as other:
        assert await other.read_file("/behind") == b"written before the close"
        with trio.fail_after(10):
            await gf.drain()
        assert not gf._closing
        fd = await h.open("/behind", os.O_RDWR)
        await gf.lk(h.frame(lk_owner=77), fd, LK_SET, Lock(fcntl.F_WRLCK, 0, 10, 1, 77))
        theirs = await other.open("/behind", os.O_RDWR)
        with pytest.raises(OSError) as e:           # held on the bricks
            await other.top.lk(other.frame(lk_owner=88), theirs, LK_SET,
                               Lock(fcntl.F_WRLCK, 0, 10, 2, 88))
        assert e.value.errno == errno.EAGAIN
        await h.close(fd)                           # a flush of another owner, then
        assert gf.dump()["releases-closed-behind"] == behind + 1
        await other.top.lk(other.frame(lk_owner=88), theirs, LK_SET,
                           Lock(fcntl.F_WRLCK, 0, 10, 2, 88))
        await other.close(theirs)


async def test_a_close_drops_the_owners_locks_only(h, bricks, gluster_base):
    """Closing a descriptor drops the closing owner's locks on the file, whichever of
    its descriptors took them (POSIX), and never another owner's: libgfapi's FLUSH
    carries the worker thread's last lock owner unless the descriptor has its own."""
    gf = h.top
    await h.write_file("/owners", b"x" * 100)
    with second_client(bricks, gluster_base / "gfapi-owners-2.log") as other:
        theirs = await other.open("/owners", os.O_RDWR)

        async def held() -> bool:
            try:
                await other.top.lk(other.frame(lk_owner=88), theirs, LK_SET,
                                   Lock(fcntl.F_WRLCK, 0, 10, 2, 88))
            except OSError as e:
                assert e.errno == errno.EAGAIN
                return True
            await other.top.lk(other.frame(lk_owner=88), theirs, LK_SET,
                               Lock(fcntl.F_UNLCK, 0, 10, 2, 88))
            return False

        locked = await h.open("/owners", os.O_RDWR)
        await gf.lk(h.frame(lk_owner=55), locked, LK_SET, Lock(fcntl.F_WRLCK, 0, 10, 1, 55))
        for _ in range(3):                  # another process's descriptor of the file
            fd = await h.open("/owners", os.O_RDONLY)
            await h.close(fd, h.frame(lk_owner=66))
            with trio.fail_after(10):
                await gf.drain()
        assert await held()
        fd = await h.open("/owners", os.O_RDONLY)    # the owner's other descriptor
        await h.close(fd, h.frame(lk_owner=55))
        assert not await held()
        await h.close(locked)
        await other.close(theirs)


async def test_close_flushes_libgfapis_write_behind(h, bricks, gluster_base):
    """With performance/write-behind in libgfapi's graph (as in a glusterd-made
    volume's), the FLUSH of close(2) of a written file goes through that graph, which
    answers it once the writes landed: both bricks have the data when close(2)
    returns, its RELEASE still to come, and another client reads it.  Without write-
    behind (the test volume) writes are synchronous: no FLUSH is added."""
    assert not h.top._holds_writes
    volfile = gluster_base / "gv0-client-wb.vol"
    volfile.write_text(bricks.client_volfile.read_text() +
                       "\nvolume gv0-wb\n    type performance/write-behind\n"
                       "    option trickling-writes off\n"     # held until 128 KiB
                       "    subvolumes gv0\nend-volume\n")
    wb = Graph.from_text(gfapi_volfile(volfile, gluster_base / "gfapi-wb.log"))
    wb.init()
    wb.activate()
    try:
        w = Harness(wb)
        assert w.top._holds_writes
        data = bytes(range(256)) * 256
        fd = await w.create("/flushed")
        for off in range(0, len(data), 4096):
            await w.write(fd, data[off:off + 4096], off)
        await w.top.flush(w.frame(lk_owner=5), fd)
        for p in brick_files(bricks, "flushed"):
            assert p.read_bytes() == data
        assert await h.read_file("/flushed") == data
        reader = await w.open("/flushed", os.O_RDONLY)    # the kernel's writeback uses
        await w.write(fd, b"more", len(data))             # any writable descriptor:
        await w.top.flush(w.frame(lk_owner=6), reader)    # the file's writes count
        for p in brick_files(bricks, "flushed"):
            assert p.read_bytes() == data + b"more"
        await w.close(reader)
        await w.close(fd)
        with trio.fail_after(10):
            await wb.drain()
    finally:
        wb.fini()
