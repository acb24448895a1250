"""performance/md-cache: cache attributes, entries and chosen xattrs of inodes.

    volume md-cache
        type performance/md-cache
        option md-cache-timeout 600
        option cache-invalidation on
        subvolumes posix
    end-volume

What is cached, for ``md-cache-timeout`` seconds from the reply that brought it:

- an inode's attributes, from the replies of lookup, getattr, setattr, create, mknod,
  mkdir, symlink, link and readdirp; ``getattr`` (stat and fstat) is then answered from
  the cache;
- the entry ``name -> inode`` of a directory, from the same replies: a ``lookup`` whose
  entry and attributes are both cached is answered without winding (negative lookups are
  nl-cache's);
- the xattrs chosen by the ``cache-*`` options and ``xattr-cache-list``, from getxattr
  replies, "no such attribute" (ENODATA) included: the kernel asks for
  ``security.capability`` before writes, and that question is then answered here (for
  a file just made by an exclusive ``create``, which can have none, without asking the
  child).  A cached *absence* of ``security.capability`` (and only that) outlives the
  file's writes (``writev``, ``fallocate``, ``copy_file_range``) and its passthrough
  writers: a write can end a capability (kill-privileges), never make one.  Everything
  else below drops it as it drops any xattr (timeout, upcalls, setxattr ...);
- ``statfs`` replies, with ``md-cache-statfs on``.

At ``open``, md-cache tells the kernel to keep its page cache of the file (the fd's
``keep_cache`` hint, FOPEN_KEEP_CACHE, honoured by the bridge unless
``--fopen-keep-cache=no``) when the file's mtime, ctime and size are those it had at its
previous open: a re-read of an unchanged file is then served by the kernel.  A file
changed in between, through the mount or below it, has a new ctime and is read afresh
(changes below the mount are seen within the bound below; with ``watch-brick`` the
bridge also drops the kernel's pages itself).  ``opendir`` gets the ``cache_dir`` hint
(FOPEN_CACHE_DIR: the kernel may keep the listing) and ``keep_cache`` by the same rule
(a directory's mtime changes with its entries); the bridge turns both into the
OPENDIR reply's FOPEN_* flags (``fuse_bridge.ops_dir.opendir_flags``).

What invalidates (drops) an inode's record:

- every fop marked ``modifies`` in the fop table (``xlators.core.fops``), and ``open``
  with O_TRUNC, whatever its outcome: the inodes it names, the directories of its
  locations and the inodes their changed names held (see
  :mod:`xlators.performance.fop_targets`); create, mkdir, setattr ... then cache the
  attributes their reply carries;
- with ``cache-invalidation on``, the upcalls travelling up from below
  (``xlators.core.upcall``: storage/posix sends them with ``watch-brick on`` for changes
  made in the brick): ``InvalidateInode`` drops the inode, ``InvalidateEntry`` and
  ``DeleteEntry`` drop the entry, the inode it held and the directory's attributes.
  Upcalls always continue up to the bridge, which tells the kernel;
- CHILD_DOWN drops everything; an inode's record goes with the inode when it leaves
  the table (md-cache has no ``forget``: a forget passes it by, at no cost).

unlink, rmdir and rename also drop the inode the removed or replaced name held: md-cache
knows it from the entry it cached, or knows the name holds none of its inodes when a
lookup found the name missing less than ``md-cache-timeout`` ago (the kernel's LOOKUP
before a rename or mkdir); for any other name it looks the name up first (see
:mod:`xlators.performance.md_cache_entries`).

A reply to a fop wound before an invalidation of its inode is not cached (it may carry
the old state).  The bound on staleness is therefore: changes made through this graph,
none; changes made below it (in the brick, by another client), the upcall's delay with
``cache-invalidation on`` and an upcall source (posix ``watch-brick``), else
``md-cache-timeout``.  As in GlusterFS a timeout above 60 seconds needs
``cache-invalidation on`` and is cut to 60 otherwise.  The kernel's own caches are the
bridge's (``--attribute-timeout``, ``--entry-timeout``) and come on top.

FUSE passthrough: md-cache never touches file data, so it declares
``passes_data_through`` and a stack of md-cache over posix can let the kernel do READ
and WRITE itself.  Such writes change the file's size and times without any fop
passing here, so while an inode has an fd open for writing in passthrough (md-cache
sees the bridge ask ``passthrough_fd`` for it) none of its attributes or xattrs are
served from the cache, but a cached absence of ``security.capability`` (the kernel asks
before the first write of each open file; see above), and its record is dropped, that
absence again excepted, when that fd is released.

Options kept for GlusterFS compatibility that change nothing here: ``force-readdirp``
(converting a plain readdir to readdirp inside the graph would make inodes the kernel
never hears of and so never forgets; the bridge's READDIRPLUS gives md-cache every
entry's attributes instead) and ``global-cache-invalidation`` (a changed file is always
invalidated in this graph; the kernel's page cache is the bridge's).
"""
from __future__ import annotations

