"""LOOKUP of "." and ".." as the kernel sends them to decode file handles
(fs/fuse/inode.c: fuse_get_dentry, fuse_get_parent), over the fake kernel."""
from __future__ import annotations

import errno

from xlators.core.errors import FopError
from xlators.core.graph import Graph
from xlators.core.translator import Translator

from tests.protocol.kernel import MEMORY_VOL, registry, serve


async def _forget_all(k, s, nodeid: int) -> None:
    await k.forget(nodeid, s.itable.by_nodeid[nodeid].nlookup)
    await k.sync()
    assert nodeid not in s.itable.by_nodeid


async def test_dot_of_a_forgotten_nodeid_resolves_to_that_nodeid():
    async with serve() as (k, s):
        d = (await k.mkdir(1, b"d")).entry()
        e, o = (await k.create(d.nodeid, b"f")).create()
        assert (await k.write(e.nodeid, o.fh, b"hello")).u32() == 5
        (await k.release(e.nodeid, o.fh)).ok()
        await _forget_all(k, s, e.nodeid)
        await _forget_all(k, s, d.nodeid)

        again = (await k.lookup(e.nodeid, b".")).entry()
        assert (again.nodeid, again.generation) == (e.nodeid, e.generation)
        assert again.attr.ino == e.attr.ino and again.attr.size == 5
        assert s.itable.by_nodeid[e.nodeid].nlookup == 1       # one kernel reference
        assert e.nodeid not in s.client.lru                           # "." names nothing to drop
        o = (await k.open(e.nodeid)).open()
        assert (await k.read(e.nodeid, o.fh, 100)).ok().body == b"hello"
        (await k.release(e.nodeid, o.fh)).ok()
        dd = (await k.lookup(d.nodeid, b".")).entry()
        assert dd.nodeid == d.nodeid
        # get_parent: ".." of the directory is the root
        assert (await k.lookup(d.nodeid, b"..")).entry().nodeid == 1


async def test_dot_of_a_cached_nodeid_is_its_entry():
    async with serve() as (k, s):
        e, o = (await k.create(1, b"f")).create()
        (await k.release(e.nodeid, o.fh)).ok()
        again = (await k.lookup(e.nodeid, b".")).entry()
        assert again.nodeid == e.nodeid and again.attr.ino == e.attr.ino
        assert s.itable.by_nodeid[e.nodeid].nlookup == 2


async def test_dot_of_a_deleted_or_unknown_nodeid_is_stale():
    async with serve() as (k, s):
        e, o = (await k.create(1, b"f")).create()
        (await k.release(e.nodeid, o.fh)).ok()
        (await k.unlink(1, b"f")).ok()
        await _forget_all(k, s, e.nodeid)
        assert (await k.lookup(e.nodeid, b".")).errno == errno.ESTALE
        assert (await k.lookup(123456789, b".")).errno == errno.ESTALE
        assert (await k.lookup(123456789, b"x")).errno == errno.ESTALE
        assert len(s.itable) == 1                      # nothing left behind


class NoResolve(Translator):
    """A leaf-like translator that cannot resolve (ENOSYS, as a leaf without the fop)."""
    type = "test/no-resolve"

    async def resolve(self, frame, nodeid):
        raise FopError(errno.ENOSYS)


class WrongResolve(Translator):
    """Resolves every nodeid to the root: not the object the handle names."""
    type = "test/wrong-resolve"

    async def resolve(self, frame, nodeid):
        from xlators.core.inode import Loc
        return await self.child.lookup(frame, Loc(self.itable.root, b"."))


class ForeignResolve(Translator):
    """Resolves to an inode of its own with the asked nodeid (as a cluster translator
    winding to a child with a private inode table would): not an inode of the graph."""
    type = "test/foreign-resolve"

    async def resolve(self, frame, nodeid):
        from xlators.core.inode import Inode
        from xlators.core.types import Entry
        root = self.itable.root
        return Entry(Inode(nodeid, 4242), await self.child.getattr(frame, root))


def _graph(t: str) -> Graph:
    r = registry()
    for cls in (NoResolve, WrongResolve, ForeignResolve):
        r.register(cls, "tests.protocol")
    g = Graph.from_text(MEMORY_VOL + f"\nvolume top\n    type {t}\n    subvolumes memory\n"
                        "end-volume\n", registry=r)
    g.init()
    g.activate()
    return g


async def test_a_graph_that_cannot_resolve_answers_stale_not_enosys():
    async with serve(_graph("test/no-resolve")) as (k, s):
        assert (await k.lookup(77, b".")).errno == errno.ESTALE


async def test_an_entry_with_another_nodeid_is_stale():
    """The kernel fails a handle with EIO when the reply's nodeid is not the handle's."""
    async with serve(_graph("test/wrong-resolve")) as (k, s):
        assert (await k.lookup(77, b".")).errno == errno.ESTALE
        assert s.itable.root.nlookup == 1


async def test_an_inode_outside_the_graphs_table_is_stale():
    async with serve(_graph("test/foreign-resolve")) as (k, s):
        assert (await k.lookup(77, b".")).errno == errno.ESTALE
        assert 77 not in s.itable.by_nodeid and len(s.itable) == 1
