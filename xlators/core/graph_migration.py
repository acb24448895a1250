"""Moving what the kernel holds from a running graph to the graph that replaces it.

A graph switch (``fuse_bridge.graph_switch``) builds a new graph with its own inode table.
The kernel keeps using the nodeids and file handles it was given, so before the new graph
serves anything each of them must name an object of the new graph:

- :func:`migrate_inodes`: every nodeid the kernel holds gets an inode of the new table
  with the same nodeid, generation and lookup count.  It is found *eagerly*, once, at
  switch time: by its export key (the ``resolve`` fop, exact identity) when the new graph
  stores into the same bricks and the nodeid is such a key (not one a previous switch
  found by name: ``Graph.foreign_nodeids``), else by name: the ``(parent nodeid, name)`` the bridge
  last handed it out as, looked up in the already-moved parent.  The file type must be
  the one the running graph reports, or the object is not the same.  A nodeid that
  cannot be found stays reserved in the new table as a *stale* inode (no translator
  context: every fop on it fails, ESTALE or EBADF) until the kernel forgets it, so the
  number is never handed out for another object meanwhile.
- :func:`reopen_fds`: every open file and directory is opened again on the new graph
  with its flags (less O_CREAT, O_EXCL, O_TRUNC); one that cannot be stays mapped to a
  handle no translator knows, which answers EBADF.
- :func:`locks_held`: what the graph says about granted and waiting locks (a switch is
  refused while there are any: docs/operating.md).

Why eager rather than GlusterFS's lazy resolution (each request migrates the inodes and
fds it touches, by gfid, on first use after the switch): lazily, every request must check
which graph its inodes belong to, the old graph's tables must live until the last inode
the kernel holds has been touched (so it can never be freed while a file stays open), and
a failure shows up at some later request instead of in the switch's own log line.
Eagerly, the cost is one lookup per inode the kernel holds (bounded by --lru-limit), paid
once, and the old graph can be finished and freed as soon as it is drained.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from .frame import system_frame
from .graph import Graph, bricks
from .inode import COUNTED_GENERATION, ROOT_NODEID, Fd, Inode, Loc

log = logging.getLogger("xlfs.graph-switch")

#: Flags an open file is reopened without: they acted when it was first opened.
_NOT_AGAIN = os.O_CREAT | os.O_EXCL | os.O_TRUNC


@dataclass
class InodeMigration:
    """The outcome of :func:`migrate_inodes`."""
    moved: dict[int, Inode] = field(default_factory=dict)    # nodeid -> new inode
    stale: dict[int, str] = field(default_factory=dict)      # nodeid -> why
    by_name: set[int] = field(default_factory=set)   # moved by name: not export keys
    by_key: int = 0

    def summary(self) -> str:
        text = (f"{len(self.moved)} inodes found again ({self.by_key} by export key, "
                f"{len(self.by_name)} by name)")
        if self.stale:
            text += f", {len(self.stale)} stale"
        return text


def storage_bricks(graph: Graph) -> frozenset[tuple[str, str]]:
    """(type, real path) of every brick the graph's storages keep their data in."""
    out = set()
    for xl in graph.xlators.values():
        for _key, path in bricks(xl):
            out.add((xl.type, os.path.realpath(path)))
    return frozenset(out)


def same_storage(old: Graph, new: Graph) -> bool:
    """Both graphs keep their data in the same bricks, through the same storage types:
    export keys (``resolve``) of one are export keys of the other."""
    a = storage_bricks(old)
    return bool(a) and a == storage_bricks(new)


def _depths(nodeids: Iterable[int], names: Mapping[int, tuple[int, bytes]]) -> dict[int, int]:
    """How many names lie between each nodeid and the root (by ``names``), so that a
    parent is always placed before its children; no recursion (deep trees)."""
    depth: dict[int, int] = {ROOT_NODEID: 0}
    for start in nodeids:
        chain = []
        n: Optional[int] = start
        while n is not None and n not in depth and n not in chain:
            chain.append(n)
            n = names[n][0] if n in names else None
        base = depth.get(n, 0) if n is not None else 0
        for i, m in enumerate(reversed(chain), 1):
            depth[m] = base + i
    return depth


