"""meta/meta: the ``.meta`` directory at the root of a mount (GlusterFS's meta).

The bridge loads it on top of every graph it serves (volume ``meta-autoload``); a volfile
may place it itself, and then no second one is added.  Looking up ``.meta`` in the root
finds it, but the root's listing does not show it (readdir passes through untouched, so a
program walking the tree never wanders in).  Everything below ``.meta`` is answered here
and never reaches the children; every other request passes through with one dictionary
lookup.  The layout and each file's text: :mod:`xlators.meta.tree`; opens and listings:
:mod:`xlators.meta.open_files`.

What only the serving process knows (requests in flight, its inode and fd tables, its
options, the log level) comes from ``graph.host`` (:class:`xlators.core.host.Host`), read
at each access; without one (the test harness) those files say less.

Files and their sizes: a file's text is computed at lookup, readdirp and getattr (so
``stat`` shows its true size) and again at open, where the fd keeps it: every read of
that open sees one consistent text, and a getattr of the open file reports its size.
Opens ask for direct I/O, so the kernel sends every read here and never cuts one at a
size it cached a moment earlier.  When the bridge does not honour that hint
(``--direct-io-mode=no``: the kernel reads through its page cache, no further than the
size it was last told), an open and a getattr take the text last computed (for a
lookup or readdirp) instead of a new one: what is read is exactly the size the kernel
knows, at the price of a text up to the entry timeout old.

Writes: ``logging/loglevel`` (a level name, or GlusterFS's number), ``measure_latency``
(1/0) and ``statedump`` (any text; a read of the same open gives the dump's path) are
writable; truncating them is accepted and does nothing.  Everything else is refused with
EPERM (a write, a new name, a removal, an attribute change), as in GlusterFS; a bad value
for a writable file is EINVAL.

    volume meta-autoload
        type meta/meta
        option meta-dir-name .meta
        subvolumes stats
    end-volume
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import os
import stat
import time
from typing import Any, Awaitable, Optional

from ..core.errors import FopError
from ..core.events import Event
from ..core.inode import Fd, Inode, Loc
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Attr, Entry
from .profile import Profiler
from .open_files import OpenFiles
from .refusals import Refusals
from .tree import Dir, File, Link, MetaTree, Node

#: inode numbers of ``.meta`` entries: the top 2**40 values, far from any storage's; an
#: entry's number is a hash of its path, so it is the same in every graph (a graph switch
#: finds ``.meta/version`` again as the very same file)
META_INO_BASE = (1 << 64) - (1 << 40)
_graph_ids = itertools.count(1)
_STATE_EVENTS = {Event.CHILD_UP: "up", Event.CHILD_DOWN: "down",
                 Event.CHILD_CONNECTING: "connecting"}


class _Snapshot:
    """A file's text at one moment."""
    __slots__ = ("data", "at")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = time.monotonic()


class MetaInode:
    """What a ``.meta`` inode holds: its node and the text last shown."""
    __slots__ = ("node", "snapshot")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.snapshot: Optional[_Snapshot] = None


