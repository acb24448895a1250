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

Data caches (io-cache, read-ahead, quick-read) need less: which inodes' *contents* a
call may change.  :func:`data_changes_of` answers from the same table: a modifying fop
changes the data of the existing inodes it names (an ``inode``, ``fd`` or ``fd_out``
parameter; ``fd_in`` is only read), except the fops of :data:`METADATA_ONLY_FOPS`; a fop
that makes an entry and opens it (``create``) may have truncated the inode it returns;
``setattr`` only with a new size, ``open`` only with O_TRUNC.  A fop added to the table
is therefore data-changing unless it is declared metadata-only here.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, NamedTuple

from ..core.fops import FOP_BY_NAME, FOPS, Fop
from ..core.inode import Fd, Inode, Loc
from ..core.types import Entry

#: Every fop that always changes the filesystem (from the fop table).
MODIFYING_FOPS: tuple[Fop, ...] = tuple(f for f in FOPS if f.modifies)

_FD_PARAMS = ("fd", "fd_out")
_LOC_PARAMS = ("loc", "oldloc", "newloc")

#: Modifying fops with locations that make no new entry (their result is not an Entry):
#: they remove or replace the inode a name held (unlink, rmdir, rename).
NAME_REMOVING_FOPS: frozenset[str] = frozenset(
    f.name for f in MODIFYING_FOPS
    if f.result != "Entry" and any(p in _LOC_PARAMS for p in f.param_names))


#: Modifying fops that name an existing inode but change only its attributes, xattrs or
#: names, never its contents (the fop table cannot say so by itself).
METADATA_ONLY_FOPS: frozenset[str] = frozenset({"setxattr", "removexattr", "link"})

_EXISTING_PARAMS = ("inode",) + _FD_PARAMS

#: Fops after which a data cache must drop what it holds of some inode (see
#: :func:`data_changes_of`), derived from the fop table.
DATA_CHANGING_FOPS: tuple[str, ...] = tuple(
    f.name for f in MODIFYING_FOPS
    if f.name not in METADATA_ONLY_FOPS
    and any(p in _EXISTING_PARAMS for p in f.param_names)) + ("open",)


class Changes(NamedTuple):
    """What one fop call may have changed."""
    inodes: tuple[Inode, ...]              # attributes / xattrs / data changed
    dirs: tuple[Inode, ...]                # directories whose entries changed
    names: tuple[tuple[Inode, bytes], ...]  # (parent, name) entries that changed


_PARAM_NAMES: dict[str, tuple[str, ...]] = {f.name: f.param_names for f in FOPS}


def bind(fop: Fop, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by parameter name."""
    out = dict(zip(_PARAM_NAMES[fop.name], args))
    if kwargs:
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
    inodes = _inodes_named(params)
    dirs: list[Inode] = []
    names: list[tuple[Inode, bytes]] = []
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


def data_changes_of(fop_name: str, args: tuple, kwargs: dict | None = None,
                    result: Any = None) -> tuple[Inode, ...]:
    """The inodes whose contents a call of ``fop_name`` may change: asked before the call
    (``result`` None) and again with its result (``create`` returns the inode it may
    have truncated).  Empty for a fop that changes no data."""
    if fop_name not in DATA_CHANGING_FOPS:
        return ()
    fop = FOP_BY_NAME[fop_name]
    params = bind(fop, args, kwargs or {})
    if fop_name == "open":
        inode = params.get("inode")
        truncates = int(params.get("flags") or 0) & os.O_TRUNC
        return (inode,) if truncates and isinstance(inode, Inode) else ()
    if fop.result == "Entry":            # a new fd of the entry it makes (create)
        return (result.inode,) if isinstance(result, Entry) else ()
    if fop_name == "setattr" and getattr(params.get("changes"), "size", None) is None:
        return ()                       # chmod, chown, utimes: the contents stay
    return _unique(_inodes_named(params))


def _inodes_named(params: dict) -> list[Inode]:
    """The inodes a call's bound ``params`` name: its ``inode`` and its fds' inodes."""
    inodes: list[Inode] = []
    inode = params.get("inode")
    if isinstance(inode, Inode):
        inodes.append(inode)
    for key in _FD_PARAMS:
        fd = params.get(key)
        if isinstance(fd, Fd) and isinstance(fd.inode, Inode):
            inodes.append(fd.inode)
    return inodes


def _bytes(name: Any) -> bytes:
    return os.fsencode(name) if isinstance(name, str) else name


def _unique(items: Iterable[Inode]) -> tuple[Inode, ...]:
    seen: dict[int, Inode] = {}
    for i in items:
        seen.setdefault(id(i), i)
    return tuple(seen.values())