async def migrate_inodes(old: Graph, new: Graph, nodeids: Iterable[int],
                         names: Mapping[int, tuple[int, bytes]], *,
                         use_keys: Optional[bool] = None) -> InodeMigration:
    """Give every nodeid of ``nodeids`` (those the kernel holds: looked up, or open) an
    inode of ``new``'s table (see the module docstring).  ``names``: nodeid -> (parent
    nodeid, name) as last handed to the kernel.  ``use_keys``: try ``resolve`` first
    (default: when :func:`same_storage`).  Both graphs must be quiet meanwhile."""
    if use_keys is None:
        use_keys = same_storage(old, new)
    old_t, new_t = old.itable, new.itable
    frame = system_frame()
    result = InodeMigration()
    todo = sorted({n for n in nodeids if n != ROOT_NODEID and old_t.get(n) is not None})
    reserved: dict[int, Inode] = {}
    for n in todo:                       # no new inode may take a number the kernel holds
        was = old_t.get(n)
        held = Inode(n, -n, was.generation)
        held.nlookup = was.nlookup
        new_t.by_nodeid[n] = held
        new_t.by_ino[-n] = held
        reserved[n] = held
    spare: list[Inode] = []              # found, but not adopted: to forget again
    depth = _depths(todo, names)
    for n in sorted(todo, key=lambda m: depth.get(m, 0)):
        why = await _place(old, new, n, names, use_keys, frame, result, reserved, spare)
        if why:
            result.stale[n] = why
            log.warning("graph switch: nodeid %d: %s; it answers ESTALE until the kernel "
                        "forgets it", n, why)
    for inode in spare:
        if new_t.purge(inode):
            await new.forget(inode)
    # A nodeid found by name is not the new storage's export key for its object: the
    # next switch must not resolve it as one (on another brick of the same filesystem
    # it would name a file outside the brick).
    new.foreign_nodeids = result.by_name
    return result


async def _place(old: Graph, new: Graph, n: int, names: Mapping[int, tuple[int, bytes]],
                 use_keys: bool, frame: Any, result: InodeMigration,
                 reserved: dict[int, Inode], spare: list[Inode]) -> str:
    """Find nodeid ``n`` on ``new`` and adopt it; '' or why not."""
    was = old.itable.get(n)
    entry, how, why, kind = None, "", "", -1
    foreign = getattr(old, "foreign_nodeids", ())
    if use_keys and was.generation != COUNTED_GENERATION and n not in foreign:
        try:     # the very object (the key is its brick's file handle): no check needed
            entry, how = await new.top.resolve(frame, n), "key"
        except OSError as exc:
            why = f"export key: {_strerror(exc)}"
    if entry is None:
        try:
            kind = stat.S_IFMT((await old.top.getattr(frame, was)).mode)
        except OSError as exc:
            return f"gone on the running graph already ({_strerror(exc)})"
        dentry = names.get(n)
        if dentry is None:
            return why or "no name is known for it and its export key cannot be used"
        parent_id, name = dentry
        parent = new.itable.root if parent_id == ROOT_NODEID else result.moved.get(parent_id)
        if parent is None:
            return f"its directory (nodeid {parent_id}) was not found"
        try:
            entry, how = await new.top.lookup(frame, Loc(parent, name)), "name"
        except OSError as exc:
            return f"lookup of {name!r} in nodeid {parent_id}: {_strerror(exc)}"
    found = entry.inode
    taken = (found is new.itable.root or found.nodeid in result.moved
             or found.nodeid in reserved)
    if kind >= 0 and stat.S_IFMT(entry.attr.mode) != kind:
        if not taken:
            spare.append(found)
        what = "the object of its export key" if how == "key" else repr(names[n][1])
        return (f"{what} is another kind of file now ({stat.filemode(entry.attr.mode)[0]!r}"
                f", was {stat.filemode(kind)[0]!r})")
    if taken:
        return f"it is the same object as nodeid {found.nodeid} on the new graph"
    _adopt(new, found, reserved.pop(n))
    result.moved[n] = found
    if how == "key":
        result.by_key += 1
    else:
        result.by_name.add(n)
    return ""


