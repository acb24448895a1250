"""performance/nl-cache: remember which names do not exist, answer ENOENT without winding.

    volume nl-cache
        type performance/nl-cache
        option nl-cache-timeout 600
        option nl-cache-positive-entry on
        subvolumes posix
    end-volume

Builds (compilers, shells searching $PATH, Python's imports) look up many names that do
not exist, again and again.  nl-cache keeps, per directory:

- negative entries: names a lookup found missing (ENOENT), or that an unlink or rmdir
  through this graph just removed (the old name of a rename is only forgotten: a rename
  between two links of one inode leaves both).  A lookup of such a name fails with ENOENT at
  once for ``nl-cache-timeout`` seconds;
- with ``nl-cache-positive-entry on``: the names known to exist, and for a directory made
  by mkdir through this graph (empty at birth) the knowledge that these are *all* its
  names: a lookup of any other name there fails with ENOENT at once.

What changes it:

- a name made through this graph (create, mknod, mkdir, symlink, link, the target of a
  rename: the modifying fops of the fop table whose result is an Entry or that remove a
  name, see :mod:`xlators.performance.fop_targets`) stops being negative at once, whether
  the fop succeeded or not (an EEXIST proves the name exists);
- upcalls from below (storage/posix ``watch-brick``, another client): ``InvalidateEntry``,
  ``DeleteEntry`` and ``InvalidateInode`` of a directory drop all that is cached for that
  directory; upcalls continue up to the bridge (which drops the kernel's negative
  dentries);
- CHILD_DOWN drops everything, ``forget`` of a directory drops its record;
- past ``nl-cache-limit`` bytes (names plus a fixed cost per name), the least recently
  used directories are dropped until the cache fits.

A lookup reply that left before an invalidation of its directory, or before a name was
made in it through this graph, is not cached.  Bound on
staleness for a name created behind the mount: the upcall's delay with an upcall source
(posix ``watch-brick``), else ``nl-cache-timeout``; the kernel's ``--negative-timeout``
comes on top.

FUSE passthrough: nl-cache keeps names, never data or attributes, so it declares
``passes_data_through`` and a stack of it over posix lets the kernel read and write the
brick files itself (``--fuse-passthrough=auto|yes``).
"""
from __future__ import annotations

import errno
import os
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from ..core.errors import FopError
from ..core.events import Event
from ..core.inode import Inode, Loc
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Entry
from ..core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from .fop_targets import MODIFYING_FOPS, NAME_REMOVING_FOPS, bind

RENAME_EXCHANGE = 2
NAME_COST = 64          # bytes charged per cached name on top of its length
NAME_MAX = 255          # a longer name is the child's to refuse (ENAMETOOLONG)

#: Modifying fops that make a new name (their result is an Entry).
NAME_MAKING_FOPS = frozenset(f.name for f in MODIFYING_FOPS if f.result == "Entry")


class NlDir:
    """What nl-cache knows about one directory's names."""
    __slots__ = ("negative", "positive", "complete", "since", "gen", "cost")

    def __init__(self, now: float) -> None:
        self.negative: dict[bytes, float] = {}     # name -> when it was found missing
        self.positive: set[bytes] = set()
        self.complete = False                      # positive is every name it holds
        self.since = now                           # when positive/complete were learnt
        self.gen = 0                               # generation of its last invalidation
        self.cost = 0


def _name(loc: Any) -> Optional[bytes]:
    if not isinstance(loc, Loc) or loc.name is None or not isinstance(loc.parent, Inode):
        return None
    return os.fsencode(loc.name) if isinstance(loc.name, str) else loc.name


