"""The bridge as the ``.meta`` directory sees it: the :class:`xlators.core.host.Host` a
session hands to the graph it serves, and meta/meta loaded on top of every graph.

    graph = add_meta(graph)          # before init(): meta-autoload on top
    host = attach(session)           # graph.host = BridgeHost(session)

The host reads ``session.graph`` and the session's tables at each call, so it stays
right when the session's graph is replaced.  A new graph needs ``add_meta`` when it is
built (a graph switch that rebuilds ``graph.added_volumes`` on top does that); the host
is one of the graph's listeners, which move to the new graph, so meta/meta there finds
it (xlators.core.host.host_of).

Where a pending request waits: its reader task's chain of awaiting coroutines, read
without stopping anything (``cr_await`` links, and the coroutine a reader steps by hand);
the translators on it, from the top down, are where the request is, and the innermost
call below the last translator is what it waits on.  Fan-out tasks a translator started
(a mirror's children) are shown after it.
"""
from __future__ import annotations

import inspect
import logging
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Optional

import trio

from xlators.core.graph import Graph
from xlators.core.host import PendingRequest
from xlators.core.translator import Translator
from xlators.core.volfile import VolumeSpec

from . import abi

log = logging.getLogger("xlfs.fuse")

META_VOLUME = "meta-autoload"
META_TYPE = "meta/meta"
_DEPTH = 400          # bound on a coroutine chain walk


def add_meta(graph: Graph) -> Graph:
    """``graph`` with meta/meta on top (a new Graph, not yet initialised), unless the
    volfile placed one itself."""
    if any(xl.type == META_TYPE for xl in graph.xlators.values()):
        return graph
    volumes = list(graph.volumes) + [VolumeSpec(META_VOLUME, META_TYPE, {},
                                                [graph.volumes[-1].name])]
    with_meta = Graph(volumes, registry=graph.registry)
    with_meta.added_volumes = tuple(getattr(graph, "added_volumes", ())) + (META_VOLUME,)
    return with_meta


def attach(session: Any, *, version: str, levels: Mapping[str, int],
           state: Callable[[Any], dict]) -> "BridgeHost":
    """Make ``session`` the host of the graph it serves.  ``version``: the program's;
    ``levels``: log level names and values (-L's); ``state(session)``: the statedump's
    [fuse] section."""
    host = BridgeHost(session, version=version, levels=levels, state=state)
    session.graph.host = host
    session.graph.listeners.append(host)     # listeners follow a graph switch
    return host