def _adopt(new: Graph, found: Inode, held: Inode) -> None:
    """``found`` (linked by the new graph under a number of its own) takes the place of
    the reserved inode ``held``: its nodeid, generation and the kernel's lookups."""
    table = new.itable
    if table.by_nodeid.get(found.nodeid) is found:
        del table.by_nodeid[found.nodeid]
    if table.by_ino.get(held.ino) is held:
        del table.by_ino[held.ino]
    found.nodeid = held.nodeid
    found.generation = held.generation
    found.nlookup += held.nlookup
    table.by_nodeid[held.nodeid] = found


def _strerror(exc: OSError) -> str:
    code = exc.errno
    name = errno.errorcode.get(code, str(code)) if code else type(exc).__name__
    return f"{name} ({os.strerror(code)})" if code else str(exc) or name


# -- open files ------------------------------------------------------------------------
async def reopen_fds(fds: Mapping[int, Fd], new: Graph
                     ) -> tuple[dict[int, Fd], dict[int, str]]:
    """Open every fd of ``fds`` (fh -> Fd of the running graph) again on ``new``, whose
    table holds their inodes under the same nodeids (after :func:`migrate_inodes`).
    Returns (fh -> new Fd, fh -> why it could not be reopened); a handle that could not
    be reopened maps to an Fd no translator knows (it answers EBADF).  Each new Fd holds
    a reference on its inode, as the bridge's own handles do."""
    frame = system_frame()
    out: dict[int, Fd] = {}
    failed: dict[int, str] = {}
    for fh, fd in fds.items():
        nodeid = fd.inode.nodeid
        inode = new.itable.get(nodeid)
        flags = fd.flags & ~_NOT_AGAIN
        again = Fd(inode if inode is not None else Inode(nodeid, -nodeid), flags, fd.pid,
                   is_dir=fd.is_dir, fh=fh)
        again.lk_owner = fd.lk_owner
        again.noflush = fd.noflush            # the kernel's FLUSH at close, as opened
        why = ""
        if inode is None or not inode.ctx:
            why = "its inode was not found on the new graph"
        else:
            try:
                if fd.is_dir:
                    await new.top.opendir(frame, inode, again)
                else:
                    await new.top.open(frame, inode, flags, again)
            except OSError as exc:
                why = _strerror(exc)
                if again.ctx:
                    await release_fds(new, {fh: again})
                again = Fd(inode, flags, fd.pid, is_dir=fd.is_dir, fh=fh)
                again.noflush = fd.noflush
        if why:
            failed[fh] = why
            log.warning("graph switch: fh %d (nodeid %d, %s): cannot reopen it on the new "
                        "graph: %s; it answers EBADF", fh, nodeid,
                        "directory" if fd.is_dir else f"flags {fd.flags:#o}", why)
        again.inode.refs += 1
        out[fh] = again
    return out, failed


async def release_fds(graph: Graph, fds: Mapping[int, Fd]) -> None:
    """Release every fd of ``fds`` on ``graph`` (the retired graph, or a reopen that
    failed half way); failures are logged."""
    frame = system_frame()
    for fh, fd in fds.items():
        try:
            if fd.is_dir:
                await graph.top.releasedir(frame, fd)
            else:
                await graph.top.release(frame, fd)
        except Exception:     # noqa: BLE001 - the others must still be released
            log.exception("graph switch: releasing fh %d on the old graph failed", fh)


# -- locks -----------------------------------------------------------------------------
def locks_held(graph: Graph) -> list[str]:
    """One line per translator that handles locks and holds (or waits for) some, or
    cannot tell: a translator declaring ``handles_locks`` answers ``locks_held()`` with
    the number of granted and waiting locks."""
    out = []
    for xl in graph.xlators.values():
        if not xl.handles_locks:
            continue
        n = xl.locks_held()
        if n is None:
            out.append(f"volume '{xl.name}' ({xl.type}) cannot tell whether locks are held")
        elif n:
            out.append(f"volume '{xl.name}' ({xl.type}) holds or waits for {n} lock(s)")
    return out
