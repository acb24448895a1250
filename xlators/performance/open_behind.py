"""performance/open-behind: answer read-only opens at once, open below only when needed.

    volume open-behind
        type performance/open-behind
        option lazy-open on
        subvolumes posix
    end-volume

An ``open`` for reading only (O_RDONLY without O_TRUNC) is answered at once; the child
sees the open only when a fop needs the file descriptor (a read, fsync, lock, seek,
xattr or data fop on that fd: every fop of the fop table with an fd parameter except the
ones below).  Files opened and closed without reading (a page-cache hit, a stat of an open
file, `file(1)`-style probes that only fstat) never cost the child an open and a release.

What keeps POSIX semantics:

- before an ``unlink``, ``rmdir`` or ``rename`` that removes or replaces a name (the
  modifying fops of the fop table that make no new entry), the deferred opens of the
  inode that name holds are made, so the file stays readable through the descriptors
  opened before it was removed: GlusterFS lost data exactly here (an open the brick never
  saw, a delete that then really deleted, ESTALE on the next read: gluster/glusterfs
  issue 3785).  Finding that inode costs one lookup below, and only while some open is
  deferred;
- the open is made with the frame of the caller who opened (same credentials), and
  its error is given to the fop that needed it (and every later one tries again);
- before a ``setattr`` that changes the mode, owner or group, and a ``setxattr`` or
  ``removexattr`` of the access ACL, the deferred opens of that inode are made: an
  open that was allowed stays usable after a ``chmod 000`` (POSIX checks permissions at
  open), which a deferred open made later, with the opener's credentials, would not be;
- opens that write or truncate, and every open when ``lazy-open`` is off, are not
  deferred: with ``lazy-open off`` the open is made in the background at once (the caller
  is answered without waiting) and fops on the fd wait for it;
- ``getattr`` with a deferred fd (fstat) is wound by inode; ``flush`` of a deferred fd
  is answered here while no fd of the file is open below (then no POSIX lock can be
  held: a lock needs an fd, which opens it), else the fd is opened and the flush wound
  (closing any fd drops the caller's locks on the file); ``release`` of a deferred fd is
  not wound;
- the permission check of the open is the kernel's (the bridge mounts with
  default_permissions by default); without it, a caller other than root has its open
  checked with ``access`` (R_OK) before it is answered.

Not kept: hints the child would set on the fd when opened (``Fd.open_flags``:
``direct_io``, ``keep_cache``) cannot reach the kernel from a deferred open.  Options kept
for GlusterFS compatibility: ``use-anonymous-fd`` (xlfs has no anonymous fds: a fop on a
deferred fd always opens it, as with ``use-anonymous-fd off``) and ``read-after-open``
(a read on a deferred fd opens it first, as with ``read-after-open on``).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import trio

from ..core.fops import FOPS
from ..core.frame import system_frame
from ..core.inode import Fd, Inode, Loc
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Entry
from .fop_targets import NAME_REMOVING_FOPS, bind, changes_of

_FD_PARAMS = ("fd", "fd_in", "fd_out")
#: Fops handled by hand (not "open the fd, then wind").
_OWN = frozenset({"open", "flush", "release", "getattr", "forget", "setattr"})
_ACL_XATTRS = (b"system.posix_acl_access", "system.posix_acl_access")


def _is_acl(name: Any) -> bool:
    """An xattr that changes who may open the file (its access ACL)."""
    return name in _ACL_XATTRS


class Deferred:
    """One fd whose open has not reached the child (yet)."""
    __slots__ = ("fd", "frame", "flags", "opened", "lock", "error", "task", "released")

    def __init__(self, fd: Fd, frame: Any, flags: int) -> None:
        self.fd = fd
        self.frame = frame
        self.flags = flags
        self.opened = False
        self.lock = trio.Lock()
        self.error: Optional[BaseException] = None
        self.task = False
        self.released = False


class InodeFds:
    """open-behind's record of one inode: its deferred fds, and how many of its fds are
    open below (a POSIX lock can only be held while one is)."""
    __slots__ = ("deferred", "opened")

    def __init__(self) -> None:
        self.deferred: set[Deferred] = set()
        self.opened = 0


class OpenBehind(Translator):
    """performance/open-behind: answer read-only opens at once, open below when needed."""
    type = "performance/open-behind"
    children_range = (1, 1)
    # its flush matters only to a lock translator below, which brings FLUSH itself
    needs_flush = False
    options = (
        Option.bool("lazy-open", default=True,
                    description="Open below only when a fop needs the fd; when off, the "
                                "open is made in the background at once."),
        Option.bool("read-after-open", default=True,
                    description="Accepted for compatibility: a read on a deferred fd "
                                "always opens it first."),
        Option.bool("use-anonymous-fd", default=False,
                    description="Accepted for compatibility: xlfs has no anonymous fds."),
        Option.bool("pass-through", default=False,
                    description="Defer nothing: every open goes to the child."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pending = 0               # deferred fds not opened below yet
        self.stats = dict(deferred=0, opened_later=0, never_opened=0, forced_by_unlink=0,
                          forced_by_permission_change=0)

    # -- deferral -----------------------------------------------------------------------
    def _deferrable(self, flags: int) -> bool:
        return (not self.opts.pass_through and flags & os.O_ACCMODE == os.O_RDONLY
                and not flags & os.O_TRUNC)

    def _fds(self, inode: Inode) -> InodeFds:
        rec = inode.ctx.get(self)
        if rec is None:
            rec = inode.ctx[self] = InodeFds()
        return rec

    def _settle(self, inode: Inode) -> None:
        rec = inode.ctx.get(self)
        if rec is not None and not rec.deferred and not rec.opened:
            inode.ctx.pop(self, None)

    async def open(self, frame: Any, inode: Inode, flags: int, fd: Fd) -> None:
        if not self._deferrable(flags):
            await self.child.open(frame, inode, flags, fd)
            d = Deferred(fd, frame, flags)
            d.opened = True
            fd.ctx[self] = d
            self._fds(inode).opened += 1
            return None
        if frame.uid != 0:
            await self.child.access(frame, inode, os.R_OK)
        d = Deferred(fd, frame, flags)
        fd.ctx[self] = d
        self._fds(inode).deferred.add(d)
        self.pending += 1
        self.stats["deferred"] += 1
        if not self.opts.lazy_open:
            try:
                self.spawn(self._open_now, d)
                d.task = True
            except RuntimeError:                 # no nursery: open here and now
                await self._open_now(d)
        return None

    async def _open_now(self, d: Deferred) -> None:
        try:
            await self._ensure_open(d)
        except Exception:  # noqa: BLE001 - recorded; the next fop on the fd reports it
            pass

    async def _ensure_open(self, d: Deferred) -> None:
        if d.opened:
            return
        async with d.lock:
            if d.opened or d.released:
                return
            try:
                await self.child.open(d.frame, d.fd.inode, d.flags, d.fd)
            except BaseException as exc:
                d.error = exc
                raise
            d.opened = True
            d.error = None
            self.pending -= 1
            self.stats["opened_later"] += 1
            rec = self._fds(d.fd.inode)
            rec.deferred.discard(d)
            rec.opened += 1

    async def _need(self, fd: Any) -> None:
        d = fd.ctx.get(self) if isinstance(fd, Fd) else None
        if d is not None and not d.opened:
            await self._ensure_open(d)

    async def _open_all(self, inode: Any, why: str = "forced_by_unlink") -> None:
        """Make the deferred opens of ``inode`` before a change that could stop them
        (a removal, a permission change).  An open that fails is its own opener's
        error, kept for that fd's next fop: the change goes on."""
        rec = inode.ctx.get(self) if isinstance(inode, Inode) else None
        for d in list(rec.deferred) if rec is not None else ():
            try:
                await self._ensure_open(d)
            except OSError as exc:
                self.log.debug("%s: deferred open of inode %s failed before %s: %s",
                               self.name, inode.ino, why, exc)
                continue
            self.stats[why] += 1

    # -- fops handled by hand -----------------------------------------------------------
    async def getattr(self, frame: Any, inode: Inode, fd: Any = None) -> Any:
        d = fd.ctx.get(self) if isinstance(fd, Fd) else None
        if d is not None and not d.opened:
            return await self.child.getattr(frame, inode, None)
        return await self.child.getattr(frame, inode, fd)

    async def flush(self, frame: Any, fd: Any) -> None:
        d = fd.ctx.get(self) if isinstance(fd, Fd) else None
        if d is not None and not d.opened:
            rec = fd.inode.ctx.get(self)
            if rec is None or not rec.opened:
                return None            # nothing below to flush, no lock to drop
            # closing any fd drops the caller's POSIX locks on the file, taken through
            # another fd that is open below: the flush must reach the locks
            await self._ensure_open(d)
        return await self.child.flush(frame, fd)

    # -- permission changes: the deferred opens were allowed when they were answered --
    async def setattr(self, frame: Any, inode: Inode, changes: Any, fd: Any = None) -> Any:
        if self.pending:
            await self._need(fd)
            if changes.mode is not None or changes.uid is not None \
                    or changes.gid is not None:
                await self._open_all(inode, "forced_by_permission_change")
        return await self.child.setattr(frame, inode, changes, fd)

    async def setxattr(self, frame: Any, inode: Inode, name: bytes, value: bytes,
                       flags: int) -> None:
        if self.pending and _is_acl(name):
            await self._open_all(inode, "forced_by_permission_change")
        return await self.child.setxattr(frame, inode, name, value, flags)

    async def removexattr(self, frame: Any, inode: Inode, name: bytes) -> None:
        if self.pending and _is_acl(name):
            await self._open_all(inode, "forced_by_permission_change")
        return await self.child.removexattr(frame, inode, name)

    async def release(self, frame: Any, fd: Any) -> None:
        d = fd.ctx.pop(self, None) if isinstance(fd, Fd) else None
        if d is not None and not d.opened:
            d.released = True
            async with d.lock:         # an open under way (lazy-open off) finishes first
                pass
        if d is None:
            return await self.child.release(frame, fd)
        rec = self._fds(fd.inode)
        if d.opened:
            rec.opened -= 1
            self._settle(fd.inode)
            return await self.child.release(frame, fd)
        self.pending -= 1
        self.stats["never_opened"] += 1
        rec.deferred.discard(d)
        self._settle(fd.inode)
        return None

    async def _victims(self, frame: Any, args: tuple, kwargs: dict, fop: str) -> None:
        """Open what is deferred on the inodes the names this fop removes hold."""
        if not self.pending:
            return
        for parent, name in changes_of(fop, args, kwargs).names:
            try:
                entry = await self.child.lookup(frame, Loc(parent, name))
            except OSError:
                continue
            if not isinstance(entry, Entry):
                continue
            rec = entry.inode.ctx.get(self)
            if rec is not None and rec.deferred:
                await self._open_all(entry.inode)
            elif self.itable.purge(entry.inode):
                await self.child.forget(system_frame(), entry.inode)

    def dump(self) -> dict[str, Any]:
        return dict(self.stats, pending=self.pending)


