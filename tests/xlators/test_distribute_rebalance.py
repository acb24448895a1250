"""cluster/distribute: adding a child and rebalancing, also interrupted and run again."""
from __future__ import annotations

import os
import stat

import pytest

from xlators import Loc
from xlators.cluster.dht_base import STAGING
from xlators.cluster.dht_layout import LAYOUT_XATTR, Layout
from xlators.cluster.dht_linkfile import LINK_PREFIX
from xlators.cluster.dht_rebalance import rebalance
from xlators.ctl import main as xlfsctl
from xlators.testing import Harness, make_translator
from tests.xlators.test_distribute_stateful import Ops


def memory_kids(n: int, start: int = 0) -> list:
    return [make_translator("storage/memory", name=f"m{i}") for i in range(start, start + n)]


def over(kids: list) -> Harness:
    h = Harness(make_translator("cluster/distribute", kids, name="dist"))
    h.init()
    return h


async def populate(h: Harness) -> None:
    await h.mkdir("/a")
    await h.mkdir("/a/b")
    await h.mkdir("/empty")
    for i in range(60):
        await h.write_file(f"/a/f{i}", os.urandom(i * 97))
        await h.write_file(f"/a/b/g{i}", b"g%d" % i, mode=0o600 + (i % 8))
    for i in range(10):
        await h.symlink(f"f{i}", f"/a/s{i}")
        await h.write_file(f"/top{i}", b"top")
    e = await h.lookup("/a/f1")
    await h.top.link(h.frame(), e.inode, Loc((await h.lookup("/a/b")).inode, b"hard"))
    await h.top.setxattr(h.frame(), (await h.lookup("/a/f2")).inode, b"user.x", b"kept", 0)
    await h.rename("/a/f3", "/a/renamed3")              # leaves a link file behind


async def brick_view(h: Harness, i: int, path: str = "/") -> dict:
    """name -> 'dir' / 'link' / 'data' on child ``i``, recursively."""
    k = Harness(h.top.children[i])
    out = {}
    for e in await k.listdir(path):
        if e.name in (b".", b".."):
            continue
        p = f"{path.rstrip('/')}/{e.name.decode()}"
        attr = (await k.lookup(p)).attr
        if stat.S_ISDIR(attr.mode):
            out[p] = "dir"
            out.update(await brick_view(h, i, p))
        elif stat.S_ISLNK(attr.mode) and (await k.top.readlink(
                k.frame(), (await k.lookup(p)).inode)).startswith(LINK_PREFIX):
            out[p] = "link"
        else:
            out[p] = "data"
    return out


async def check_balanced(h: Harness, before: tuple) -> None:
    assert await Ops(h).tree() == before
    views = [await brick_view(h, i) for i in range(3)]
    assert not any(f"/{STAGING.decode()}" in v for v in views)
    layout = Layout.even(3)
    for i, v in enumerate(views):
        for p, kind in v.items():
            if kind == "data" and not p.endswith("/hard") and not p.endswith("/f1"):
                assert layout.child_for(p.rsplit("/", 1)[1].encode()) == i, p
            if kind == "link":                              # only for the hard-linked file
                assert p.endswith(("/hard", "/f1")), p
    assert sum(1 for p, k in views[2].items() if k == "data") > 30
    for path in ("/", "/a", "/a/b", "/empty"):
        for i in range(3):
            k = Harness(h.top.children[i])
            value = await k.top.getxattr(k.frame(), (await k.lookup(path)).inode, LAYOUT_XATTR)
            assert Layout.parse(value) == layout
    assert h.top.dump()["volume-layout-children"] == 3


async def test_a_new_child_gets_no_files_before_and_its_share_after_rebalance():
    old = memory_kids(2)
    h2 = over(old)
    await populate(h2)
    before = await Ops(h2).tree()
    h = over(old + memory_kids(1, 2))
    assert await Ops(h).tree() == before                    # still all there with 3 children
    await h.write_file("/a/new-before", b"n")
    assert not [p for p, k in (await brick_view(h, 2)).items() if k == "data"]
    before = await Ops(h).tree()
    stats = await rebalance(h.top)
    assert stats.files_moved > 30 and stats.skipped_hardlinked == 1
    await check_balanced(h, before)
    assert (await rebalance(h.top)).files_moved == 0        # a second run has nothing to do


