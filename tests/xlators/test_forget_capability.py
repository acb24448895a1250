"""Translator.forget_needs_context: forget reaches a translator that declares it only for
inodes in which it holds a context (GlusterFS's forget callback model), every other
translator sees every forget; BATCH_FORGET (ClientState.forget_many) tells the graph of
the inodes that left the table, in order."""
import pytest

from xlators.core.graph import Graph
from xlators.core.registry import Registry
from xlators.core.translator import Translator, forget_path
from xlators.debug._wrap import install_fops
from xlators.testing import ForgetRecorder, Harness


class Plain(ForgetRecorder):
    """Declares nothing: sees every forget."""
    type = "test/forget-plain"


class Keeper(Plain):
    """Keeps a context in the inodes it looks up (when ``keep``), and declares it."""
    type = "test/forget-keeper"
    forget_needs_context = True
    keep = True

    async def lookup(self, frame, loc):
        entry = await self.child.lookup(frame, loc)
        if self.keep:
            entry.inode.ctx[self] = "mine"
        return entry

    async def forget(self, frame, inode):
        assert inode.ctx.pop(self) == "mine"
        await super().forget(frame, inode)


class Stateless(Plain):
    """Keeps nothing per inode and declares it: never sees forget."""
    type = "test/forget-stateless"
    forget_needs_context = True


class Generated(Translator):
    """Fops set after the class was made (as the debug translators' install_fops does)."""
    type = "test/forget-generated"
    forget_needs_context = True


def _record(fop):
    async def fn(self, frame, *args, **kwargs):
        self.calls.append(fop.name)
        return await getattr(self.child, fop.name)(frame, *args, **kwargs)
    return fn


install_fops(Generated, _record)


def _harness(*types: str) -> tuple[Harness, list]:
    reg = Registry(load_entrypoints=False)
    for cls in (Plain, Keeper, Stateless, Generated):
        reg.register(cls, "test")
    text = "volume leaf\n    type storage/memory\n    option size 1MB\nend-volume\n"
    below = "leaf"
    for i, t in enumerate(types):
        text += f"volume l{i}\n    type {t}\n    subvolumes {below}\nend-volume\n"
        below = f"l{i}"
    g = Graph.from_text(text, registry=reg)
    for xl in g.xlators.values():
        if isinstance(xl, Generated):
            xl.calls = []
    h = Harness(g)
    h.init()
    return h, [g.xlators[f"l{i}"] for i in range(len(types))]


async def test_forget_reaches_exactly_the_translators_holding_a_context():
    h, (keeper, stateless, plain, idle) = _harness(
        "test/forget-keeper", "test/forget-stateless", "test/forget-plain",
        "test/forget-keeper")
    idle.keep = False                       # declares it, holds nothing
    await h.write_file("/f", b"x")
    inode = (await h.lookup("/f")).inode
    assert keeper in inode.ctx and idle not in inode.ctx
    await h.forget(inode, inode.nlookup)
    assert inode.nodeid not in h.itable.by_nodeid
    assert keeper.forgotten == [inode] and plain.forgotten == [inode]
    assert stateless.forgotten == [] and idle.forgotten == []
    assert keeper not in inode.ctx


async def test_a_translator_declaring_nothing_still_sees_every_forget():
    h, (plain,) = _harness("test/forget-plain")
    await h.write_file("/f", b"x")
    inode = (await h.lookup("/f")).inode
    await h.forget(inode, inode.nlookup)
    assert plain.forgotten == [inode]


async def test_generated_fops_are_gated_too():
    h, (gen,) = _harness("test/forget-generated")
    assert getattr(Generated.forget, "gated", None) is not None
    await h.write_file("/f", b"x")
    inode = (await h.lookup("/f")).inode
    await h.forget(inode, inode.nlookup)
    assert "forget" not in gen.calls and "lookup" in gen.calls
    inode2 = (await h.lookup("/f")).inode
    inode2.ctx[gen] = object()              # holds a context now: sees the forget
    await h.forget(inode2, inode2.nlookup)
    assert gen.calls.count("forget") == 1


async def test_forget_many_forgets_in_order_and_skips_the_unknown():
    h, (plain,) = _harness("test/forget-plain")
    inodes = []
    for name in ("a", "b", "c"):
        await h.write_file(name, b"")
        inodes.append((await h.lookup("/" + name)).inode)
    a, b, c = inodes
    await h.client.forget_many([(c.nodeid, c.nlookup), (999_999, 1), (a.nodeid, 1),
                                (b.nodeid, b.nlookup), (a.nodeid, a.nlookup)])
    assert plain.forgotten == [c, b, a]
    assert not {a.nodeid, b.nodeid, c.nodeid} & set(h.itable.by_nodeid)


async def test_a_batch_goes_past_the_gates_only_where_no_context_is_held():
    h, (plain, stateless, keeper, top) = _harness(
        "test/forget-plain", "test/forget-stateless", "test/forget-keeper",
        "test/forget-generated")
    gated, below = forget_path(top)
    assert gated == {top, keeper, stateless} and below is plain
    keeper.keep = False
    inodes = []
    for name in ("a", "b", "c"):
        await h.write_file(name, b"")
        inodes.append((await h.lookup("/" + name)).inode)
    a, b, c = inodes
    b.ctx[keeper] = "mine"                  # b reaches keeper; a and c go straight below
    await h.client.forget_many([(i.nodeid, i.nlookup) for i in inodes])
    assert keeper.forgotten == [b] and stateless.forgotten == []
    assert plain.forgotten == [a, b, c] and "forget" not in top.calls


def test_the_forget_path_ends_where_the_first_children_do():
    h, (stateless,) = _harness("test/forget-stateless")
    gated, below = forget_path(stateless)
    assert gated == {stateless} and below is not None and below.type == "storage/memory"
    alone = Stateless("alone")
    assert forget_path(alone) == (frozenset({alone}), None)


def test_the_flag_must_be_a_bool():
    with pytest.raises(TypeError, match="forget_needs_context"):
        type("Bad", (Translator,), {"forget_needs_context": 1})


def test_the_stock_translators_without_inode_state_declare_it():
    from xlators.core.registry import default_registry
    reg = default_registry()
    for t in ("debug/io-stats", "features/locks", "performance/md-cache", "meta/meta"):
        assert reg.get(t).forget_needs_context is True, t
    assert reg.get("debug/trace").forget_needs_context is False