def _opening(fop_name: str, fd_params: tuple[str, ...]) -> Callable[..., Any]:
    fop_def = next(f for f in FOPS if f.name == fop_name)

    async def fop(self: OpenBehind, frame: Any, *args: Any, **kwargs: Any) -> Any:
        if self.pending:
            params = bind(fop_def, args, kwargs)
            for p in fd_params:
                await self._need(params.get(p))
        return await getattr(self.child, fop_name)(frame, *args, **kwargs)
    fop.__name__ = fop.__qualname__ = fop_name
    fop.__doc__ = f"{fop_name}: make a deferred open of its fd first, then wind."
    return fop


def _removing(fop_name: str) -> Callable[..., Any]:
    async def fop(self: OpenBehind, frame: Any, *args: Any, **kwargs: Any) -> Any:
        await self._victims(frame, args, kwargs, fop_name)
        return await getattr(self.child, fop_name)(frame, *args, **kwargs)
    fop.__name__ = fop.__qualname__ = fop_name
    fop.__doc__ = f"{fop_name}: make the deferred opens of the inode it unlinks first."
    return fop


for _f in FOPS:
    _fds = tuple(p for p in _f.param_names if p in _FD_PARAMS)
    if _f.name in _OWN:
        continue
    if _fds:
        setattr(OpenBehind, _f.name, _opening(_f.name, _fds))
    elif _f.name in NAME_REMOVING_FOPS:
        setattr(OpenBehind, _f.name, _removing(_f.name))
del _f, _fds
