"""FUSE passthrough: the kernel reads, writes and maps brick files itself (kernel 6.9+).

``--fuse-passthrough=auto|yes|no`` (also ``-o fuse-passthrough=...``; default auto):

- At INIT the bridge asks for ``FUSE_PASSTHROUGH`` (with ``max_stack_depth`` 1 in
  init_out: brick files must live on an unstacked filesystem) when the mode is not ``no``,
  the kernel offers the flag and the graph allows it (``Graph.passthrough_blocker``:
  every translator from the top down declares ``passes_data_through`` and the storage
  translator has local files).  ``yes`` fails the mount with one line otherwise.
- The kernel refuses passthrough together with its writeback cache.  With ``auto`` a
  ``--kernel-writeback-cache`` given explicitly wins (passthrough is not asked for, and
  the log says why); with ``yes`` passthrough wins and ``WRITEBACK_CACHE`` is not asked
  for (as libfuse's passthrough_hp does), logged as overridden.
- On OPEN and CREATE the graph is asked for the brick descriptor of the new fd
  (``Graph.passthrough_fd``).  The first passthrough open of an inode registers it
  with ``FUSE_DEV_IOC_BACKING_OPEN`` (the kernel keeps its own reference to the file and
  opens the brick path again with the caller's flags), the reply carries
  ``FOPEN_PASSTHROUGH`` and the backing id, later opens reuse the id, and the last
  RELEASE unregisters it with ``FUSE_DEV_IOC_BACKING_CLOSE``.
- A passthrough reply carries only the FOPEN flags the kernel allows with it (DIRECT_IO,
  PARALLEL_DIRECT_WRITES, NOFLUSH): a translator's ``keep_cache`` hint is dropped, as
  the kernel fails a passthrough open with any other flag (EIO).
- An open whose graph flags carry O_NOATIME (every open of a noatime mount, and a caller's
  own O_NOATIME) is served through the graph unless its inode already has a backing
  file: the kernel would open the brick file with the caller's flags, without the
  mount's noatime, and its reads would change the brick file's atime.
- The kernel's io modes: an inode is never open both cached and passthrough at once (a
  mismatched open fails with EIO in the kernel).  So an inode that has cached opens gets
  cached opens until they are released, and an inode with a backing file gets only
  passthrough opens (even if a graph switch made the graph refuse it since: until the
  inode's last release); ``FOPEN_DIRECT_IO`` (which the kernel lets override passthrough
  for read and write) opens take the inode's backing when it has one and no io mode else.
- mmap of a passthrough file maps the brick file (the kernel's backing-file mmap): reads
  and stores through a shared mapping never reach the daemon either.  FLUSH, FSYNC,
  RELEASE, SETATTR (truncate), locks and every metadata request still do.
- A registration the kernel refuses (not root, a stacked brick filesystem, ...) is logged
  once and that file is served through the graph: the fallback is per file.
- Why passthrough is off for the mount (``--fuse-passthrough=no``, the kernel, the volume
  that refuses it, the writeback cache) is logged at INIT and kept in the statedump's
  ``passthrough.declined`` (``.meta/root/private``), so a test or ``xlfsctl`` reads it
  from the running daemon; it is ``(none)`` while passthrough is on.
"""
from __future__ import annotations

import fcntl
import logging
import os
from typing import Any, Optional, Protocol

from . import abi

log = logging.getLogger("xlfs.fuse")

MAX_STACK_DEPTH = 1
MODES = ("auto", "yes", "no")
_PASSTHROUGH = int(abi.InitFlag.PASSTHROUGH)
_WRITEBACK = int(abi.InitFlag.WRITEBACK_CACHE)
_FOPEN_PASSTHROUGH = int(abi.FopenFlag.PASSTHROUGH)
_FOPEN_DIRECT_IO = int(abi.FopenFlag.DIRECT_IO)
_O_NOATIME = getattr(os, "O_NOATIME", 0)
# The only FOPEN flags the kernel accepts beside FOPEN_PASSTHROUGH (its
# FOPEN_PASSTHROUGH_MASK): any other (KEEP_CACHE from md-cache, say) fails the open
# with EIO.  The kernel's page cache of the inode is unused in passthrough anyway.
_PASSTHROUGH_MASK = int(abi.FopenFlag.PASSTHROUGH | abi.FopenFlag.DIRECT_IO
                        | abi.FopenFlag.PARALLEL_DIRECT_WRITES | abi.FopenFlag.NOFLUSH)


