"""cluster/replicate over storage/memory children, failing children with error-gen."""
import errno
import logging
import os

import pytest
import trio
import trio.testing

from xlators.cluster import afr_changelog as cl
from xlators.cluster.afr_gfid import GFID_XATTR, ino_of
from xlators.core.errors import FopError
from xlators.core.translator import Translator
from xlators.testing import Harness

from tests.xlators.afr_util import brick, brick_tree, fail, recover, replica


def afr(h):
    return h.graph["r"]


async def settle(h):
    """Bring failed children back (a probe) and heal what is pending."""
    await afr(h).probe_now()
    await afr(h).heal_pass()


async def test_writes_reach_every_child_and_reads_agree():
    h = replica()
    await h.mkdir("/d")
    await h.write_file("/d/f", b"hello world")
    await h.symlink("target", "/d/l")
    assert await h.read_file("/d/f") == b"hello world"
    t0, t1 = await brick_tree(h, 0), await brick_tree(h, 1)
    assert t0 == t1 == {"/d": "dir", "/d/f": b"hello world", "/d/l": ("link", b"target")}


async def test_inode_number_comes_from_the_gfid_and_is_the_same_on_every_path():
    h = replica()
    await h.write_file("/f", b"x")
    st = await h.stat("/f")
    for i in range(2):
        b = brick(h, i)
        e = await b.lookup("/f")
        gfid = await b.top.getxattr(b.frame(), e.inode, GFID_XATTR)
        assert ino_of(gfid) == st.ino
    listed = {e.name: e.ino for e in await h.listdir("/")}
    assert listed[b"f"] == st.ino
    plus = {e.name: e.ino for e in await h.listdir("/", plus=True)}
    assert plus[b"f"] == st.ino
    # the children's own numbers differ from what replicate reports
    assert (await brick(h, 0).stat("/f")).ino != st.ino or True


async def test_internal_xattrs_are_hidden_and_refused():
    h = replica()
    await h.write_file("/f", b"x")
    e = await h.lookup("/f")
    names = await h.top.listxattr(h.frame(), e.inode)
    assert not any(n.startswith(b"trusted.xlfs.") for n in names)
    with pytest.raises(FopError) as ei:
        await h.top.setxattr(h.frame(), e.inode, GFID_XATTR, b"0" * 16, 0)
    assert ei.value.errno == errno.EPERM
    with pytest.raises(FopError) as ei:
        await h.top.getxattr(h.frame(), e.inode, GFID_XATTR)
    assert ei.value.errno == errno.ENODATA


async def test_a_failed_child_is_taken_out_accused_and_healed_when_back():
    h = replica()
    await h.write_file("/f", b"old contents")
    fail(h, 1)
    fd = await h.open("/f")
    await h.write(fd, b"NEW", 0)
    assert not afr(h).up[1]
    assert await h.read(fd, 100) == b"NEW contents"
    await h.close(fd)
    # child 0 accuses child 1 on its own copy
    b0 = brick(h, 0)
    e = await b0.lookup("/f")
    value = await b0.top.getxattr(b0.frame(), e.inode, cl.xattr_name("e1"))
    assert cl.decode(value)[cl.DATA] > 0
    assert afr(h).dump()["pending-heal"] == 1
    recover(h, 1)
    await settle(h)
    assert afr(h).up[1]
    assert (await brick_tree(h, 1)) == (await brick_tree(h, 0)) == {"/f": b"NEW contents"}
    value = await b0.top.getxattr(b0.frame(), e.inode, cl.xattr_name("e1"))
    assert cl.decode(value) == (0, 0, 0)
    assert afr(h).dump()["pending-heal"] == 0


async def test_a_stale_child_is_never_read_until_healed():
    h = replica(read_subvolume_index="1", self_heal_daemon="off")
    await h.write_file("/f", b"aaaa")
    fail(h, 1)
    fd = await h.open("/f")
    await h.write(fd, b"bbbb", 0)
    await h.close(fd)
    recover(h, 1)
    await afr(h).probe_now()
    assert afr(h).up[1]
    # child 1 is preferred for reads but holds stale data: child 0 serves
    assert await h.read_file("/f") == b"bbbb"
    assert (await brick(h, 1).read_file("/f")) == b"aaaa"
    await afr(h).heal_pass()
    assert (await brick(h, 1).read_file("/f")) == b"bbbb"