@pytest.mark.parametrize("stop_after", [0, 7, 40])
async def test_rebalance_interrupted_and_run_again_loses_nothing(stop_after):
    old = memory_kids(2)
    h2 = over(old)
    await populate(h2)
    h = over(old + memory_kids(1, 2))
    before = await Ops(h).tree()
    with pytest.raises(KeyboardInterrupt):
        await rebalance(h.top, stop_after=stop_after)
    assert await Ops(h).tree() == before                    # half done: all still visible
    await rebalance(h.top)
    await check_balanced(h, before)


async def test_interrupted_between_copy_and_removal_the_file_is_listed_once():
    old = memory_kids(2)
    h2 = over(old)
    await populate(h2)
    h = over(old + memory_kids(1, 2))
    before = await Ops(h).tree()
    child, killed = None, []
    for c in h.top.children[:2]:
        real = c.unlink

        async def unlink_once(frame, loc, _real=real, _c=c):
            if loc.name == b"renamed3" or b"." in loc.name:   # a link file, a staged copy
                return await _real(frame, loc)
            for other in h.top.children[:2]:
                other.__dict__.pop("unlink", None)
            killed.append(loc.name.decode())
            raise KeyboardInterrupt("killed between rename and unlink")
        c.unlink = unlink_once
        child = c
    with pytest.raises(KeyboardInterrupt):
        await rebalance(h.top)
    assert child is not None and not any("unlink" in c.__dict__ for c in h.top.children)
    copies = [p for i in range(3) for p, k in (await brick_view(h, i)).items()
              if k == "data" and p.endswith("/" + killed[0])]
    assert len(copies) == 2 and copies[0] == copies[1]      # on two children now
    assert await Ops(h).tree() == before                    # the duplicate is not shown
    await rebalance(h.top)
    await check_balanced(h, before)


def test_xlfsctl_rebalance_over_posix_bricks(tmp_path, capsys):
    bricks = [tmp_path / f"b{i}" for i in range(3)]
    for b in bricks:
        b.mkdir()

    def volfile(n: int) -> str:
        text = "".join(f"volume b{i}\n    type storage/posix\n    option directory {bricks[i]}\n"
                       f"end-volume\n" for i in range(n))
        text += ("volume dist\n    type cluster/distribute\n    subvolumes "
                 + " ".join(f"b{i}" for i in range(n)) + "\nend-volume\n")
        path = tmp_path / f"dist{n}.vol"
        path.write_text(text)
        return str(path)
    v2, v3 = volfile(2), volfile(3)
    h = Harness.from_volfile(open(v2).read())

    async def fill():
        await h.mkdir("/d")
        for i in range(90):
            await h.write_file(f"/d/file{i}", b"%d" % i * 100)
    import trio
    trio.run(fill)
    h.fini()
    assert os.listdir(bricks[2]) == []
    assert xlfsctl(["rebalance", v3]) == 0
    out = capsys.readouterr().out
    assert "dist: 2 directories," in out and "files moved" in out
    on2 = os.listdir(bricks[2] / "d")
    assert 15 < len(on2) < 50
    names = set()
    for b in bricks:
        for n in os.listdir(b / "d"):
            assert not os.path.islink(b / "d" / n)
            assert (b / "d" / n).read_bytes() == n[4:].encode() * 100
            names.add(n)
    assert names == {f"file{i}" for i in range(90)}
    assert xlfsctl(["rebalance", v3, "--volume", "nope"]) == 1
    assert "no cluster/distribute volume named 'nope'" in capsys.readouterr().err


async def test_unlink_after_an_interrupted_move_removes_both_copies():
    old = memory_kids(2)
    h2 = over(old)
    await populate(h2)
    h = over(old + memory_kids(1, 2))
    killed = []
    for c in h.top.children[:2]:
        real = c.unlink

        async def unlink_once(frame, loc, _real=real):
            if loc.name == b"renamed3" or b"." in loc.name:
                return await _real(frame, loc)
            for other in h.top.children[:2]:
                other.__dict__.pop("unlink", None)
            killed.append(loc.name.decode())
            raise KeyboardInterrupt("killed between rename and unlink")
        c.unlink = unlink_once
    with pytest.raises(KeyboardInterrupt):
        await rebalance(h.top)
    path = next(p for p in (await Ops(h).tree())[0] if p.endswith("/" + killed[0]) or
                p == killed[0])
    await h.unlink(path)
    for i in range(3):
        assert all(not p.endswith("/" + killed[0]) for p in await brick_view(h, i))
    with pytest.raises(OSError):
        await h.lookup(path)
