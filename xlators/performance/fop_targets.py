"""What a fop changes, read from the fop table: the caches' shared invalidation rule.

Caching translators (md-cache, nl-cache, readdir-ahead) must forget what a modifying fop
may have changed.  Rather than keep their own lists of fops, they ask this module, which
reads ``xlators.core.fops``: every fop marked ``modifies`` changes

- the inodes it names (an ``inode`` parameter, the inode of an ``fd``/``fd_out``),
- for each location (``loc``, ``oldloc``, ``newloc``): the parent directory (its entries,
  mtime and link count), the entry ``(parent, name)`` and the inode the name held when
  the caller knows it (``Loc.inode``).

``open`` with O_TRUNC is the one fop not marked ``modifies`` that changes its inode (the
size): :func:`changes_of` reports it too.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, NamedTuple

from ..core.fops import FOP_BY_NAME, FOPS, Fop
from ..core.inode import Fd, Inode, Loc

#: Every fop that always changes the filesystem (from the fop table).
MODIFYING_FOPS: tuple[Fop, ...] = tuple(f for f in FOPS if f.modifies)

_FD_PARAMS = ("fd", "fd_out")
_LOC_PARAMS = ("loc", "oldloc", "newloc")

#: Modifying fops with locations that make no new entry (their result is not an Entry):
#: they remove or replace the inode a name held (unlink, rmdir, rename).
NAME_REMOVING_FOPS: frozenset[str] = frozenset(
    f.name for f in MODIFYING_FOPS
    if f.result != "Entry" and any(p in _LOC_PARAMS for p in f.param_names))


class Changes(NamedTuple):
    """What one fop call may have changed."""
    inodes: tuple[Inode, ...]              # attributes / xattrs / data changed
    dirs: tuple[Inode, ...]                # directories whose entries changed
    names: tuple[tuple[Inode, bytes], ...]  # (parent, name) entries that changed


def bind(fop: Fop, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by parameter name."""
    out = dict(zip(fop.param_names, args))
    out.update(kwargs)
    return out


def changes_of(fop_name: str, args: tuple, kwargs: dict | None = None) -> Changes:
    """What a call of ``fop_name`` with these arguments may change (empty for a fop that
    changes nothing)."""
    fop = FOP_BY_NAME[fop_name]
    params = bind(fop, args, kwargs or {})
    if not fop.modifies:
        if fop_name == "open" and int(params.get("flags") or 0) & os.O_TRUNC:
            inode = params.get("inode")
            return Changes((inode,) if isinstance(inode, Inode) else (), (), ())
        return Changes((), (), ())
    inodes: list[Inode] = []
    dirs: list[Inode] = []
    names: list[tuple[Inode, bytes]] = []
    inode = params.get("inode")
    if isinstance(inode, Inode):
        inodes.append(inode)
    for key in _FD_PARAMS:
        fd = params.get(key)
        if isinstance(fd, Fd) and isinstance(fd.inode, Inode):
            inodes.append(fd.inode)
    for key in _LOC_PARAMS:
        loc = params.get(key)
        if not isinstance(loc, Loc):
            continue
        if isinstance(loc.parent, Inode):
            dirs.append(loc.parent)
            if loc.name is not None:
                names.append((loc.parent, _bytes(loc.name)))
        if isinstance(loc.inode, Inode):
            inodes.append(loc.inode)
    return Changes(_unique(inodes), _unique(dirs), tuple(names))


def _bytes(name: Any) -> bytes:
    return os.fsencode(name) if isinstance(name, str) else name


def _unique(items: Iterable[Inode]) -> tuple[Inode, ...]:
    seen: dict[int, Inode] = {}
    for i in items:
        seen.setdefault(id(i), i)
    return tuple(seen.values())