class NlCache(Translator):
    """performance/nl-cache: remember which names do not exist, answer ENOENT at once."""
    type = "performance/nl-cache"
    children_range = (1, 1)
    needs_flush = False
    passes_data_through = True   # names only: FUSE passthrough's READ/WRITE change none
    options = (
        Option.time("nl-cache-timeout", default="60", min=0,
                    description="Seconds a negative (or positive) entry is trusted."),
        Option.bool("nl-cache-positive-entry", default=False,
                    description="Also cache the names that exist, so that a directory "
                                "made here answers every other name with ENOENT."),
        Option.size("nl-cache-limit", default="131072", min=0,
                    description="Bytes of cached names (plus 64 per name); past it the "
                                "least recently used directories are dropped."),
        Option.bool("pass-through", default=False,
                    description="Cache nothing: every fop goes to the child."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.clock: Callable[[], float] = time.monotonic
        self._gen = 0
        self._dirs: "OrderedDict[int, Inode]" = OrderedDict()   # id(inode) -> inode, LRU
        self.size = 0
        self.stats = dict(hits=0, misses=0, invalidations=0, evictions=0)

    def reconfigured(self, old: Any) -> None:
        self._drop_all()

    # -- records ------------------------------------------------------------------------
    def _caching(self) -> bool:
        return self.opts.nl_cache_timeout > 0 and not self.opts.pass_through

    def _fresh(self, stamp: float) -> bool:
        return self.clock() - stamp < self.opts.nl_cache_timeout

    def _dir(self, inode: Inode, create: bool = True) -> Optional[NlDir]:
        d = inode.ctx.get(self)
        if d is None and create:
            d = inode.ctx[self] = NlDir(self.clock())
            # An invalidation of this directory before now found no record to mark: a
            # reply to a fop wound before it must not be cached in the new one.
            d.gen = self._gen
        if d is not None:
            self._dirs[id(inode)] = inode
            self._dirs.move_to_end(id(inode))
        return d

    def _charge(self, d: NlDir, delta: int) -> None:
        d.cost += delta
        self.size += delta
        limit = self.opts.nl_cache_limit
        while self.size > limit and self._dirs:
            _, victim = self._dirs.popitem(last=False)
            self._release(victim)
            self.stats["evictions"] += 1

    def _release(self, inode: Inode) -> None:
        d = inode.ctx.pop(self, None)
        self._dirs.pop(id(inode), None)
        if d is not None:
            self.size -= d.cost

    def _invalidate_dir(self, inode: Any) -> None:
        self._gen += 1
        if not isinstance(inode, Inode):
            return
        d = inode.ctx.get(self)
        if d is None:
            return
        self.size -= d.cost
        d.cost = 0
        d.negative.clear()
        d.positive.clear()
        d.complete = False
        d.gen = self._gen
        self.stats["invalidations"] += 1

    def _drop_all(self) -> None:
        for inode in list(self._dirs.values()):
            self._release(inode)
        self._gen += 1

    def _names_made(self, parents: list[Inode]) -> None:
        """Names were made in ``parents``: a lookup answered ENOENT before that (and
        still on its way up) must not be cached."""
        self._gen += 1
        for parent in parents:
            d = parent.ctx.get(self)
            if d is not None:
                d.gen = self._gen

    def _add_negative(self, parent: Inode, name: bytes, since: int) -> None:
        d = self._dir(parent)
        if d.gen > since:
            return
        if d.positive and name in d.positive:
            d.positive.discard(name)
            self._charge(d, -(len(name) + NAME_COST))
        if name not in d.negative:
            self._charge(d, len(name) + NAME_COST)
        d.negative[name] = self.clock()

    def _add_positive(self, parent: Inode, name: bytes) -> None:
        """``name`` exists in ``parent`` (a reply said so, or a fop made it)."""
        d = self._dir(parent, create=self.opts.nl_cache_positive_entry)
        if d is None:
            return
        if d.negative.pop(name, None) is not None:
            self._charge(d, -(len(name) + NAME_COST))
        if self.opts.nl_cache_positive_entry and name not in d.positive:
            d.positive.add(name)
            self._charge(d, len(name) + NAME_COST)

    def _forget_name(self, parent: Inode, name: bytes) -> None:
        """Nothing is known about ``name`` any more (and the directory is not known to
        be complete)."""
        d = parent.ctx.get(self)
        if d is None:
            return
        if d.negative.pop(name, None) is not None:
            self._charge(d, -(len(name) + NAME_COST))
        if name in d.positive:
            d.positive.discard(name)
            self._charge(d, -(len(name) + NAME_COST))
        d.complete = False

    def _known_missing(self, parent: Inode, name: bytes) -> bool:
        d = parent.ctx.get(self)
        if d is None:
            return False
        stamp = d.negative.get(name)
        if stamp is not None:
            if self._fresh(stamp):
                return True
            del d.negative[name]
            self._charge(d, -(len(name) + NAME_COST))
            return False
        return (self.opts.nl_cache_positive_entry and d.complete and self._fresh(d.since)
                and len(name) <= NAME_MAX and name not in d.positive)

    # -- events -------------------------------------------------------------------------
    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event is Event.UPCALL and not self.opts.pass_through:
            if isinstance(data, (InvalidateEntry, DeleteEntry)):
                self._invalidate_dir(data.parent)
            elif isinstance(data, InvalidateInode):
                self._invalidate_dir(data.inode)
        elif event is Event.CHILD_DOWN:
            self._drop_all()
        super().notify(event, data, source)

    # -- fops ---------------------------------------------------------------------------
    async def lookup(self, frame: Any, loc: Loc) -> Entry:
        name = _name(loc)
        if name is None or not self._caching():
            return await self.child.lookup(frame, loc)
        if self._known_missing(loc.parent, name):
            self.stats["hits"] += 1
            raise FopError(errno.ENOENT)
        self.stats["misses"] += 1
        since = self._gen
        try:
            entry = await self.child.lookup(frame, loc)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                self._add_negative(loc.parent, name, since)
            raise
        if self.opts.nl_cache_positive_entry and loc.parent.ctx.get(self) is not None:
            self._add_positive(loc.parent, name)
        return entry

    async def _names_fop(self, fop_name: str, frame: Any, args: tuple, kwargs: dict) -> Any:
        params = bind(_FOPS[fop_name], args, kwargs)
        exchange = fop_name == "rename" and int(params.get("flags") or 0) & RENAME_EXCHANGE
        if fop_name not in NAME_REMOVING_FOPS:              # create, mkdir, link ...
            made, gone = [params.get("loc"), params.get("newloc")], []
        elif fop_name == "rename":
            made = [params.get("newloc")] + ([params.get("oldloc")] if exchange else [])
            gone = [] if exchange else [params.get("oldloc")]
        else:                                                # unlink, rmdir
            made, gone = [], [params.get("loc")]
        made_names = [(loc.parent, n) for loc in made if (n := _name(loc)) is not None]
        gone_names = [(loc.parent, n) for loc in gone if (n := _name(loc)) is not None]
        for parent, n in made_names:           # about to exist: never answer ENOENT now
            d = parent.ctx.get(self)
            if d is not None and d.negative.pop(n, None) is not None:
                self._charge(d, -(len(n) + NAME_COST))
        since = self._gen
        try:
            result = await getattr(self.child, fop_name)(frame, *args, **kwargs)
        except BaseException:
            self._names_made([parent for parent, _ in made_names])
            for parent, n in made_names + gone_names:
                self._forget_name(parent, n)
            raise
        if made_names:
            self._names_made([parent for parent, _ in made_names])
        if not self._caching():
            return result
        for parent, n in made_names:
            self._add_positive(parent, n)
        for parent, n in gone_names:
            if fop_name == "rename":
                # renaming a name onto itself or onto another link of the same inode
                # leaves it in place (POSIX): the old name is not known to be gone
                self._forget_name(parent, n)
            else:
                self._add_negative(parent, n, since)
        if fop_name == "mkdir" and isinstance(result, Entry) and \
                self.opts.nl_cache_positive_entry:
            d = self._dir(result.inode)
            d.complete, d.since = True, self.clock()
        return result

    async def forget(self, frame: Any, inode: Inode) -> None:
        self._release(inode)
        return await self.child.forget(frame, inode)

    def dump(self) -> dict[str, Any]:
        return dict(self.stats, directories=len(self._dirs), size=self.size)


_FOPS = {f.name: f for f in MODIFYING_FOPS}


def _name_changing(fop_name: str) -> Callable[..., Any]:
    async def fop(self: NlCache, frame: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._names_fop(fop_name, frame, args, kwargs)
    fop.__name__ = fop.__qualname__ = fop_name
    fop.__doc__ = f"{fop_name}: wind, then update the names it made or removed."
    return fop


for _name_fop in sorted(NAME_MAKING_FOPS | NAME_REMOVING_FOPS):
    setattr(NlCache, _name_fop, _name_changing(_name_fop))
del _name_fop