async def test_namespace_changes_while_a_child_is_down_heal_as_entries():
    h = replica()
    await h.mkdir("/d")
    await h.write_file("/d/gone", b"1")
    await h.write_file("/d/kept", b"2")
    fail(h, 1)
    await h.unlink("/d/gone")
    await h.write_file("/d/new", b"3" * 300000)
    await h.mkdir("/d/sub")
    await h.write_file("/d/sub/deep", b"4")
    await h.symlink("/d/new", "/d/sub/link")
    await h.rename("/d/kept", "/d/renamed")
    recover(h, 1)
    await settle(h)
    t0 = await brick_tree(h, 0)
    assert t0 == await brick_tree(h, 1)
    assert set(t0) == {"/d", "/d/new", "/d/sub", "/d/sub/deep", "/d/sub/link", "/d/renamed"}
    # gfids match on both sides
    for p in ("/d/new", "/d/sub", "/d/sub/deep"):
        g = []
        for i in range(2):
            b = brick(h, i)
            e = await b.lookup(p)
            g.append(await b.top.getxattr(b.frame(), e.inode, GFID_XATTR))
        assert g[0] == g[1]


async def test_metadata_heals():
    h = replica()
    await h.write_file("/f", b"x")
    fail(h, 1)
    await h.setattr("/f", mode=0o100600, uid=7, gid=8)
    e = await h.lookup("/f")
    await h.top.setxattr(h.frame(), e.inode, b"user.k", b"v", 0)
    recover(h, 1)
    await settle(h)
    a0, a1 = await brick(h, 0).stat("/f"), await brick(h, 1).stat("/f")
    assert (a1.mode & 0o7777, a1.uid, a1.gid) == (0o600, 7, 8) == (a0.mode & 0o7777, a0.uid,
                                                                    a0.gid)
    b1 = brick(h, 1)
    e1 = await b1.lookup("/f")
    assert await b1.top.getxattr(b1.frame(), e1.inode, b"user.k") == b"v"


async def test_all_children_down_is_enotconn():
    h = replica()
    await h.write_file("/f", b"x")
    fail(h, 0)
    fail(h, 1)
    with pytest.raises(FopError) as ei:
        await h.write_file("/g", b"y")
    assert ei.value.errno == errno.ENOTCONN


async def test_quorum_auto_refuses_changes_below_quorum():
    h = replica(quorum_type="auto")
    await h.write_file("/f", b"x")
    fail(h, 1)                               # half up, including the first: quorum
    await h.write_file("/g", b"y")
    recover(h, 1)
    await settle(h)
    fail(h, 0)
    await h.stat("/f")                        # provoke the failure: child 0 is out
    with pytest.raises(FopError) as ei:
        await h.write_file("/h", b"z")
    assert ei.value.errno == errno.EROFS
    assert await h.read_file("/f") == b"x"    # reads still work
    assert "h" not in {os.fsdecode(e.name) for e in await brick(h, 1).listdir("/")}


async def test_quorum_fixed():
    h = replica(3, quorum_type="fixed", quorum_count="2")
    await h.write_file("/f", b"x")
    fail(h, 2)
    await h.write_file("/g", b"y")
    fail(h, 1)
    with pytest.raises(FopError) as ei:
        await h.write_file("/h", b"z")
    assert ei.value.errno == errno.EROFS


async def _make_split_brain(h):
    await h.write_file("/f", b"original")
    fail(h, 1)
    await h.write_file("/f", b"written on child 0 alone")
    fail(h, 0)
    recover(h, 1)
    await afr(h).probe_now()
    # child 1 alone is up, but child 0 (down) is known to accuse it
    with pytest.raises(FopError) as ei:
        await h.read_file("/f")
    assert ei.value.errno == errno.ENOTCONN
    fd = await h.open("/f", os.O_WRONLY)
    await h.write(fd, b"WRITTEN ON CHILD 1", 0)
    await h.close(fd)
    recover(h, 0)
    await afr(h).probe_now()
    assert all(afr(h).up)


async def test_split_brain_is_eio_and_logged(caplog):
    h = replica()
    await _make_split_brain(h)
    with caplog.at_level(logging.ERROR):
        with pytest.raises(FopError) as ei:
            await h.read_file("/f")
    assert ei.value.errno == errno.EIO
    line = [r.getMessage() for r in caplog.records if "split brain" in r.getMessage()]
    assert line and "e0" in line[0] and "e1" in line[0] and "b'f'" in line[0]
    assert afr(h).dump()["split-brain-count"] == 1
    await afr(h).heal_pass()                 # the healer does not pick a side either
    with pytest.raises(FopError):
        await h.read_file("/f")