import errno
import os
import time
from typing import Any, Callable, Optional

from ..core.errors import FopError
from ..core.events import Event
from ..core.fops import Fop, compile_fop
from ..core.inode import Inode, Loc
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Attr, DirEntry, Entry, StatFs
from .fop_targets import (MODIFYING_FOPS, NAME_REMOVING_FOPS, changes_of)
from .md_cache_entries import MdEntryFops
from .md_cache_state import ABSENT, CAPABILITY, XattrSelection
from .passthrough_writers import PassthroughWriters

GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION = 60
_O_TRUNC = os.O_TRUNC
_ENOENT = errno.ENOENT


class MdCache(MdEntryFops, PassthroughWriters, Translator):
    """performance/md-cache: cache attributes, entries and chosen xattrs of inodes."""
    type = "performance/md-cache"
    children_range = (1, 1)
    needs_flush = False
    passes_data_through = True   # FUSE passthrough: see the module docstring
    # What it caches of an inode is inode.ctx[self], found only through the table (names
    # hold inode numbers): it goes with the Inode once that leaves the table, so md-cache
    # has no forget of its own, and Graph.forget goes straight below it.
    forget_needs_context = True
    options = (
        Option.int("md-cache-timeout", default=1, min=0, max=600,
                   description="Seconds a cached attribute, entry or xattr is served. "
                               "Above 60 needs cache-invalidation on (else cut to 60)."),
        Option.bool("cache-invalidation", default=False,
                    description="Invalidate on upcalls from below (posix watch-brick)."),
        Option.bool("cache-selinux", default=False,
                    description="Cache security.selinux."),
        Option.bool("cache-capability-xattrs", default=True,
                    description="Cache security.capability (asked by the kernel before "
                                "writes)."),
        Option.bool("cache-ima-xattrs", default=True, description="Cache security.ima."),
        Option.bool("cache-posix-acl", default=False,
                    description="Cache system.posix_acl_access and "
                                "system.posix_acl_default."),
        Option.bool("cache-swift-metadata", default=True,
                    description="Cache user.swift.metadata."),
        Option.bool("cache-samba-metadata", default=False,
                    description="Cache user.DOSATTRIB, security.NTACL, "
                                "org.netatalk.Metadata, org.netatalk.ResourceFork and "
                                "user.DosStream.*."),
        Option.str("xattr-cache-list", default="",
                   description="More xattr names to cache, comma separated; '*' is a "
                               "wildcard."),
        Option.bool("md-cache-statfs", default=False,
                    description="Cache statfs replies for md-cache-timeout."),
        Option.bool("force-readdirp", default=True,
                    description="Accepted for compatibility; readdir is not converted "
                                "(see the module documentation)."),
        Option.bool("global-cache-invalidation", default=True,
                    description="Accepted for compatibility; changed files are always "
                                "invalidated."),
        Option.bool("pass-through", default=False,
                    description="Cache nothing: every fop goes to the child."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.clock: Callable[[], float] = time.monotonic
        self._gen = 0
        self._statfs: Optional[tuple[float, StatFs]] = None
        self._apply_options()
        self.stats = dict(stat_hit=0, stat_miss=0, lookup_hit=0, xattr_hit=0,
                          xattr_miss=0, upcalls=0, keep_cache=0)

    def _apply_options(self) -> None:
        timeout = self.opts.md_cache_timeout
        if timeout > GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION and \
                not self.opts.cache_invalidation:
            self.log.warning("md-cache-timeout %s needs cache-invalidation on; using %s",
                             timeout, GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION)
            timeout = GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION
        self.timeout = float(timeout)
        self._on = self.timeout > 0 and not self.opts.pass_through
        self.xattr_names = XattrSelection(self.opts)
        self._capability_cached = b"security.capability" in self.xattr_names

    def reconfigured(self, old: Any) -> None:
        self._apply_options()
        self._drop_all()

    # -- FUSE passthrough (PassthroughWriters) ------------------------------------------
    def _writer_opened(self, inode: Any) -> None:
        """A writable fd the kernel writes itself: the inode's cache stops until it is
        released."""
        self._state(inode).passthrough_writers += 1
        self._written(inode)

    def _writer_released(self, inode: Any) -> None:
        self._state(inode).passthrough_writers -= 1
        self._written(inode)

    # -- events ---------------------------------------------------------------------------
    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event is Event.UPCALL:
            self.stats["upcalls"] += 1
            if self.opts.cache_invalidation:
                self._upcall(data)
        elif event is Event.CHILD_DOWN:
            self._drop_all()
        super().notify(event, data, source)

    # -- fops that read the cache -----------------------------------------------------------
    async def lookup(self, frame: Any, loc: Loc) -> Entry:
        if not self._on:
            return await self.child.lookup(frame, loc)
        since = self._gen
        name = loc.name
        if name is None:                               # nameless: revalidate an inode
            attr = self._cached_attr(loc.inode)
            if attr is not None:
                self.stats["lookup_hit"] += 1
                return Entry(loc.inode, attr)
            entry = await self.child.lookup(frame, loc)
            self._store_attr(entry.inode, entry.attr, since)
            return entry
        if name.__class__ is not bytes:
            name = os.fsencode(name)
        parent = loc.parent
        pst = parent.ctx.get(self)
        if pst is not None:
            held = pst.names.get(name)
            if held is not None:
                hit = self._entry_hit(held)
                if hit is not None:
                    self.stats["lookup_hit"] += 1
                    return hit
        try:
            entry = await self.child.lookup(frame, loc)
        except OSError as exc:
            # what unlink, rmdir and rename then need not look up (MdState.absent)
            if exc.errno == _ENOENT and pst is not None and pst.inval_gen <= since:
                pst.absent = (name, self.clock())
            raise
        self._store_entry(parent, name, entry, since)
        return entry

    async def getattr(self, frame: Any, inode: Inode, fd: Any = None) -> Attr:
        if not self._on:
            return await self.child.getattr(frame, inode, fd)
        st = inode.ctx.get(self)
        if st is not None:
            attr = st.attr
            if attr is not None and not st.passthrough_writers \
                    and self.clock() - st.attr_time < self.timeout:
                self.stats["stat_hit"] += 1
                return attr
        self.stats["stat_miss"] += 1
        since = self._gen
        attr = await self.child.getattr(frame, inode, fd)
        self._store_attr(inode, attr, since)
        return attr

    async def readdirp(self, frame: Any, fd: Any, offset: int, size: int) -> list[DirEntry]:
        since = self._gen
        entries = await self.child.readdirp(frame, fd, offset, size)
        if self._on and entries:
            self._store_entries(fd.inode, entries, since)
        return entries

    async def getxattr(self, frame: Any, inode: Inode, name: bytes) -> bytes:
        cacheable = self._on and name in self.xattr_names
        if cacheable:
            st = inode.ctx.get(self)
            if st is not None and name in st.xattrs and self._fresh(st.xattr_time):
                value = st.xattrs[name]
                # with a passthrough writer open only "no security.capability" holds
                # (the kernel's writes can end one, never make one)
                if not st.passthrough_writers or (value is ABSENT and name == CAPABILITY):
                    self.stats["xattr_hit"] += 1
                    if value is ABSENT:
                        raise FopError(errno.ENODATA)
                    return value
            self.stats["xattr_miss"] += 1
        since = self._gen
        try:
            value = await self.child.getxattr(frame, inode, name)
        except OSError as exc:
            if cacheable and exc.errno == errno.ENODATA:
                self._store_xattr(inode, name, ABSENT, since)
            raise
        if cacheable and isinstance(value, bytes):
            self._store_xattr(inode, name, value, since)
        return value

    async def statfs(self, frame: Any, inode: Inode) -> StatFs:
        if self.opts.md_cache_statfs and self._on:
            cached = self._statfs
            if cached is not None and self._fresh(cached[0]):
                return cached[1]
            result = await self.child.statfs(frame, inode)
            self._statfs = (self.clock(), result)
            return result
        return await self.child.statfs(frame, inode)

    # -- fops that change what is cached ------------------------------------------------------
    async def open(self, frame: Any, inode: Inode, flags: int, fd: Any) -> None:
        if flags & _O_TRUNC:
            try:
                await self.child.open(frame, inode, flags, fd)
            finally:
                self._invalidate(inode)
        else:
            await self.child.open(frame, inode, flags, fd)
        if self._on:
            await self._keep_cache_hint(frame, inode, fd)
        return None

    async def opendir(self, frame: Any, inode: Inode, fd: Any) -> None:
        await self.child.opendir(frame, inode, fd)
        if self._on and isinstance(getattr(fd, "open_flags", None), set):
            fd.open_flags.add("cache_dir")
            await self._keep_cache_hint(frame, inode, fd)
        return None

    async def _keep_cache_hint(self, frame: Any, inode: Inode, fd: Any) -> None:
        """Ask the kernel to keep its page cache of ``inode`` (``keep_cache`` in
        ``fd.open_flags``, FOPEN_KEEP_CACHE) when the file's mtime, ctime and size are
        what they were at its previous open: nothing changed it since.  Otherwise (or on
        the first open) the kernel drops its pages, as without md-cache."""
        attr = self._cached_attr(inode)
        if attr is None:
            since = self._gen
            try:
                attr = await self.child.getattr(frame, inode, None)
            except OSError:
                return
            self._store_attr(inode, attr, since)
        if not isinstance(attr, Attr):
            return
        st = self._state(inode)
        version = (attr.mtime_ns, attr.ctime_ns, attr.size)
        if st.data_version == version and isinstance(getattr(fd, "open_flags", None), set):
            fd.open_flags.add("keep_cache")
            self.stats["keep_cache"] += 1
        st.data_version = version

    async def setattr(self, frame: Any, inode: Inode, changes: Any, fd: Any = None) -> Attr:
        since = self._gen
        try:
            attr = await self.child.setattr(frame, inode, changes, fd)
        finally:
            st = inode.ctx.get(self)
            # another change of the inode (a write of mmap writeback, which the kernel
            # does not serialise with a chmod) returned while this one was under way:
            # the reply may predate it
            crossed = st is None or st.inval_gen > since
            self._invalidate(inode)
        if not crossed:
            self._store_attr(inode, attr, self._gen)
        return attr

    def dump(self) -> dict[str, Any]:
        """The counters; ``invalidations`` counts the invalidation events (the
        generation counter: one per fop, upcall or drop that invalidated anything)."""
        cached = sum(1 for i in self.itable if i.ctx.get(self) is not None)
        return dict(self.stats, invalidations=self._gen, timeout=self.timeout,
                    inodes=cached)


# Every other fop marked ``modifies`` in the fop table: wind, then drop the records of
# the inodes it names (an ``inode`` parameter, the inode of ``fd``/``fd_out``), with the
# table's exact parameters (writev is on the data path).  A fop with locations that is
# not written out above takes the general rule of xlators.performance.fop_targets.
_INVALIDATING_SOURCE = """
async def {name}(self, frame, {params}):
    child = self.child
    try:
        return await {wind:child}
    finally:
%s
"""
_DROP_BY_PARAM = {"inode": "self._invalidate(inode)", "fd": "self._invalidate(fd.inode)",
                  "fd_out": "self._invalidate(fd_out.inode)"}
# The fops that only write data: they keep a cached absence of security.capability
# (MdRecords._written).  Named here, not derived from the table: a fop added to it
# drops every xattr until someone checks that it cannot make a capability.
_WRITING_FOPS = frozenset({"writev", "fallocate", "copy_file_range"})
_LOC_PARAMS = ("loc", "oldloc", "newloc")


def _invalidating(fop: Fop) -> Callable[..., Any]:
    drops = [_DROP_BY_PARAM[p] for p in fop.param_names if p in _DROP_BY_PARAM]
    if fop.name in _WRITING_FOPS:
        drops = [d.replace("_invalidate(", "_written(") for d in drops]
    if any(p in _LOC_PARAMS for p in fop.param_names) or not drops:
        return _invalidating_by_rule(fop.name)
    body = "\n".join("        " + d for d in drops)
    fn = compile_fop(fop, _INVALIDATING_SOURCE % body, {"__name__": __name__})
    fn.__qualname__ = f"MdCache.{fop.name}"
    fn.__doc__ = f"{fop.name}: wind, then drop the records of the inodes it changes."
    return fn


def _invalidating_by_rule(fop_name: str) -> Callable[..., Any]:
    removes = fop_name in NAME_REMOVING_FOPS

    async def fop(self: MdCache, frame: Any, *args: Any, **kwargs: Any) -> Any:
        ch = changes_of(fop_name, args, kwargs)
        victims = []
        if removes and self._on:
            for parent, name in ch.names:
                loc = Loc(parent, name)
                victim = None if self._name_known(loc) else await self._victim(frame, loc)
                if victim is not None:
                    victims.append(victim)
        try:
            return await getattr(self.child, fop_name)(frame, *args, **kwargs)
        finally:
            self._apply_changes(ch)
            for inode in victims:
                self._invalidate(inode)
    fop.__name__ = fop.__qualname__ = fop_name
    fop.__doc__ = f"{fop_name}: wind, then drop what it changed (from the fop table)."
    return fop


for _fop in MODIFYING_FOPS:
    if getattr(MdCache, _fop.name) is getattr(Translator, _fop.name):   # not written out
        setattr(MdCache, _fop.name, _invalidating(_fop))
del _fop
