"""cluster/distribute over storage/memory children, through xlators.testing (no mount)."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from xlators import Fd, FopError, Loc
from xlators.cluster.dht_layout import LAYOUT_XATTR, Layout, name_hash
from xlators.cluster.dht_linkfile import LINK_PREFIX
from xlators.cluster.distribute import Distribute
from xlators.core.events import Event
from xlators.testing import Harness, make_translator

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def dist(n: int = 3, options=None, child_options=None, kind: str = "cluster/distribute"):
    kids = [make_translator("storage/memory", (), (child_options or {}).get(i),
                            name=f"m{i}") for i in range(n)]
    top = make_translator(kind, kids, options or {}, name="dist")
    h = Harness(top)
    h.init()
    return h


def kid(h: Harness, i: int) -> Harness:
    """A harness straight on child ``i`` (to look at the brick behind distribute)."""
    return Harness(h.top.children[i])


async def exists(h: Harness, path: str) -> bool:
    try:
        await h.lookup(path)
        return True
    except FopError as exc:
        assert exc.errno == errno.ENOENT
        return False


async def kinds_on_children(h: Harness, path: str) -> list:
    """Per child: 'data', 'link', 'dir' or None for ``path``."""
    out = []
    for i in range(len(h.top.children)):
        k = kid(h, i)
        try:
            e = await k.lookup(path)
        except FopError:
            out.append(None)
            continue
        if stat.S_ISDIR(e.attr.mode):
            out.append("dir")
        elif stat.S_ISLNK(e.attr.mode) and (await k.top.readlink(k.frame(), e.inode)) \
                .startswith(LINK_PREFIX):
            out.append("link")
        else:
            out.append("data")
    return out


async def forget_all(h: Harness) -> None:
    """What the kernel does when it drops every inode but the root."""
    for inode in list(h.itable):
        if inode is not h.root and h.itable.forget(inode, inode.nlookup):
            await h.top.forget(h.frame(), inode)


async def fails(err: int, coro) -> None:
    with pytest.raises(OSError) as info:
        await coro
    assert info.value.errno == err, errno.errorcode.get(info.value.errno)


async def test_link_into_a_parent_that_is_no_directory_is_enotdir_first():
    # found by test_distribute_stateful: a directory linked into a symlink's name
    one = Harness(make_translator("storage/memory"))
    one.init()
    for h in (dist(3), one):
        await h.symlink("f1", "/b")
        await h.mkdir("/f1")
        e = await h.lookup("/f1")
        await fails(errno.ENOTDIR, h.top.link(h.frame(), e.inode, await h.parent_loc("/b/f1")))


# -- placement -----------------------------------------------------------------------
async def test_names_spread_evenly_over_the_children():
    h = dist(3)
    await h.mkdir("/d")
    n = 10_000
    for i in range(n):
        e = await h.top.mknod(h.frame(), Loc((await h.lookup("/d")).inode,
                                             b"file-%05d" % i), stat.S_IFREG | 0o644, 0, 0)
        assert e.attr.size == 0
    counts = []
    for i in range(3):
        names = [e.name for e in await kid(h, i).listdir("/d")]
        counts.append(len(names) - 2)
    assert sum(counts) == n
    for c in counts:
        assert abs(c - n / 3) <= 0.1 * n / 3, counts


async def test_a_file_lives_on_its_hashed_child_and_directories_everywhere():
    h = dist(3)
    await h.mkdir("/d")
    await h.write_file("/d/f", b"hello")
    layout = Layout.even(3)
    where = await kinds_on_children(h, "/d/f")
    assert where.count("data") == 1 and where.index("data") == layout.child_for(b"f")
    assert await kinds_on_children(h, "/d") == ["dir"] * 3
    assert await h.read_file("/d/f") == b"hello"


async def test_inode_numbers_are_distinct_and_stable():
    h = dist(3)
    inos = set()
    for i in range(60):
        await h.write_file(f"/f{i}", b"x")
        inos.add((await h.stat(f"/f{i}")).ino)
    assert len(inos) == 60
    listed = {e.name: e.ino for e in await h.listdir("/")}
    for i in range(60):
        assert listed[b"f%d" % i] == (await h.stat(f"/f{i}")).ino
    root = await h.stat("/")
    assert root.ino == h.root.ino == listed[b"."]


async def test_alias_cluster_dht():
    h = dist(2, kind="cluster/dht")
    await h.write_file("/x", b"1")
    assert await h.read_file("/x") == b"1"
    assert isinstance(h.top, Distribute)


# -- namespace ----------------------------------------------------------------------
async def test_create_mkdir_symlink_link_unlink_rmdir():
    h = dist(3)
    await h.mkdir("/a")
    await h.mkdir("/a/b")
    await h.write_file("/a/b/f", b"data")
    await h.symlink("f", "/a/b/s")
    assert await h.top.readlink(h.frame(), (await h.lookup("/a/b/s")).inode) == b"f"
    f = await h.lookup("/a/b/f")
    e = await h.top.link(h.frame(), f.inode, Loc((await h.lookup("/a")).inode, b"hard"))
    assert e.attr.ino == f.attr.ino and e.attr.nlink == 2
    assert (await h.stat("/a/hard")).ino == f.attr.ino
    assert await h.read_file("/a/hard") == b"data"
    await fails(errno.EEXIST, h.mkdir("/a/b"))
    await fails(errno.ENOTEMPTY, h.rmdir("/a/b"))
    assert await kinds_on_children(h, "/a/b") == ["dir"] * 3
    await h.unlink("/a/b/f")
    await h.unlink("/a/b/s")
    await fails(errno.ENOENT, h.unlink("/a/b/f"))
    await h.rmdir("/a/b")
    assert await kinds_on_children(h, "/a/b") == [None] * 3
    await h.unlink("/a/hard")
    for i in range(3):
        assert [e.name for e in await kid(h, i).listdir("/a")] == [b".", b".."]


async def test_rmdir_of_a_directory_with_a_file_on_one_child_keeps_every_copy():
    h = dist(3)
    await h.mkdir("/d")
    await h.write_file("/d/only", b"1")
    await fails(errno.ENOTEMPTY, h.rmdir("/d"))
    assert await kinds_on_children(h, "/d") == ["dir"] * 3
    assert await h.read_file("/d/only") == b"1"


async def test_rmdir_clears_a_copy_that_holds_only_link_files():
    """A link file left on a copy (its data file gone from the brick behind distribute)
    does not keep the directory: rmdir removes it, then every copy."""
    h = dist(3)
    await h.mkdir("/d")
    a, b = _names_on_different_children()
    await h.write_file(f"/d/{a}", b"1")
    await h.rename(f"/d/{a}", f"/d/{b}")
    where = await kinds_on_children(h, f"/d/{b}")
    assert where.count("data") == 1 and where.count("link") == 1
    await kid(h, where.index("data")).unlink(f"/d/{b}")
    await h.rmdir("/d")
    assert await kinds_on_children(h, "/d") == [None] * 3


async def test_directory_attributes_go_to_every_copy():
    h = dist(3)
    await h.mkdir("/d", 0o700)
    await h.setattr("/d", mode=0o751, uid=12, gid=34)
    for i in range(3):
        a = await kid(h, i).stat("/d")
        assert (a.mode & 0o7777, a.uid, a.gid) == (0o751, 12, 34)
    d = await h.lookup("/d")
    await h.top.setxattr(h.frame(), d.inode, b"user.k", b"v", 0)
    for i in range(3):
        k = kid(h, i)
        assert await k.top.getxattr(k.frame(), (await k.lookup("/d")).inode, b"user.k") == b"v"


async def test_own_xattrs_are_hidden_and_refused():
    h = dist(2)
    await h.mkdir("/d")
    d = await h.lookup("/d")
    await fails(errno.EPERM, h.top.setxattr(h.frame(), d.inode, LAYOUT_XATTR, b"x", 0))
    await fails(errno.EPERM, h.top.removexattr(h.frame(), h.root, b"trusted.xlfs.dht.volume"))
    assert b"trusted.xlfs.dht.volume" not in await h.top.listxattr(h.frame(), h.root)
    assert await h.top.getxattr(h.frame(), h.root, b"trusted.xlfs.dht.volume") == \
        b"children=2"
    await fails(errno.EINVAL, h.symlink(LINK_PREFIX + b"0", "/evil"))


async def test_a_missing_directory_copy_is_healed_on_lookup():
    h = dist(3)
    await h.mkdir("/d", 0o750)
    await h.setattr("/d", uid=7, gid=8)
    k2 = kid(h, 2)
    await k2.rmdir("/d")
    await forget_all(h)                            # the kernel forgot it
    e = await h.lookup("/d")
    assert stat.S_ISDIR(e.attr.mode)
    a = await k2.stat("/d")
    assert (a.mode & 0o7777, a.uid, a.gid) == (0o750, 7, 8)
    assert h.top.stats["directory-heals"] == 1


# -- rename ---------------------------------------------------------------------------
def _names_on_different_children(n: int = 3):
    layout = Layout.even(n)
    a = b"src"
    b = next(b"dst%d" % i for i in range(100) if layout.child_for(b"dst%d" % i) !=
             layout.child_for(a))
    return a.decode(), b.decode()


async def test_rename_to_another_child_keeps_data_inode_and_leaves_a_link_file():
    h = dist(3)
    a, b = _names_on_different_children()
    await h.write_file(f"/{a}", b"content" * 100)
    ino = (await h.stat(f"/{a}")).ino
    where = await kinds_on_children(h, f"/{a}")
    await h.rename(f"/{a}", f"/{b}")
    assert not await exists(h, f"/{a}")
    assert await h.read_file(f"/{b}") == b"content" * 100
    assert (await h.stat(f"/{b}")).ino == ino
    after = await kinds_on_children(h, f"/{b}")
    assert after.index("data") == where.index("data")        # the data did not move
    assert after.index("link") == Layout.even(3).child_for(b.encode())
    assert [e.name for e in await h.listdir("/")] == [b".", b"..", b.encode()]
    # and back: the link file goes away
    await h.rename(f"/{b}", f"/{a}")
    assert await kinds_on_children(h, f"/{a}") == where
    assert await kinds_on_children(h, f"/{b}") == [None] * 3
    assert (await h.stat(f"/{a}")).ino == ino


async def test_rename_over_a_file_on_another_child_replaces_it():
    h = dist(3)
    a, b = _names_on_different_children()
    await h.write_file(f"/{a}", b"A")
    await h.write_file(f"/{b}", b"B")
    ino = (await h.stat(f"/{a}")).ino
    await h.rename(f"/{a}", f"/{b}")
    assert await h.read_file(f"/{b}") == b"A" and (await h.stat(f"/{b}")).ino == ino
    assert sorted(map(str, await kinds_on_children(h, f"/{b}"))) == ["None", "data", "link"]
    assert [e.name for e in await h.listdir("/")] == [b".", b"..", b.encode()]
    await fails(errno.ENOENT, h.rename(f"/{a}", "/x"))


async def test_rename_flags_and_exchange():
    h = dist(3)
    a, b = _names_on_different_children()
    await h.write_file(f"/{a}", b"AAA")
    await h.write_file(f"/{b}", b"B")
    ia, ib = (await h.stat(f"/{a}")).ino, (await h.stat(f"/{b}")).ino
    await fails(errno.EEXIST, h.rename(f"/{a}", f"/{b}", RENAME_NOREPLACE))
    await h.rename(f"/{a}", f"/{b}", RENAME_EXCHANGE)
    assert await h.read_file(f"/{a}") == b"B" and await h.read_file(f"/{b}") == b"AAA"
    assert (await h.stat(f"/{a}")).ino == ib and (await h.stat(f"/{b}")).ino == ia
    await h.mkdir("/dir")
    await h.write_file("/dir/inner", b"i")
    await h.rename("/dir", f"/{a}", RENAME_EXCHANGE)           # a directory with a file
    assert await h.read_file(f"/{a}/inner") == b"i" and await h.read_file("/dir") == b"B"
    assert await kinds_on_children(h, f"/{a}") == ["dir"] * 3
    names = sorted(e.name for e in await h.listdir("/"))
    assert names == sorted([b".", b"..", a.encode(), b.encode(), b"dir"])


async def test_rename_directories():
    h = dist(3)
    await h.mkdir("/x")
    await h.write_file("/x/inside", b"1")
    await h.mkdir("/y")
    await h.mkdir("/full")
    for i in range(6):
        await h.write_file(f"/full/f{i}", b"2")
    await fails(errno.ENOTEMPTY, h.rename("/x", "/full"))
    await h.rename("/x", "/y")
    assert await h.read_file("/y/inside") == b"1"
    assert await kinds_on_children(h, "/x") == [None] * 3
    assert await kinds_on_children(h, "/y") == ["dir"] * 3
    await fails(errno.EINVAL, h.rename("/full", "/full/sub"))
    await h.write_file("/file", b"3")
    await fails(errno.ENOTDIR, h.rename("/y", "/file"))
    await fails(errno.EISDIR, h.rename("/file", "/y"))


# -- lookup-unhashed ------------------------------------------------------------------
async def _place_on_wrong_child(h: Harness, name: bytes) -> int:
    """Make ``/name`` directly on a child it does not hash to; returns that child."""
    wrong = (Layout.even(len(h.top.children)).child_for(name) + 1) % len(h.top.children)
    k = kid(h, wrong)
    await k.write_file(b"/" + name, b"misplaced")
    return wrong


@pytest.mark.parametrize("mode,found", [("on", True), ("auto", False), ("off", False)])
async def test_lookup_unhashed_in_a_committed_directory(mode, found):
    h = dist(3, {"lookup-unhashed": mode})
    await _place_on_wrong_child(h, b"stray")
    assert await exists(h, "/stray") is found
    if found:
        assert "link" in await kinds_on_children(h, "/stray")
        assert await h.read_file("/stray") == b"misplaced"


async def test_lookup_unhashed_auto_looks_everywhere_in_an_uncommitted_directory():
    h = dist(3)
    wrong = await _place_on_wrong_child(h, b"stray")
    uncommitted = Layout.even(3, committed=False).format()
    await h.top.children[0].setxattr(h.frame(), h.top.tables[0].root, LAYOUT_XATTR,
                                     uncommitted, 0)
    h.top._root_dn.layout = None
    assert await h.read_file("/stray") == b"misplaced"
    kinds = await kinds_on_children(h, "/stray")
    assert kinds[wrong] == "data" and kinds.count("link") == 1
    assert h.top.stats["lookups-unhashed-found"] == 1
    assert await h.read_file("/stray") == b"misplaced"           # via the link file now
    assert h.top.stats["lookups-unhashed-found"] == 1
    assert [e.name for e in await h.listdir("/")].count(b"stray") == 1


async def test_a_dangling_link_file_is_not_listed_and_not_found():
    h = dist(3)
    await h.write_file("/f", b"1")
    h0 = Layout.even(3).child_for(b"g")
    k = kid(h, h0)
    await k.symlink(LINK_PREFIX + b"%d" % ((h0 + 1) % 3), "/g")
    assert not await exists(h, "/g")
    assert [e.name for e in await h.listdir("/")] == [b".", b"..", b"f"]
    assert [e.name for e in await h.listdir("/", plus=True)] == [b".", b"..", b"f"]


# -- readdir -------------------------------------------------------------------------
async def _read_from(h: Harness, fd: Fd, offset: int, plus: bool = False) -> list:
    out = []
    while True:
        fop = h.top.readdirp if plus else h.top.readdir
        batch = await fop(h.frame(), fd, offset, 4096)
        if not batch:
            return out
        out.extend(batch)
        offset = batch[-1].off


@pytest.mark.parametrize("plus", [False, True])
async def test_readdir_of_10000_entries_lists_each_once_also_when_resumed(plus):
    h = dist(3)
    await h.mkdir("/d")
    d = await h.lookup("/d")
    names = set()
    for i in range(10_000):
        name = b"e%05d" % i
        names.add(name)
        if i % 500 == 0:
            await h.top.mkdir(h.frame(), Loc(d.inode, name), stat.S_IFDIR | 0o755, 0)
        else:
            await h.top.mknod(h.frame(), Loc(d.inode, name), stat.S_IFREG | 0o644, 0, 0)
    # a few renamed across children (link files) must not be listed twice
    a, b = _names_on_different_children()
    await h.write_file(f"/d/{a}", b"x")
    await h.rename(f"/d/{a}", f"/d/{b}")
    names.add(b.encode())
    fd = Fd(d.inode, os.O_RDONLY, is_dir=True)
    await h.top.opendir(h.frame(), d.inode, fd)
    full = await _read_from(h, fd, 0, plus)
    listed = [e.name for e in full if e.name not in (b".", b"..")]
    assert len(listed) == len(names) and set(listed) == names
    # resumed at sampled offsets, on the same fd and on a fresh one
    fd2 = Fd(d.inode, os.O_RDONLY, is_dir=True)
    await h.top.opendir(h.frame(), d.inode, fd2)
    for k in list(range(0, len(full), 997)) + [len(full) - 1]:
        for f in (fd, fd2):
            rest = await _read_from(h, f, full[k].off, plus)
            assert [e.name for e in rest] == [e.name for e in full[k + 1:]], k
    for f in (fd, fd2):
        await h.top.releasedir(h.frame(), f)


async def test_readdirp_entries_carry_the_inodes_lookup_gives():
    h = dist(3)
    for i in range(20):
        await h.write_file(f"/f{i}", b"x" * i)
    for e in await h.listdir("/", plus=True):
        if e.name in (b".", b".."):
            continue
        looked = await h.lookup(b"/" + e.name)
        assert e.entry.inode is looked.inode and e.entry.attr.ino == e.ino
        assert e.entry.attr.size == int(e.name[1:])


# -- statfs and min-free-disk ---------------------------------------------------------
async def test_statfs_adds_the_children_up():
    h = dist(3, child_options={i: {"size": f"{i + 1}MB", "inodes": "1000"}
                               for i in range(3)})
    sv = await h.top.statfs(h.frame(), h.root)
    parts = [await c.statfs(h.frame(), t.root)
             for c, t in zip(h.top.children, h.top.tables)]
    assert sv.blocks == sum(p.blocks for p in parts) == 6 * 256
    assert sv.files == 3000 and sv.ffree == sum(p.ffree for p in parts)


async def test_min_free_disk_steers_new_files_away_from_a_full_child():
    h = dist(2, {"min-free-disk": "50%", "min-free-disk-interval": "0"},
             {0: {"size": "1MB"}, 1: {"size": "100MB"}})
    big = next(b"big%d" % i for i in range(100) if Layout.even(2).child_for(b"big%d" % i) == 0)
    await h.write_file(b"/" + big, b"x" * (600 << 10))             # child 0 is now full
    names = [b"n%d" % i for i in range(40)]
    for n in names:
        await h.write_file(b"/" + n, n)
    hashed_to_0 = [n for n in names if Layout.even(2).child_for(n) == 0]
    assert hashed_to_0
    for n in hashed_to_0:
        assert await kinds_on_children(h, "/" + n.decode()) == ["link", "data"]
        assert await h.read_file(b"/" + n) == n
    assert h.top.stats["min-free-disk-diversions"] == len(hashed_to_0)
    listed = [e.name for e in await h.listdir("/")]
    assert sorted(listed) == sorted([b".", b"..", big] + names)
    for n in hashed_to_0:
        await h.unlink(b"/" + n)
        assert await kinds_on_children(h, "/" + n.decode()) == [None, None]


# -- events and dump -------------------------------------------------------------------
async def test_child_up_is_reported_once_every_child_answered_and_dump_says_who():
    kids = [make_translator("storage/memory", name=f"m{i}") for i in range(3)]
    top = make_translator("cluster/distribute", kids, name="dist")
    seen = []

    class Parent:
        def notify(self, event, data, source):
            seen.append(event)
    top.parents.append(Parent())
    h = Harness(top)
    h.init()
    assert seen == [Event.CHILD_UP]
    top.notify(Event.CHILD_DOWN, None, kids[1])
    assert seen == [Event.CHILD_UP]
    dump = top.dump()
    assert dump["children-up"] == "m0,m2" and dump["children-down"] == "m1"
    await h.write_file("/f", b"1")
    assert "root-layout" in top.dump() and top.dump()["layouts-uncommitted"] == 0


async def test_forget_gives_back_the_child_inodes():
    h = dist(3)
    for i in range(30):
        await h.write_file(f"/f{i}", b"x")
    await h.listdir("/", plus=True)
    await forget_all(h)
    assert len(h.itable) == 1
    for t in h.top.tables:
        assert len(t) == 1, list(t)


def test_name_hash_and_layout_format_are_pinned():
    # both are on-disk formats: a change would misplace every existing file
    assert name_hash(b"abc") == 0xD0F18B31
    assert Layout.even(3).format() == (b"xlfs-dht-layout 1 commit=1 0-1431655764,"
                                       b"1431655765-2863311529,2863311530-4294967295")
    assert Layout.parse(Layout.even(5, 7, committed=False).format()) == \
        Layout.even(5, 7, committed=False)
    for bad in (b"", b"xlfs-dht-layout 1 commit=1 0-5", b"junk 1 commit=1 -",
                b"xlfs-dht-layout 1 commit=1 0-4294967295,0-4294967295"):
        with pytest.raises(ValueError):
            Layout.parse(bad)


async def test_directory_times_are_the_latest_of_every_copy():
    h = dist(3)
    await h.mkdir("/d")
    before = await h.stat("/d")
    layout = Layout.even(3)
    name = next(b"n%d" % i for i in range(100) if layout.child_for(b"n%d" % i) != 0)
    await h.write_file(b"/d/" + name, b"x")            # changes a copy other than child 0's
    after = await h.stat("/d")
    assert after.mtime_ns > before.mtime_ns and after.ctime_ns > before.ctime_ns
    assert (await h.lookup("/d")).attr.mtime_ns == after.mtime_ns


async def test_over_storage_posix_children(tmp_path):
    """posix raises plain OSErrors (ENODATA, ENOENT): distribute must read them as fop
    errors too."""
    kids = []
    for i in range(3):
        (tmp_path / f"b{i}").mkdir()
        kids.append(make_translator("storage/posix", (), {"directory": str(tmp_path / f"b{i}")},
                                    name=f"b{i}"))
    h = Harness(make_translator("cluster/distribute", kids, name="dist"))
    h.init()
    try:
        a, b = _names_on_different_children()
        await h.mkdir("/d")
        await h.write_file(f"/d/{a}", b"posix")
        ino = (await h.stat(f"/d/{a}")).ino
        await h.rename(f"/d/{a}", f"/d/{b}")
        assert await h.read_file(f"/d/{b}") == b"posix" and (await h.stat(f"/d/{b}")).ino == ino
        assert not await exists(h, f"/d/{a}")
        assert [e.name for e in await h.listdir("/d", plus=True)] == [b".", b"..", b.encode()]
        assert sorted(os.listdir(tmp_path / "b0")) == ["d"]
        await h.unlink(f"/d/{b}")
        await h.rmdir("/d")
        assert all(os.listdir(tmp_path / f"b{i}") == [] for i in range(3))
    finally:
        h.fini()


async def test_a_name_under_a_non_directory_is_enotdir():
    h = dist(3)
    await h.symlink("target", "/s")
    await h.write_file("/f", b"1")
    for parent in ("/s", "/f"):
        e = await h.lookup(parent)
        await fails(errno.ENOTDIR, h.top.mkdir(h.frame(), Loc(e.inode, b"x"), 0o40755, 0))
        await fails(errno.ENOTDIR, h.top.lookup(h.frame(), Loc(e.inode, b"x")))


def test_a_cluster_translator_below_keeps_its_children_s_own_tables():
    """A cluster translator below (here another distribute, standing in for replicate)
    has given its children tables of their own already: the one above must not merge
    them back into one, and must give the cluster child a table of its own."""
    from xlators.core.graph import Graph
    text = "".join(f"volume m{i}\n type storage/memory\n option size 1MB\nend-volume\n"
                   for i in range(4))
    text += ("volume in0\n type cluster/distribute\n subvolumes m0 m1\nend-volume\n"
             "volume in1\n type cluster/distribute\n subvolumes m2 m3\nend-volume\n"
             "volume out\n type cluster/distribute\n subvolumes in0 in1\nend-volume\n")
    g = Graph.from_text(text)
    tables = [g[n].itable for n in ("m0", "m1", "m2", "m3", "in0", "in1", "out")]
    assert len({id(t) for t in tables}) == 7
    assert tables[-1] is g.itable
    assert g["out"].tables == [g["in0"].itable, g["in1"].itable]
    assert g["in0"].tables == [g["m0"].itable, g["m1"].itable]
