"""``-L TRACE``: every FUSE request and its reply in the log, one line each.

    [..] T [xlfs.fuse.trace] R LOOKUP unique=4 nodeid=1 uid=0 gid=0 pid=812 len=48 name='f'
    [..] T [xlfs.fuse.trace] W LOOKUP unique=4 ok len=144 nodeid=2 generation=0 ...

The lines are :mod:`fuse_bridge.wire_text`'s (every field decoded, the reply named after
its request; file data and xattr values by length only).  :class:`TraceLog` has the
interface of :class:`fuse_bridge.dump.DumpWriter` (``record(direction, message)``,
``close()``), so the session feeds it exactly where it feeds a ``--dump-fuse`` recording;
:func:`recorder` gives the session what to use: a DumpWriter, a TraceLog, both, or None
(nothing is decoded or formatted unless TRACE is on).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from .wire_text import Conversation

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
log = logging.getLogger("xlfs.fuse.trace")


class TraceLog:
    """Formats each message at TRACE level, pairing replies with requests."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger
        self.conversation = Conversation()

    def record(self, direction: bytes, message: Any) -> None:
        try:
            line = self.conversation.message(direction, message)
        except Exception as exc:      # a trace line must never fail a request
            line = f"undecodable message of {len(message)} bytes: {type(exc).__name__}: {exc}"
        self.log.log(TRACE, "%s %s", direction.decode(), line)

    def close(self) -> None:
        pass


class Tee:
    """Several recorders fed the same messages."""

    def __init__(self, *recorders: Any) -> None:
        self.recorders = recorders

    def record(self, direction: bytes, message: Any) -> None:
        for r in self.recorders:
            r.record(direction, message)

    def close(self) -> None:
        for r in self.recorders:
            r.close()


def tracing() -> bool:
    return log.isEnabledFor(TRACE)


def recorder(dump_path: Optional[str]) -> Any:
    """What the session records messages to: a ``--dump-fuse`` file, the TRACE log, both,
    or None when neither is wanted."""
    from .dump import DumpWriter
    parts = ([DumpWriter(dump_path)] if dump_path else []) + ([TraceLog()] if tracing() else [])
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Tee(*parts)


def is_traced(rec: Any) -> bool:
    return isinstance(rec, TraceLog) or isinstance(rec, Tee) and any(
        isinstance(r, TraceLog) for r in rec.recorders)


def install(session: Any) -> None:
    """Add the TRACE log to a running session's recorder, when TRACE is on and the session
    does not trace already (a session built with :func:`recorder` does).  The daemon calls
    it when the log level is changed at run time (``.meta/logging``:
    :meth:`fuse_bridge.meta_host.BridgeHost.set_log_level`)."""
    if not tracing() or is_traced(session.dump):
        return
    session.dump = TraceLog() if session.dump is None else Tee(session.dump, TraceLog())