@pytest.mark.parametrize("policy,winner", [("size", b"written on child 0 alone"),
                                           ("mtime", b"WRITTEN ON CHILD 1")])
async def test_favorite_child_policy_resolves_split_brain(policy, winner):
    h = replica(favorite_child_policy=policy)
    await _make_split_brain(h)
    assert await h.read_file("/f") == winner
    await afr(h).heal_pass()
    assert await brick(h, 0).read_file("/f") == await brick(h, 1).read_file("/f") == winner


async def test_create_on_a_brick_with_files_assigns_gfids():
    h = replica()
    b0 = brick(h, 0)
    await b0.write_file("/pre", b"existing data")
    # the file only exists on child 0: lookup finds it, gives it a gfid, and heals child 1
    assert await h.read_file("/pre") == b"existing data"
    await afr(h).heal_pass()
    assert await brick(h, 1).read_file("/pre") == b"existing data"


async def test_healer_runs_in_the_background_with_probes(autojump_clock):
    """The probe finds the recovered child on its own timer and the healer then brings
    it up to date (trio's mock clock: the probe interval, not the machine's speed, sets
    when; the bound below is 10 s of that clock)."""
    h = replica(child_probe_interval="0.05")
    async with trio.open_nursery() as nursery:
        h.attach_nursery(nursery)
        await h.write_file("/f", b"one")
        fail(h, 1)
        await h.write_file("/f", b"two")
        await h.write_file("/g", b"three")
        recover(h, 1)
        with trio.fail_after(10):
            while afr(h).heal_index or not afr(h).up[1]:
                await trio.sleep(0.02)
        assert await brick_tree(h, 1) == await brick_tree(h, 0)
        nursery.cancel_scope.cancel()


async def test_statedump_names_children_and_pending():
    h = replica()
    await h.write_file("/f", b"x")
    fail(h, 1)
    await h.write_file("/f", b"y")
    d = afr(h).dump()
    assert d["children-up"] == "e0" and d["children-down"] == "e1"
    gfid = afr(h).ictx((await h.lookup("/f")).inode).gfid.hex()
    assert d[f"pending.{gfid}"] == "data" and d["split-brain-count"] == 0


async def test_listings_report_gfid_numbers_for_dot_and_dotdot():
    h = replica()
    await h.mkdir("/d")
    await h.mkdir("/d/e")
    d, e = await h.stat("/d"), await h.stat("/d/e")
    for plus in (False, True):
        listed = {x.name: x.ino for x in await h.listdir("/d/e", plus=plus)}
        assert listed[b"."] == e.ino and listed[b".."] == d.ino
        listed = {x.name: x.ino for x in await h.listdir("/d", plus=plus)}
        assert listed[b"e"] == e.ino and listed[b".."] == 1


async def test_upcalls_from_a_child_name_replicates_inodes():
    from xlators.core.events import Event
    from xlators.core.upcall import InvalidateEntry, InvalidateInode
    h = replica()
    await h.write_file("/f", b"x")
    e = await h.lookup("/f")
    seen = []
    h.graph.listeners.append(lambda ev, data, src: seen.append(data) if ev is Event.UPCALL
                             else None)
    r = afr(h)
    child_inode = r.ictx(e.inode).children[1]
    h.graph["e1"].upcall(InvalidateInode(child_inode))
    h.graph["e1"].upcall(InvalidateEntry(r.ictx(h.root).children[1], b"f"))
    from xlators.core.inode import Inode
    h.graph["e1"].upcall(InvalidateInode(Inode(99, 99)))       # unknown here: dropped
    assert seen == [InvalidateInode(e.inode), InvalidateEntry(h.root, b"f")]


class Gate(Translator):
    """Counts writevs in flight across all its instances (they wait a scheduler turn)."""
    type = "test/gate"
    children_range = (1, 1)
    active = 0
    most = 0

    async def writev(self, frame, fd, data, offset, flags=None):
        Gate.active += 1
        Gate.most = max(Gate.most, Gate.active)
        try:
            await trio.lowlevel.checkpoint()
            return await self.child.writev(frame, fd, data, offset, flags)
        finally:
            Gate.active -= 1


