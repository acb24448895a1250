"""Inodes, open files and locations, each with per-translator context slots.

One :class:`InodeTable` serves a whole graph.  An inode's identity is ``Attr.ino`` as the
storage translator reports it (GlusterFS's gfid plays this role); ``link(ino)`` returns
the one live ``Inode`` for that number.  ``nodeid`` is the handle the FUSE bridge gives the
kernel (the root is 1).  ``nlookup`` counts the kernel's references; when it drops to zero
and no ``Fd`` holds the inode, ``purge`` unlinks it and returns True: the caller then
awaits ``Graph.forget(inode)`` so every translator can drop its context.

A storage links an inode before anyone counts a reference to it.  If the request then
fails (a translator above errs, the reply cannot be encoded or sent, the request is
interrupted), nobody ever will: the caller of the fop holds :class:`LinkPins` around it,
which keeps every inode linked meanwhile (in this task) referenced until ``release()``
and hands them back, so the caller can purge those the kernel never received.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator, Optional

from trio.lowlevel import current_task as _current_task

ROOT_NODEID = 1
COUNTED_GENERATION = 1   # generation of inodes whose nodeid came from the counter


class Inode:
    __slots__ = ("nodeid", "ino", "generation", "nlookup", "refs", "ctx", "__weakref__")

    def __init__(self, nodeid: int, ino: int, generation: int = 0) -> None:
        self.nodeid = nodeid
        self.ino = ino
        self.generation = generation   # with nodeid, what the kernel's file handles hold
        self.nlookup = 0   # kernel references (LOOKUP replies minus FORGETs)
        self.refs = 0      # open Fds and other in-process holders
        self.ctx: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"<Inode nodeid={self.nodeid} ino={self.ino} nlookup={self.nlookup}>"


class Fd:
    """An open file or directory.  ``fh`` is its number in the client's handle table
    (``xlators.core.client``; 0 until it has one).  ``noflush``: the FUSE bridge answered
    its open with FOPEN_NOFLUSH, so the kernel sends no FLUSH at its closes
    (fuse_bridge.ops_file.release)."""
    __slots__ = ("inode", "flags", "pid", "fh", "lk_owner", "ctx", "is_dir", "open_flags",
                 "noflush")

    def __init__(self, inode: Inode, flags: int = 0, pid: int = 0, *, is_dir: bool = False,
                 fh: int = 0) -> None:
        self.inode = inode
        self.flags = flags
        self.pid = pid
        self.fh = fh
        self.lk_owner = 0
        self.is_dir = is_dir
        self.ctx: dict[Any, Any] = {}
        # FOPEN_* style hints a translator may set for the kernel: "direct_io", "keep_cache"
        self.open_flags: set[str] = set()
        self.noflush = False

    def __repr__(self) -> str:
        return f"<Fd fh={self.fh} {self.inode!r} flags={self.flags:#o}>"


class Loc:
    """Where an entry is: ``name`` (bytes) in directory ``parent``; ``inode`` when known."""
    __slots__ = ("parent", "name", "inode")

    def __init__(self, parent: Optional[Inode], name: Optional[bytes],
                 inode: Optional[Inode] = None) -> None:
        self.parent = parent
        self.name = name
        self.inode = inode

    def __repr__(self) -> str:
        parent = self.parent.nodeid if self.parent is not None else None
        return f"Loc(parent={parent}, name={self.name!r}, inode={self.inode!r})"


#: The pins of each task that holds some (a request runs in one task from start to
#: end: fuse_bridge.readers): the list of inodes they hold.  Keyed by task rather than
#: kept in a context variable, so that a task the request starts (which would inherit a
#: context) never pins, and so that a request that links nothing pays three dictionary
#: operations and an empty list.  :class:`LinkPins` is the interface; the bridge's
#: entry handlers (fuse_bridge.ops_entry) spell the same steps out (a LinkPins object
#: and its two method calls cost as much again as the steps themselves).
pins_by_task: dict[Any, list[Inode]] = {}


def end_pins(task: Any, held: list, outer: Optional[list]) -> None:
    """``held`` stops being ``task``'s entry in the pins registry: the ``outer`` one it
    replaced is again (none if None).  For :class:`LinkPins` and for the bridge's entry
    requests, which register a list of their own (no object made per request)."""
    if pins_by_task.get(task) is held:
        if outer is None:
            del pins_by_task[task]
        else:
            pins_by_task[task] = outer


class LinkPins:
    """Hold (``refs``) every inode :meth:`InodeTable.link` returns in this task until
    :meth:`release`.  Only this task's links count: tasks started meanwhile (a cache's
    prefetch) link unpinned.  One per request; a nested one (the same task) holds what
    is linked until it is released, then the outer one holds again.  ``inodes``: what
    it holds (with repeats), in link order."""
    __slots__ = ("inodes", "task", "_outer", "active")

    def __init__(self) -> None:
        try:
            task = _current_task()
        except RuntimeError:        # a worker thread, or no trio at all
            task = None
        self.task = task
        self._outer = pins_by_task.get(task)
        self.inodes: list[Inode] = []
        pins_by_task[task] = self.inodes
        self.active = True

    def release(self) -> list[Inode]:
        """Stop pinning and drop the holds; the inodes that were held (with repeats),
        for the caller to purge those nothing else references."""
        inodes = self.inodes
        if self.active:
            self.active = False
            end_pins(self.task, inodes, self._outer)
            self._outer = None
        if not inodes:
            return []
        self.inodes = []
        for inode in inodes:
            inode.refs -= 1
        return inodes


class InodeTable:
    """The live inodes of one graph, by ino and by nodeid."""

    def __init__(self, root_ino: int = 1) -> None:
        self._nodeids = itertools.count(ROOT_NODEID + 1)
        self.root = Inode(ROOT_NODEID, root_ino)
        self.root.nlookup = 1  # the kernel never forgets the root
        self.by_ino: dict[int, Inode] = {root_ino: self.root}
        self.by_nodeid: dict[int, Inode] = {ROOT_NODEID: self.root}

    def set_root_ino(self, ino: int) -> None:
        """Re-key the root under the storage's own inode number for it."""
        del self.by_ino[self.root.ino]
        self.root.ino = ino
        self.by_ino[ino] = self.root

    def link(self, ino: int, key: int = 0) -> Inode:
        """The live inode for ``ino``, created (with nlookup 0) when there is none.

        ``key``: the storage's export key for the object (nonzero; see the module
        docstring), used as the new inode's nodeid unless that number is taken (the
        root's, or a live inode's), when the counter gives one as for no key."""
        inode = self.by_ino.get(ino)
        if inode is None:
            if key > ROOT_NODEID and key not in self.by_nodeid and key < 1 << 64:
                inode = Inode(key, ino)
            else:
                inode = Inode(self._counted_nodeid(), ino, COUNTED_GENERATION)
            self.by_ino[ino] = inode
            self.by_nodeid[inode.nodeid] = inode
        if pins_by_task:
            try:
                task = _current_task()
            except RuntimeError:        # a worker thread, or no trio at all
                task = None
            held = pins_by_task.get(task)
            if held is not None:
                inode.refs += 1
                held.append(inode)
        return inode

    def share_numbering(self, other: "InodeTable") -> None:
        """Draw counted nodeids from ``other``'s counter (a graph switch: the new graph's
        table never hands out a number the old one gave the kernel)."""
        self._nodeids = other._nodeids

    def _counted_nodeid(self) -> int:
        nodeid = next(self._nodeids)
        while nodeid in self.by_nodeid:      # a key took it
            nodeid = next(self._nodeids)
        return nodeid

    def find(self, ino: int) -> Optional[Inode]:
        return self.by_ino.get(ino)

    def get(self, nodeid: int) -> Optional[Inode]:
        return self.by_nodeid.get(nodeid)

    def forget(self, inode: Inode, n: int) -> bool:
        """Drop ``n`` kernel references; True when the inode left the table."""
        inode.nlookup = max(0, inode.nlookup - n)
        return self.purge(inode)

    def purge(self, inode: Inode) -> bool:
        """Unlink ``inode`` if nothing references it; True when it left the table."""
        if inode.nlookup or inode.refs or inode is self.root:
            return False
        if self.by_ino.get(inode.ino) is inode:
            del self.by_ino[inode.ino]
        return self.by_nodeid.pop(inode.nodeid, None) is not None

    def rekey(self, inode: Inode, new_ino: int) -> None:
        """An inode's number changed (a storage-level replace): keep one entry per ino."""
        if self.by_ino.get(inode.ino) is inode:
            del self.by_ino[inode.ino]
        inode.ino = new_ino
        self.by_ino[new_ino] = inode

    def __len__(self) -> int:
        return len(self.by_nodeid)

    def __iter__(self) -> Iterator[Inode]:
        return iter(list(self.by_nodeid.values()))