class BridgeHost:
    """The session, as translators may see it (xlators.core.host.Host)."""

    def __init__(self, session: Any, *, version: str, levels: Mapping[str, int],
                 state: Callable[[Any], dict]) -> None:
        self.session = session
        self.version = version
        self.levels = dict(levels)
        self._state = state

    def __call__(self, event: Any, data: Any, source: Any) -> None:
        """A graph listener only to follow the session to a new graph."""

    # -- requests --------------------------------------------------------------------
    def pending_requests(self) -> list[PendingRequest]:
        s = self.session
        located = self._locate()
        now = time.monotonic()
        out = []
        for req in s.in_flight():
            unique = req.unique
            frame = req.frame
            where, waiting_on = located.get(unique, ((), ""))
            since = getattr(req, "waited_at", 0.0) or 0.0
            record = req.record
            out.append(PendingRequest(
                unique, abi.opcode_name(req.opcode), frame.pid if frame else 0,
                frame.uid if frame else 0, frame.gid if frame else 0, req.nodeid,
                max(0.0, now - since) if since else 0.0, where, waiting_on,
                bool(req.interrupted or (record is not None and record.hit))))
        out.sort(key=lambda r: -r.age)
        return out

    def _locate(self) -> dict[int, tuple[tuple[str, ...], str]]:
        """unique -> (translators from the top, what the innermost one awaits)."""
        nursery = getattr(self.session, "nursery", None)
        found: dict[int, tuple[tuple[str, ...], str]] = {}
        if nursery is None:
            return found
        from .session import Session
        # A request's frame: serve's while it is stepped, _finish's once it waits.
        request_codes = (Session.serve.__code__, Session._finish.__code__)
        stacks = [(_running_stack(), None)]          # the request reading .meta/frames
        stacks += [(_chain(task.coro), task) for task in list(nursery.child_tasks)]
        for frames, task in stacks:
            for i, fr in enumerate(frames):
                if fr.f_code in request_codes:
                    req = fr.f_locals.get("req")
                    if req is not None and req.unique not in found:
                        found[req.unique] = _where(frames[i + 1:], task)
                    break
        return found

    # -- state -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return self._state(self.session)

    def options(self) -> dict[str, Any]:
        return self.session.opts.as_dict()

    def cmdline(self) -> list[str]:
        return list(sys.argv)

    def direct_io(self) -> bool:
        return self.session.opts.direct_io_mode is not False     # --direct-io-mode=no

    # -- logging ---------------------------------------------------------------------
    def log_level(self) -> str:
        level = logging.getLogger().level
        for name, value in self.levels.items():
            if value == level:
                return name
        return logging.getLevelName(level)

    def set_log_level(self, name: str) -> None:
        from . import trace_log
        key = name.strip().upper()
        if key not in self.levels:
            raise ValueError(f"unknown log level {name!r}; known: {', '.join(self.levels)}")
        logging.getLogger().setLevel(self.levels[key])
        trace_log.install(self.session)      # TRACE: log every request from now on

    def entry_name(self, nodeid: int) -> Optional[tuple[int, bytes]]:
        got = self.session.client.lru.get(nodeid)    # (parent inode, name)
        return (got[0].nodeid, got[1]) if got is not None else None

    def log_file(self) -> Optional[str]:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                return handler.baseFilename
        return None

    # -- statedump -------------------------------------------------------------------
    async def statedump(self) -> str:
        """Formatted on the event loop (it reads the graph), written from a thread (the
        dump directory could be slow, or inside this very mount)."""
        from xlators.core.statedump import format_statedump, write_statedump_text
        text = format_statedump(self.session.graph, extra={"fuse": self.state()})
        path = await trio.to_thread.run_sync(write_statedump_text, text)
        log.info("statedump written to %s", path)
        return path


# -- where a request waits -------------------------------------------------------------
def _chain(coro: Any) -> list[Any]:
    """The frames of ``coro`` and of everything it awaits, outermost first."""
    frames = []
    obj = coro
    while obj is not None and len(frames) < _DEPTH:
        frame = (getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
                 or getattr(obj, "ag_frame", None))
        if frame is None:
            break
        frames.append(frame)
        nxt = getattr(obj, "cr_await", None)
        if nxt is None:
            nxt = getattr(obj, "gi_yieldfrom", None)
        if nxt is None:                       # readers._resume steps a coroutine by hand
            inner = frame.f_locals.get("coro")
            if inspect.iscoroutine(inner) and inner is not obj:
                nxt = inner
        obj = nxt
    return frames


def _running_stack() -> list[Any]:
    """The frames running now, outermost first (a running coroutine awaits nothing)."""
    frames = []
    fr = sys._getframe(1)
    while fr is not None and len(frames) < _DEPTH:
        frames.append(fr)
        fr = fr.f_back
    frames.reverse()
    return frames


def _translators(frames: Iterable[Any]) -> tuple[list[str], Any]:
    names: list[str] = []
    last = None
    for fr in frames:
        me = fr.f_locals.get("self")
        if isinstance(me, Translator):
            if not names or names[-1] != me.name:
                names.append(me.name)
            last = fr
    return names, last


def _describe(frame: Any) -> str:
    module = frame.f_globals.get("__name__", "?")
    name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
    return f"{module}.{name}"


def _where(frames: list[Any], task: Any) -> tuple[tuple[str, ...], str]:
    names, last = _translators(frames)
    waiting_on = ""
    if frames:
        idx = frames.index(last) if last is not None else -1
        below = frames[idx + 1:]
        if below:
            waiting_on = _describe(below[0])
        elif frames[-1] is not None:
            waiting_on = _describe(frames[-1])
    children = []
    for nursery in getattr(task, "child_nurseries", ()) if task is not None else ():
        for child in list(nursery.child_tasks):
            sub, sub_waiting = _where(_chain(child.coro), child)
            if sub:
                children.append(" > ".join(sub) + (f" ({sub_waiting})" if sub_waiting
                                                   else ""))
    if children:
        waiting_on = (waiting_on + "; " if waiting_on else "") + "tasks: " + " | ".join(
            children)
    return tuple(names), waiting_on