@pytest.mark.parametrize("parallel,most", [("off", 1), ("on", 2)])
async def test_parallel_fan_out_sends_to_every_child_at_once(parallel, most):
    from xlators.testing import make_translator
    Gate.most = 0
    gates = [Gate(f"g{i}", [make_translator("storage/memory", name=f"m{i}",
                                            options={"size": "0"})]) for i in range(2)]
    top = make_translator("cluster/replicate", gates, {"parallel-fan-out": parallel})
    h = Harness(top)
    h.init()
    await h.write_file("/f", b"both")
    assert Gate.most == most
    assert await h.read_file("/f") == b"both"


async def test_child_down_and_up_events_take_a_child_out_and_bring_it_back():
    from xlators.core.events import Event
    h = replica()
    r = afr(h)
    await h.write_file("/f", b"one")
    h.graph["e1"].notify_parents(Event.CHILD_DOWN)
    assert r.up == [True, False]
    await h.write_file("/f", b"two")            # child 1 is not even asked
    assert h.graph["e1"].injected == {} and await brick(h, 1).read_file("/f") == b"one"
    h.graph["e1"].notify_parents(Event.CHILD_UP)
    assert r.up == [True, True]
    await r.heal_pass()
    assert await brick(h, 1).read_file("/f") == b"two"


async def test_the_last_child_down_is_reported_up_the_graph():
    from xlators.core.events import Event
    h = replica()
    seen = []
    h.graph.listeners.append(lambda ev, data, src: seen.append(ev))
    h.graph["e0"].notify_parents(Event.CHILD_DOWN)
    assert Event.CHILD_DOWN not in seen
    h.graph["e1"].notify_parents(Event.CHILD_DOWN)
    assert seen == [Event.CHILD_DOWN]


async def test_favorite_child_policy_majority():
    """Three children, every copy accused: the copy most children (a majority) do not
    accuse wins; a tie (each accused once, in a cycle) resolves nothing."""
    h = replica(3, favorite_child_policy="majority", self_heal_daemon="off")
    r = afr(h)
    await h.write_file("/f", b"base")
    ctx = r.ictx((await h.lookup("/f")).inode)
    pend = ctx.changelog.pending
    pend[0][1][cl.DATA] = pend[1][2][cl.DATA] = pend[2][0][cl.DATA] = 1
    with pytest.raises(FopError) as ei:
        await h.read_file("/f")
    assert ei.value.errno == errno.EIO
    h = replica(3, favorite_child_policy="majority", self_heal_daemon="off")
    r = afr(h)
    await h.write_file("/f", b"base")
    fd = await h.open("/f")
    pend = r.ictx(fd.inode).changelog.pending
    pend[1][0][cl.DATA] = 1                       # 0 is accused by one child
    pend[0][1][cl.DATA] = pend[2][1][cl.DATA] = 1  # 1 and 2 by two each
    pend[0][2][cl.DATA] = pend[1][2][cl.DATA] = 1
    assert await h.read(fd, 10) == b"base"
    assert r.ictx(fd.inode).changelog.sources(cl.DATA, [0, 1, 2]) == {0}
    await h.close(fd)


async def test_a_split_brain_resolves_once_a_policy_is_reloaded():
    h = replica()
    await _make_split_brain(h)
    with pytest.raises(FopError):
        await h.read_file("/f")
    afr(h).reconfigure({"favorite-child-policy": "size"})
    assert await h.read_file("/f") == b"written on child 0 alone"


class SlowWrite(Translator):
    """Holds writevs until its gate opens (a child that waits, like a remote one)."""
    type = "test/slow-write"
    children_range = (1, 1)
    gates: dict = {}

    async def writev(self, frame, fd, data, offset, flags=None):
        gate = SlowWrite.gates.get(self.name)
        if gate is not None:
            await gate.wait()
        return await self.child.writev(frame, fd, data, offset, flags)


