"""The FUSE client's state: the shared tables and reference counting
(``xlators.core.client.ClientState``) plus what INIT negotiated with the kernel and what
the mount's flags say.

Handlers are typed functions of ``(client, request, body)`` (``fuse_bridge.opcodes``): the
client is everything they read and change besides the request itself; the transport
(``fuse_bridge.session``) only reads, dispatches and replies.
"""
from __future__ import annotations

import resource
from typing import Any, Optional

from xlators.core.client import ClientState
from xlators.core.graph import Graph
from xlators.core.inode import InodeTable

from . import abi
from .encode import Timeouts, max_io
from .options import BridgeOptions
from .passthrough import Passthrough

_DONT_MASK = int(abi.InitFlag.DONT_MASK)
_WRITEBACK_CACHE = int(abi.InitFlag.WRITEBACK_CACHE)
_FOPEN_NOFLUSH = int(abi.FopenFlag.NOFLUSH)
NOFLUSH_MINOR = 35                     # the protocol minor that brought FOPEN_NOFLUSH


class FuseClient(ClientState):
    """One mount's client state."""

    def __init__(self, graph: Graph, opts: Optional[BridgeOptions] = None) -> None:
        opts = opts or BridgeOptions()
        # every storage leaf may hold a descriptor per inode (a mirror: two)
        leaves = sum(1 for xl in graph.xlators.values() if not xl.children)
        super().__init__(graph.top, graph=graph,
                         lru_limit=effective_lru_limit(opts.lru_limit, leaves))
        self.opts = opts
        self.timeouts = Timeouts(opts.entry_timeout, opts.attribute_timeout,
                                 opts.negative_timeout)
        # Negotiated by INIT (fuse_bridge.ops.init).
        self.initialized = False
        self.proto_minor = 0
        self.flags = 0                        # negotiated INIT flags (64-bit set)
        self.max_write = opts.max_write
        self.max_io = max_io(0, self.max_write)   # the most one READ/READDIR asks
        self.passthrough: Optional[Passthrough] = None
        # From the mount's flags (fuse_bridge.mount_watch).
        self.open_noatime = 0                 # O_NOATIME when the mount is noatime
        self.opendir_noatime = 0              # ... or nodiratime
        # Some translator implements lk: then POSIX and flock locks go to the graph.
        self.handles_locks = graph.handles_locks()
        # FOPEN_NOFLUSH for every OPEN/CREATE reply, or 0 (see fopen_noflush_for); each
        # open file records whether it got it (Fd.noflush: fuse_bridge.ops_file.release).
        self.fopen_noflush = 0
        # UNLINK, RMDIR, RENAME and RENAME2 requests served: the forgets that follow
        # one may be of files whose last name went (fuse_bridge.forget_backlog)
        self.removals = 0

    def negotiated(self, flags: int, proto_minor: int, max_write: int) -> None:
        """INIT's outcome."""
        self.flags = flags
        self.proto_minor = proto_minor
        self.max_write = max_write
        self.max_io = max_io(flags, max_write)
        self.initialized = True
        self.decide_flush()

    def set_graph(self, graph: Any, top: Any = None,
                  itable: Optional[InodeTable] = None) -> None:
        """ClientState.set_graph, and the FOPEN_NOFLUSH decision for the new graph."""
        super().set_graph(graph, top, itable)
        # (ClientState.__init__ calls this before this class's fields exist)
        if getattr(self, "initialized", False):
            self.decide_flush()

    def decide_flush(self) -> None:
        """Decide FOPEN_NOFLUSH for the opens from now on (``fopen_noflush_for``): at
        INIT, at a graph switch, and after a reconfigure in place (a translator's need
        may follow its options: debug/trace's fops, error-gen's and delay-gen's
        ``enable``).  Files open already keep what their open was told; RELEASE gives
        those opened with NOFLUSH one flush when the graph needs it now
        (:meth:`flush_at_release`)."""
        if self.initialized and self.graph is not None:
            self.fopen_noflush = self.fopen_noflush_for(self.graph)

    def fopen_noflush_for(self, graph: Graph) -> int:
        """FOPEN_NOFLUSH when the kernel may skip FLUSH on close for files of ``graph``:
        no translator needs it (``Graph.needs_flush``, which counts lock handling when this
        mount hands locks to the daemon: with POSIX_LOCKS the kernel releases a closing
        owner's locks only through FLUSH; a graph switched in later whose translators
        handle locks gets none while the kernel keeps them), the
        kernel knows the flag (7.35) and has no writeback cache (with it the kernel
        ignores NOFLUSH: FLUSH writes its dirty pages back first).  Else 0."""
        if (self.proto_minor < NOFLUSH_MINOR or self.flags & _WRITEBACK_CACHE
                or graph.needs_flush(locks=self.handles_locks)):
            return 0
        return _FOPEN_NOFLUSH

    def dump(self) -> dict[str, Any]:
        """ClientState's statedump lines, and whether close(2) sends FLUSH and why."""
        out = super().dump()
        graph = self.graph
        if not self.initialized or graph is None or graph.top is None:
            return out
        if self.fopen_noflush:
            out["flush"] = "skipped (FOPEN_NOFLUSH: no translator needs FLUSH)"
        elif self.proto_minor < NOFLUSH_MINOR:
            out["flush"] = f"sent (the kernel speaks 7.{self.proto_minor}, NOFLUSH is 7.35)"
        elif self.flags & _WRITEBACK_CACHE:
            out["flush"] = "sent (the kernel writeback cache ignores FOPEN_NOFLUSH)"
        else:
            needed_by = graph.flush_needed_by(locks=self.handles_locks)
            out["flush"] = "sent (needed by " + "; ".join(needed_by) + ")"
        pending = self.flush_at_release()
        if pending:
            out["flush-at-release"] = pending
        return out

    def flush_at_release(self) -> int:
        """How many open files get one flush at their RELEASE: opened with FOPEN_NOFLUSH
        (``Fd.noflush``; the kernel sends no FLUSH at their closes) while the graph now
        needs FLUSH (switched or reconfigured since).  Such a file's translators see one
        flush per open file rather than one per close(2), after its last close returned:
        an error the flush reports reaches no caller."""
        if self.fopen_noflush:
            return 0
        return sum(1 for fd in self.fds.values() if fd.noflush)

    def umask(self, umask: int) -> int:
        """The umask still to apply: 0 when the kernel applied it already (no DONT_MASK)."""
        return umask if self.flags & _DONT_MASK else 0


def effective_lru_limit(wanted: int, leaves: int = 1) -> int:
    """--lru-limit, kept below what the process may hold open: translators may keep a
    descriptor per inode (storage/posix does; ``leaves`` storage translators, as many),
    and the kernel keeps inodes it has looked up until told otherwise.  0 means no
    limit but that one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = hard if hard != resource.RLIM_INFINITY else soft
    cap = (max(1024, int(fds * 0.75) // max(1, leaves))
           if fds != resource.RLIM_INFINITY else 1 << 30)
    return min(wanted, cap) if wanted > 0 else cap
