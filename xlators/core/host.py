"""What the process serving a graph lets translators see of itself.

A translator never imports the FUSE bridge.  Some of them (meta/meta, the ``.meta``
directory) still show what only the bridge knows: the requests in flight, its inode and
fd tables, its options, the log level.  The bridge hands a :class:`Host` to the graph it
serves: ``graph.host``, and the host is also one of ``graph.listeners`` (it ignores the
events), because listeners move to a graph that replaces this one (a graph switch), so
the host follows.  A translator asks :func:`host_of` at each access (None in the test
harness, or when nobody set one).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Protocol, Sequence, runtime_checkable


def host_of(graph: Any) -> Optional["Host"]:
    """The host serving ``graph``: ``graph.host``, else the one among its listeners."""
    if graph is None:
        return None
    host = getattr(graph, "host", None)
    if host is not None:
        return host
    for listener in getattr(graph, "listeners", ()):
        if isinstance(listener, Host):
            return listener
    return None


class PendingRequest(NamedTuple):
    """One request in flight, as the host sees it."""
    unique: int
    opcode: str                  # the kernel's name for it: "LOOKUP", "SETLKW", ...
    pid: int
    uid: int
    gid: int
    nodeid: int
    age: float                   # seconds since it began to wait (0.0: it never waited)
    where: tuple[str, ...]       # volume names from the top down to where it waits
    waiting_on: str              # the innermost call it awaits ("trio.sleep"), or ""
    interrupted: bool            # the kernel sent an INTERRUPT for it


@runtime_checkable
class Host(Protocol):
    """The serving process (the FUSE bridge), as translators may see it."""

    #: the program's version text ("0.1.0")
    version: str

    def pending_requests(self) -> Sequence[PendingRequest]:
        """Every request in flight now, oldest first."""

    def state(self) -> dict[str, Any]:
        """The host's own state (statedump's ``[fuse]`` section): its options, inode
        and fd table sizes, interrupt and request counters."""

    def options(self) -> dict[str, Any]:
        """The host's options (the bridge's command-line options), by name."""

    def cmdline(self) -> list[str]:
        """The command line the process was started with."""

    def log_level(self) -> str:
        """The log level's name: TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL or NONE."""

    def set_log_level(self, name: str) -> None:
        """Change the log level (a name as above, any case); ValueError when unknown."""

    def entry_name(self, nodeid: int) -> Optional[tuple[int, bytes]]:
        """``(parent nodeid, name)`` under which the kernel last received ``nodeid``, or
        None when the host does not know."""

    def log_file(self) -> Optional[str]:
        """The log file's path, or None when logging goes to a terminal."""

    def direct_io(self) -> bool:
        """Whether an open's ``direct_io`` hint is honoured (False: the kernel caches
        file data and reads no further than the size it was told)."""

    async def statedump(self) -> str:
        """Write a statedump (graph and host state); returns its path."""

    def __call__(self, event: Any, data: Any, source: Any) -> None:
        """As a graph listener: events are not the host's business."""