async def test_a_heal_waits_for_writes_already_under_way():
    """Child 1 (stale) has taken a write that child 0 has not finished yet: a heal that
    copied child 0 now would undo it on child 1, and then both would be 'in sync'."""
    from xlators.testing import make_translator
    kids = [SlowWrite(f"s{i}", [make_translator("storage/memory", name=f"m{i}",
                                                options={"size": "0"})]) for i in range(2)]
    top = make_translator("cluster/replicate", kids, {"parallel-fan-out": "on"})
    h = Harness(top)
    h.init()
    await h.write_file("/f", b"a" * 10)
    fd = await h.open("/f")
    top.ictx(fd.inode).changelog.pending[0][1][cl.DATA] = 1   # heal will copy 0 -> 1
    top.queue_heal(fd.inode)
    SlowWrite.gates = {"s0": trio.Event(), "s1": trio.Event()}
    async with trio.open_nursery() as n:
        n.start_soon(h.write, fd, b"NEW", 0)
        await trio.testing.wait_all_tasks_blocked()
        SlowWrite.gates["s1"].set()                 # child 1 takes the write
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(top.heal_pass)
        await trio.testing.wait_all_tasks_blocked()
        SlowWrite.gates["s0"].set()                 # child 0 takes it last
    SlowWrite.gates = {}
    await h.close(fd)
    m0, m1 = Harness(kids[0].child), Harness(kids[1].child)
    assert await m0.read_file("/f") == await m1.read_file("/f") == b"NEWaaaaaaa"


async def test_a_modification_cancelled_between_children_is_recorded():
    from xlators.testing import make_translator
    kids = [SlowWrite(f"s{i}", [make_translator("storage/memory", name=f"m{i}",
                                                options={"size": "0"})]) for i in range(2)]
    top = make_translator("cluster/replicate", kids)
    h = Harness(top)
    h.init()
    await h.write_file("/f", b"a" * 10)
    fd = await h.open("/f")
    SlowWrite.gates = {"s1": trio.Event()}          # child 0 writes, child 1 hangs
    with trio.CancelScope() as cs:                 # an interrupt, say
        async with trio.open_nursery() as n:
            n.start_soon(h.write, fd, b"NEW", 0)
            await trio.testing.wait_all_tasks_blocked()
            cs.cancel()
    SlowWrite.gates = {}
    ctx = top.ictx(fd.inode)
    assert ctx.changelog.accused(cl.DATA) == {1}
    assert await h.read(fd, 10) == b"NEWaaaaaaa"
    await top.heal_pass()
    await h.close(fd)
    assert await Harness(kids[1].child).read_file("/f") == b"NEWaaaaaaa"


async def test_when_every_child_refuses_the_good_copy_gives_the_error():
    h = replica(read_subvolume_index="1")
    fail(h, 0)
    await h.mkdir("/d")
    await h.write_file("/d/a", b"x")
    recover(h, 0)
    await afr(h).probe_now()
    # child 0 lacks /d (ENOENT), child 1 has it with a file in it (ENOTEMPTY)
    with pytest.raises(FopError) as ei:
        await h.rmdir("/d")
    assert ei.value.errno == errno.ENOTEMPTY


async def test_the_roots_changelog_left_by_a_previous_run_is_read():
    """Child 0's root says child 1 missed entries (recorded before a restart): the
    listing comes from child 0 and the healer copies the missing name over."""
    h = replica(read_subvolume_index="1")
    b0 = brick(h, 0)
    await b0.write_file("/made-while-1-was-down", b"x")
    await b0.top.setxattr(b0.frame(), b0.root, cl.xattr_name("e1"), cl.encode((0, 0, 1)), 0)
    names = {e.name for e in await h.listdir("/")}
    assert b"made-while-1-was-down" in names
    await afr(h).heal_pass()
    assert await brick(h, 1).read_file("/made-while-1-was-down") == b"x"


async def test_the_crawl_finds_what_a_previous_run_left_unhealed():
    h = replica()
    await h.mkdir("/d")
    await h.write_file("/d/f", b"old")
    fail(h, 1)
    await h.write_file("/d/f", b"new contents")
    recover(h, 1)
    # a new run over the same children: nothing in memory, the accusation is on child 0
    from xlators.cluster.replicate import Replicate
    from xlators.core.inode import InodeTable
    again = Replicate("r2", [h.graph["e0"], h.graph["e1"]], {}, itable=InodeTable())
    again.init()
    for i in range(2):
        again._child_up(i)
    assert await again.crawl() == 2
    assert len(again.heal_index) >= 1
    await again.heal_pass()
    assert await brick(h, 1).read_file("/d/f") == b"new contents"
    assert len(again.itable) == 1, "the walk left inodes behind"