class PassthroughUnavailable(Exception):
    """``--fuse-passthrough=yes`` cannot be honoured; str() is one line for the user."""


class PassthroughSource(Protocol):
    """What passthrough asks: a Graph (the bridge), or a Translator (the top of a stack
    in tests); both declare these (xlators.core.graph, xlators.core.translator)."""

    def passthrough_blocker(self) -> Optional[str]: ...

    def passthrough_fd(self, fd: Any) -> Optional[int]: ...


def graph_check(mode: str, graph: PassthroughSource) -> Optional[str]:
    """Why ``graph`` cannot use passthrough, or None.  Raises PassthroughUnavailable for
    mode ``yes`` (called before mounting)."""
    if mode == "no":
        return None
    reason = graph.passthrough_blocker()
    if reason and mode == "yes":
        raise PassthroughUnavailable(f"--fuse-passthrough=yes: {reason}")
    return reason


class _Backing:
    __slots__ = ("id", "opens")

    def __init__(self, backing_id: int) -> None:
        self.id = backing_id
        self.opens = 0


class Passthrough:
    """Per-session passthrough state: negotiation, and the backing ids of open inodes."""

    def __init__(self, devfd: int, mode: str = "no") -> None:
        self.devfd = devfd
        self.mode = mode
        self.enabled = False
        self.failure = ""              # set when mode ``yes`` could not be honoured
        # why the mount does without passthrough (None while it is on): set at INIT
        self.declined: Optional[str] = "--fuse-passthrough=no" if mode == "no" else None
        self._backings: dict[int, _Backing] = {}      # nodeid -> registered brick file
        self._cached: dict[int, int] = {}             # nodeid -> cached-mode opens
        self._by_fh: dict[int, tuple[int, str]] = {}  # fh -> (nodeid, "pt" | "cached")
        self._refused_logged = False
        self.stats = {"opens": 0, "registered": 0, "refused": 0, "noatime_cached": 0}

    # -- INIT ----------------------------------------------------------------------------
    def negotiate(self, offered: int, wanted: int, graph: PassthroughSource,
                  writeback_asked: bool) -> int:
        """The INIT flags to ask for, given the kernel's offer and everything else the
        bridge wants.  Sets ``failure`` when mode ``yes`` cannot be met."""
        if self.mode == "no":
            return wanted
        if not offered & _PASSTHROUGH:
            return self._unavailable("the kernel does not offer FUSE_PASSTHROUGH "
                                     "(Linux 6.9+ built with CONFIG_FUSE_PASSTHROUGH)",
                                     wanted)
        reason = graph.passthrough_blocker()
        if reason:
            return self._unavailable(reason, wanted)
        if writeback_asked and self.mode == "auto":
            self.declined = ("--kernel-writeback-cache was asked for and the kernel does "
                             "not use both (--fuse-passthrough=yes prefers it)")
            log.info("FUSE passthrough not used: %s", self.declined)
            return wanted
        if writeback_asked:
            log.warning("FUSE passthrough: the kernel writeback cache is not used with it "
                        "(--kernel-writeback-cache overridden)")
        self.enabled = True
        self.declined = None
        return (wanted | _PASSTHROUGH) & ~_WRITEBACK

    def _unavailable(self, reason: str, wanted: int) -> int:
        self.declined = reason
        if self.mode == "yes":
            self.failure = f"--fuse-passthrough=yes: {reason}"
            log.error("%s", self.failure)
        else:
            log.info("FUSE passthrough not used: %s", reason)
        return wanted

    def settle(self, flags: int) -> None:
        """After INIT: passthrough is on only if the negotiated flags carry it."""
        self.enabled = bool(self.enabled and flags & _PASSTHROUGH)

    @property
    def max_stack_depth(self) -> int:
        return MAX_STACK_DEPTH if self.enabled else 0

    # -- OPEN / CREATE / RELEASE -------------------------------------------------------
    def on_open(self, graph: PassthroughSource, fd: Any, fh: int,
                flags: int) -> tuple[int, int]:
        """(FOPEN flags, backing id) for the OPEN/CREATE reply of ``fh``."""
        nodeid = fd.inode.nodeid
        backing = self._backings.get(nodeid)
        if flags & _FOPEN_DIRECT_IO and backing is None:
            return flags, 0               # no io mode in the kernel: nothing to track
        if backing is None and self._cached.get(nodeid):
            return self._cached_open(nodeid, fh, flags)
        if backing is None and fd.flags & _O_NOATIME:
            # The kernel opens the brick file again with the caller's own flags: the
            # O_NOATIME a noatime mount gives the graph's opens is not among them, and
            # passthrough reads would set the brick file's atime.
            self.stats["noatime_cached"] += 1
            return self._cached_open(nodeid, fh, flags)
        brick_fd = graph.passthrough_fd(fd)
        if brick_fd is None:
            if backing is None:
                return self._cached_open(nodeid, fh, flags)
            # The kernel fails a non-passthrough open of an inode that has a backing file
            # (EIO).  Only a graph switch makes the answer differ between two opens of one
            # inode: the inode's data keeps bypassing the graph until its last release.
            log.warning("OPEN of nodeid %d: the graph keeps this file's data now, but the "
                        "inode is open in passthrough: passthrough until its last close",
                        nodeid)
        elif backing is None:
            backing_id = self._register(brick_fd, nodeid)
            if backing_id is None:
                return self._cached_open(nodeid, fh, flags)
            backing = self._backings[nodeid] = _Backing(backing_id)
        backing.opens += 1
        self._by_fh[fh] = (nodeid, "pt")
        self.stats["opens"] += 1
        return (flags | _FOPEN_PASSTHROUGH) & _PASSTHROUGH_MASK, backing.id

    def _cached_open(self, nodeid: int, fh: int, flags: int) -> tuple[int, int]:
        if not flags & _FOPEN_DIRECT_IO:
            self._cached[nodeid] = self._cached.get(nodeid, 0) + 1
            self._by_fh[fh] = (nodeid, "cached")
        return flags, 0

    def _register(self, brick_fd: int, nodeid: int) -> Optional[int]:
        try:
            backing_id = self.backing_open(brick_fd)
        except OSError as exc:
            self.stats["refused"] += 1
            if not self._refused_logged:
                self._refused_logged = True
                log.warning("FUSE passthrough: the kernel refused brick file of nodeid %d "
                            "(%s); such files are served through the graph", nodeid,
                            exc.strerror or exc)
            return None
        self.stats["registered"] += 1
        return backing_id

    def on_release(self, fh: int) -> None:
        got = self._by_fh.pop(fh, None)
        if got is None:
            return
        nodeid, kind = got
        if kind == "cached":
            n = self._cached.get(nodeid, 0) - 1
            if n > 0:
                self._cached[nodeid] = n
            else:
                self._cached.pop(nodeid, None)
            return
        backing = self._backings.get(nodeid)
        if backing is None:
            return
        backing.opens -= 1
        if backing.opens <= 0:
            del self._backings[nodeid]
            try:
                self.backing_close(backing.id)
            except OSError as exc:
                log.warning("FUSE passthrough: closing backing id %d of nodeid %d: %s",
                            backing.id, nodeid, exc.strerror or exc)

    # -- the device ioctls (tests replace these two) -----------------------------------
    def backing_open(self, brick_fd: int) -> int:
        return _ioctl_int(self.devfd, abi.FUSE_DEV_IOC_BACKING_OPEN,
                          abi.BACKING_MAP.pack(brick_fd, 0))

    def backing_close(self, backing_id: int) -> None:
        _ioctl_int(self.devfd, abi.FUSE_DEV_IOC_BACKING_CLOSE,
                   abi.pack_u32(backing_id))

    def dump(self) -> dict[str, Any]:
        return {"mode": self.mode, "enabled": self.enabled, "declined": self.declined,
                "open_backings": len(self._backings), **self.stats}


def _ioctl_int(fd: int, request: int, arg: bytes) -> int:
    """ioctl returning its int result (fcntl.ioctl with a bytes argument returns the
    buffer, not the value: pass a mutable buffer and read the return value instead)."""
    buf = bytearray(arg)
    return fcntl.ioctl(fd, request, buf, True)
