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
  child);
- ``statfs`` replies, with ``md-cache-statfs on``.

At ``open``, md-cache tells the kernel to keep its page cache of the file (the fd's
``keep_cache`` hint, FOPEN_KEEP_CACHE, honoured by the bridge unless
``--fopen-keep-cache=no``) when the file's mtime, ctime and size are those it had at its
previous open: a re-read of an unchanged file is then served by the kernel.  A file
changed in between, through the mount or below it, has a new ctime and is read afresh
(changes below the mount are seen within the bound below; with ``watch-brick`` the
bridge also drops the kernel's pages itself).  ``opendir`` gets the ``cache_dir`` hint
(FOPEN_CACHE_DIR: the kernel may keep the listing) and ``keep_cache`` by the same rule
(a directory's mtime changes with its entries); the bridge does not honour hints on
OPENDIR yet.

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
- CHILD_DOWN drops everything; ``forget`` drops the inode's record.

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
served from the cache, and its record is dropped when that fd is released.

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
from ..core.frame import system_frame
from ..core.inode import Inode, Loc
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Attr, DirEntry, Entry, StatFs
from .fop_targets import MODIFYING_FOPS, NAME_REMOVING_FOPS, Changes, changes_of
from .md_cache_records import MdRecords
from .md_cache_state import ABSENT, XattrSelection

GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION = 60
_PASSTHROUGH_WRITER = object()   # fd.ctx mark: counted in passthrough_writers
_CAPABILITY = b"security.capability"


class MdCache(MdRecords, Translator):
    """performance/md-cache: cache attributes, entries and chosen xattrs of inodes."""
    type = "performance/md-cache"
    children_range = (1, 1)
    passes_data_through = True   # FUSE passthrough: see the module docstring
    forget_needs_context = True  # what it caches of an inode is inode.ctx[self]
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
                          xattr_miss=0, invalidations=0, upcalls=0, keep_cache=0)

    def _apply_options(self) -> None:
        timeout = self.opts.md_cache_timeout
        if timeout > GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION and \
                not self.opts.cache_invalidation:
            self.log.warning("md-cache-timeout %s needs cache-invalidation on; using %s",
                             timeout, GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION)
            timeout = GLUSTER_MAX_TIMEOUT_WITHOUT_INVALIDATION
        self.timeout = float(timeout)
        self.xattr_names = XattrSelection(self.opts)

    def reconfigured(self, old: Any) -> None:
        self._apply_options()
        self._drop_all()

    # -- FUSE passthrough ---------------------------------------------------------------
    def passthrough_fd(self, fd: Any) -> Optional[int]:
        """The child's answer; a writable fd that gets one stops the inode's cache until
        it is released (the kernel's writes bypass the graph)."""
        brick_fd = super().passthrough_fd(fd)
        if brick_fd is not None and fd.flags & os.O_ACCMODE != os.O_RDONLY \
                and fd.ctx.get(self) is not _PASSTHROUGH_WRITER:
            fd.ctx[self] = _PASSTHROUGH_WRITER
            self._state(fd.inode).passthrough_writers += 1
            self._invalidate(fd.inode)
        return brick_fd

    async def release(self, frame: Any, fd: Any) -> None:
        try:
            return await self.child.release(frame, fd)
        finally:
            if fd.ctx.pop(self, None) is _PASSTHROUGH_WRITER:
                st = self._state(fd.inode)
                st.passthrough_writers -= 1
                self._invalidate(fd.inode)

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
        since = self._gen
        name = loc.name
        if name is None:                               # nameless: revalidate an inode
            attr = self._cached_attr(loc.inode) if self._caching() else None
            if attr is not None:
                self.stats["lookup_hit"] += 1
                return Entry(loc.inode, attr.copy())
            entry = await self.child.lookup(frame, loc)
            self._store_attr(entry.inode, entry.attr, since)
            return entry
        if isinstance(name, str):
            name = name.encode()
        if self._caching():
            hit = self._cached_entry(loc.parent, name)
            if hit is not None:
                self.stats["lookup_hit"] += 1
                return hit
        entry = await self.child.lookup(frame, loc)
        self._store_entry(loc.parent, name, entry, since)
        return entry

    async def getattr(self, frame: Any, inode: Inode, fd: Any = None) -> Attr:
        if self._caching():
            attr = self._cached_attr(inode)
            if attr is not None:
                self.stats["stat_hit"] += 1
                return attr.copy()
            self.stats["stat_miss"] += 1
        since = self._gen
        attr = await self.child.getattr(frame, inode, fd)
        self._store_attr(inode, attr, since)
        return attr

    async def readdirp(self, frame: Any, fd: Any, offset: int, size: int) -> list[DirEntry]:
        since = self._gen
        entries = await self.child.readdirp(frame, fd, offset, size)
        if self._caching():
            for e in entries:
                if e.entry is not None and e.name not in (b".", b".."):
                    self._store_entry(fd.inode, e.name, e.entry, since)
        return entries

    async def getxattr(self, frame: Any, inode: Inode, name: bytes) -> bytes:
        cacheable = self._caching() and name in self.xattr_names
        if cacheable:
            st = inode.ctx.get(self)
            if st is not None and name in st.xattrs and self._fresh(st.xattr_time) \
                    and not st.passthrough_writers:
                self.stats["xattr_hit"] += 1
                value = st.xattrs[name]
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
        if self.opts.md_cache_statfs and self._caching():
            cached = self._statfs
            if cached is not None and self._fresh(cached[0]):
                return cached[1]
            result = await self.child.statfs(frame, inode)
            self._statfs = (self.clock(), result)
            return result
        return await self.child.statfs(frame, inode)

    # -- fops that change what is cached ------------------------------------------------------
    async def open(self, frame: Any, inode: Inode, flags: int, fd: Any) -> None:
        try:
            await self.child.open(frame, inode, flags, fd)
        finally:
            self._apply_changes(changes_of("open", (inode, flags, fd)))
        if self._caching():
            await self._keep_cache_hint(frame, inode, fd)
        return None

    async def opendir(self, frame: Any, inode: Inode, fd: Any) -> None:
        await self.child.opendir(frame, inode, fd)
        if self._caching() and isinstance(getattr(fd, "open_flags", None), set):
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
        try:
            attr = await self.child.setattr(frame, inode, changes, fd)
        finally:
            self._invalidate(inode)
        self._store_attr(inode, attr, self._gen)
        return attr

    async def _new_entry(self, fop: str, frame: Any, loc: Loc, *args: Any) -> Entry:
        try:
            entry = await getattr(self.child, fop)(frame, *args)
        finally:
            self._apply_changes(changes_of(fop, args))
        if isinstance(entry, Entry) and isinstance(loc.parent, Inode) and loc.name:
            name = loc.name.encode() if isinstance(loc.name, str) else loc.name
            self._store_entry(loc.parent, name, entry, self._gen)
        return entry

    async def create(self, frame: Any, loc: Loc, flags: int, mode: int, umask: int,
                     fd: Any) -> Entry:
        entry = await self._new_entry("create", frame, loc, loc, flags, mode, umask, fd)
        if flags & os.O_EXCL and isinstance(entry, Entry) \
                and _CAPABILITY in self.xattr_names and self._caching():
            # A file an exclusive create made has no file capability (nothing sets one
            # at creation): the kernel's question before the first write is answered
            # here.  (Without O_EXCL the storage may have opened an existing file.)
            # Stored as of now, as _new_entry stores the entry's attributes.
            self._store_xattr(entry.inode, _CAPABILITY, ABSENT, self._gen)
        return entry

    async def mknod(self, frame: Any, loc: Loc, mode: int, rdev: int, umask: int) -> Entry:
        return await self._new_entry("mknod", frame, loc, loc, mode, rdev, umask)

    async def mkdir(self, frame: Any, loc: Loc, mode: int, umask: int) -> Entry:
        return await self._new_entry("mkdir", frame, loc, loc, mode, umask)

    async def symlink(self, frame: Any, target: bytes, loc: Loc) -> Entry:
        return await self._new_entry("symlink", frame, loc, target, loc)

    async def link(self, frame: Any, inode: Inode, newloc: Loc) -> Entry:
        return await self._new_entry("link", frame, newloc, inode, newloc)

    async def _unknown_victims(self, frame: Any, ch: Changes) -> list[Inode]:
        """The inodes held by names that unlink/rmdir/rename will remove, for the names
        md-cache has no entry of (their cached attributes, e.g. the link count of a
        hard-linked file, would go stale): one lookup each.  An inode that this lookup
        brought into the table (no one else holds it) is forgotten again below."""
        out = []
        for parent, name in ch.names:
            pst = parent.ctx.get(self)
            if pst is not None and name in pst.names or not self._caching():
                continue
            try:
                entry = await self.child.lookup(frame, Loc(parent, name))
            except OSError:
                continue
            if not isinstance(entry, Entry):
                continue
            if entry.inode.ctx.get(self) is not None:
                out.append(entry.inode)
            elif self.itable.purge(entry.inode):
                await self.child.forget(system_frame(), entry.inode)
        return out

    async def forget(self, frame: Any, inode: Inode) -> None:
        inode.ctx.pop(self, None)
        return await self.child.forget(frame, inode)

    def dump(self) -> dict[str, Any]:
        cached = sum(1 for i in self.itable if i.ctx.get(self) is not None)
        return dict(self.stats, timeout=self.timeout, inodes=cached)


def _invalidating(fop_name: str) -> Callable[..., Any]:
    removes = fop_name in NAME_REMOVING_FOPS

    async def fop(self: MdCache, frame: Any, *args: Any, **kwargs: Any) -> Any:
        ch = changes_of(fop_name, args, kwargs)
        victims = await self._unknown_victims(frame, ch) if removes else ()
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
    if _fop.name not in vars(MdCache):
        setattr(MdCache, _fop.name, _invalidating(_fop.name))
del _fop