class Meta(OpenFiles, Refusals, Translator):
    """meta/meta: the .meta directory (graph, options, private state, profiles,
    pending requests, log level) at the mount's root."""
    type = "meta/meta"
    summary = ("the .meta directory at the mount's root: graph, options, private state, "
               "profiles, pending requests, log level.")
    children_range = (1, 1)
    passes_data_through = True    # files below the root are untouched
    forget_needs_context = True   # its inodes carry inode.ctx[self]; others go below
    needs_flush = False           # its own files need no flush; others go below
    options = (
        Option.str("meta-dir-name", default=".meta",
                   description="Name of the directory in the mount's root (not listed by "
                               "readdir; a file of that name in the brick's root is "
                               "hidden by it)."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.dir_name: str = self.opts.meta_dir_name
        if not self.dir_name or "/" in self.dir_name or self.dir_name in (".", ".."):
            raise ValueError(f"volume '{self.name}' ({self.type}): option 'meta-dir-name': "
                             f"invalid value '{self.dir_name}': a name without '/'")
        self._dir_bytes = os.fsencode(self.dir_name)
        self.graph_id = f"graph-{next(_graph_ids)}"
        self.tree = MetaTree(self)
        self.profiler = Profiler()
        self.last_statedump = ""
        self._inos: dict[tuple[str, ...], int] = {}
        self._taken: set[int] = set()
        self._states: dict[str, str] = {}
        self._watched: list[Translator] = []
        self._started_ns = time.time_ns()

    # -- lifecycle ---------------------------------------------------------------------
    def init(self) -> None:
        """Watch what every translator of the graph tells its parents (``state``)."""
        for xl in self.graph_xlators():
            self._watch(xl)

    def fini(self) -> None:
        self.profiler.stop()
        for xl in self._watched:
            xl.__dict__.pop("notify_parents", None)
        self._watched = []

    def graph_xlators(self) -> list[Translator]:
        """The translators of this graph, from the top down (dangling ones last); without
        a Graph (the harness), those below this one."""
        graph = self.graph
        if graph is not None:
            seen = [xl for _, xl in graph.walk()]
            return list(dict.fromkeys(seen + list(graph.xlators.values())))
        seen: list[Translator] = []

        def rec(xl: Translator) -> None:
            if xl not in seen:
                seen.append(xl)
                for c in xl.children:
                    rec(c)
        rec(self)
        return seen

    def _watch(self, xl: Translator) -> None:
        states = self._states
        send = xl.notify_parents        # the class's method, bound

        def notify_parents(event: Event, data: Any = None) -> None:
            state = _STATE_EVENTS.get(event)
            if state is not None:
                states[xl.name] = state
            send(event, data)
        xl.notify_parents = notify_parents          # type: ignore[method-assign]
        self._watched.append(xl)

    def state_of(self, xl: Translator) -> str:
        """What ``xl`` last told its parents: up, down, connecting (or unknown)."""
        return self._states.get(xl.name, "unknown")

    def set_profiling(self, on: bool) -> None:
        if on:
            self.profiler.start(self.graph_xlators())
            self.log.info("profiling started (%s/measure_latency)", self.dir_name)
        elif self.profiler.on:
            self.profiler.stop()
            self.log.info("profiling stopped")

    # -- nodes and inodes --------------------------------------------------------------
    def _ino(self, path: tuple[str, ...]) -> int:
        ino = self._inos.get(path)
        if ino is None:
            digest = hashlib.blake2b("/".join(path).encode(errors="surrogateescape"),
                                     digest_size=5).digest()
            ino = META_INO_BASE + int.from_bytes(digest, "big")
            while ino in self._taken:           # a collision: the next free number
                ino = META_INO_BASE + (ino - META_INO_BASE + 1) % (1 << 40)
            self._inos[path] = ino
            self._taken.add(ino)
        return ino

    def _key(self, node: Node) -> tuple[str, ...]:
        """What an entry's inode number is made from: its path, and a link's target too
        (``graphs/active`` after a graph switch is another link, not a changed one: the
        kernel keeps a link's text until it drops the inode)."""
        if isinstance(node, Link):
            return node.path + ("\0" + node.target(),)
        return node.path

    def _inode(self, node: Node) -> Inode:
        inode = self.itable.link(self._ino(self._key(node)))
        mi = inode.ctx.get(self)
        if mi is None:
            inode.ctx[self] = MetaInode(node)
        else:
            mi.node = node            # rebuilt: the newest closures
        return inode

    def _child(self, mi: MetaInode, name: bytes) -> Node:
        node = mi.node
        if not isinstance(node, Dir):
            raise FopError(errno.ENOTDIR)
        text = name.decode(errors="surrogateescape")
        got = node.entries().get(text)
        if got is None:
            raise FopError(errno.ENOENT)
        return got

    def _text(self, mi: MetaInode) -> bytes:
        node = mi.node
        assert isinstance(node, File)
        try:
            text = node.fill()
        except Exception as exc:      # one broken view must not fail the mount
            self.log.exception("%s/%s", self.dir_name, "/".join(node.path))
            text = f"error: {type(exc).__name__}: {exc}\n"
        data = text.encode(errors="surrogateescape")
        mi.snapshot = _Snapshot(data)
        return data

    def _attr(self, inode: Inode, mi: MetaInode, size: Optional[int] = None) -> Attr:
        node = mi.node
        if isinstance(node, Dir):
            mode, nlink, size = stat.S_IFDIR | 0o555, 2, 0
            t = self._started_ns
        elif isinstance(node, Link):
            mode, nlink = stat.S_IFLNK | 0o777, 1
            size = len(os.fsencode(node.target()))
            t = self._started_ns
        else:
            assert isinstance(node, File)
            mode = stat.S_IFREG | (0o644 if node.write is not None else 0o444)
            nlink = 1
            if size is None:
                size = len(self._text(mi))
            t = time.time_ns()
        return Attr(ino=inode.ino, size=size, blocks=(size + 511) // 512, atime_ns=t,
                    mtime_ns=t, ctime_ns=t, mode=mode, nlink=nlink, uid=0, gid=0)

    def _entry(self, node: Node) -> Entry:
        inode = self._inode(node)
        return Entry(inode, self._attr(inode, inode.ctx[self]))

    # -- lookup and attributes -----------------------------------------------------------
    # The fops every request of a file below the root takes (lookup, getattr, readv,
    # writev) are plain functions that hand back the child's coroutine, as pass-through
    # defaults do: this layer then costs no coroutine of its own.  What is answered here,
    # or counted after the child (profiling), is a coroutine method of its own.
    def lookup(self, frame: Any, loc: Loc) -> Awaitable[Entry]:
        parent = loc.parent
        if ((parent is None or parent.ctx.get(self) is None) and not self.profiler.on
                and (loc.name != self._dir_bytes or parent is not self.itable.root)):
            return self.child.lookup(frame, loc)
        return self._lookup(frame, loc)

    async def _lookup(self, frame: Any, loc: Loc) -> Entry:
        parent = loc.parent
        mi = parent.ctx.get(self) if parent is not None else None
        if mi is None:
            if loc.name == self._dir_bytes and parent is self.itable.root:
                return self._entry(self.tree.root())
            entry = await self.child.lookup(frame, loc)
            if self.profiler.on:
                self.profiler.named(entry.inode.nodeid, parent.nodeid, loc.name)
            return entry
        if loc.name == b".":
            return Entry(parent, self._attr(parent, mi))
        if loc.name == b"..":
            if not mi.node.path:
                root = self.itable.root
                return Entry(root, await self.child.getattr(frame, root))
            return self._entry(self._node_at(mi.node.path[:-1]))
        return self._entry(self._child(mi, loc.name))

    def _node_at(self, path: tuple[str, ...]) -> Node:
        node: Node = self.tree.root()
        for name in path:
            assert isinstance(node, Dir)
            node = node.entries()[name]
        return node

    def getattr(self, frame: Any, inode: Inode, fd: Optional[Fd] = None) -> Awaitable[Attr]:
        mi = inode.ctx.get(self)
        if mi is None:
            return self.child.getattr(frame, inode, fd)
        return self._getattr(inode, mi, fd)

    async def _getattr(self, inode: Inode, mi: MetaInode, fd: Optional[Fd]) -> Attr:
        mfd = fd.ctx.get(self) if fd is not None else None
        if mfd is not None and isinstance(mi.node, File):
            return self._attr(inode, mi, len(mfd.content))
        if mi.snapshot is not None and not self._direct_io():
            # page-cached: the kernel's size must stay that of the text opens take (an
            # fstat arrives without the fd); a new text comes with the next lookup
            return self._attr(inode, mi, len(mi.snapshot.data))
        return self._attr(inode, mi)

    async def setattr(self, frame: Any, inode: Inode, changes: Any,
                      fd: Optional[Fd] = None) -> Attr:
        mi = inode.ctx.get(self)
        if mi is None:
            return await self.child.setattr(frame, inode, changes, fd)
        only_size = all(getattr(changes, f) is None for f in ("mode", "uid", "gid",
                                                              "atime_ns", "mtime_ns"))
        if (isinstance(mi.node, File) and mi.node.write is not None and only_size
                and changes.size is not None):
            return self._attr(inode, mi)            # truncating a writable file: nothing
        raise FopError(errno.EPERM)

    async def access(self, frame: Any, inode: Inode, mask: int) -> None:
        mi = inode.ctx.get(self)
        if mi is None:
            return await self.child.access(frame, inode, mask)
        writable = isinstance(mi.node, File) and mi.node.write is not None
        if mask & os.W_OK and not writable:
            raise FopError(errno.EACCES)
        return None

    async def readlink(self, frame: Any, inode: Inode) -> bytes:
        mi = inode.ctx.get(self)
        if mi is None:
            return await self.child.readlink(frame, inode)
        if not isinstance(mi.node, Link):
            raise FopError(errno.EINVAL)
        return os.fsencode(mi.node.target())

    async def statfs(self, frame: Any, inode: Inode) -> Any:
        if inode.ctx.get(self) is not None:
            inode = self.itable.root
        return await self.child.statfs(frame, inode)

    async def forget(self, frame: Any, inode: Inode) -> None:
        if inode.ctx.pop(self, None) is None:
            return await self.child.forget(frame, inode)
        return None

    def dump(self) -> dict[str, Any]:
        return {"meta-dir-name": self.dir_name, "graph-id": self.graph_id,
                "profiling": self.profiler.on, "entries-known": len(self._inos),
                "last-statedump": self.last_statedump or None}
