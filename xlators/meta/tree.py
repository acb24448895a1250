"""The ``.meta`` tree: what each directory holds and what each file says.

The shape is GlusterFS's (xlators/meta/src), plus what xlfs adds (marked +)::

    .meta/
      version            the program's version
      cmdline            the command line
      process_uuid       host-pid-start time
      measure_latency    0 or 1, writable: 1 starts per-translator profiling from zero
      frames             the requests in flight (JSON): opcode, unique, pid, age, where
      + top              per-file counters while profiling (``xlfsctl top``)
      + statedump        writable: a write makes a statedump; a read gives its path
      logging/loglevel   writable: TRACE DEBUG INFO WARNING ERROR CRITICAL NONE
      logging/logfile    -> the log file (when there is one)
      root/              the bridge (GlusterFS's fuse translator): type, name,
                         options/KEY, private (inode and fd tables, counters)
      graphs/active/     the graph serving requests (GlusterFS: a link to graphs/ID)
      graphs/ID          -> active (the graph's id, graph-N)
      graphs/active/top  -> the top volume's name
      graphs/active/volfile  the graph as a volfile (command-line volumes included)
      graphs/active/NAME/  one per volume: type, name, options/KEY, subvolumes/N ->
                         ../../CHILD, private (its statedump section), profile,
                         + state (up, down, connecting: what it last told its parents),
                         view/ (empty, as in GlusterFS)

A directory's entries and a file's text are computed when asked: a graph that changed
since, or profiling that started, shows at the next lookup.  In ``graphs/active/`` the
fixed entries win: a volume named ``top`` or ``volfile`` is hidden (as in GlusterFS).

``graphs/active`` is a directory, where GlusterFS has a link to ``graphs/ID``: the
kernel keeps a link's text for as long as it holds the inode, and a graph switch keeps
the kernel's inodes (found again by name), so a link would name the old graph for ever.
A directory always shows the graph that serves now; the paths below it are the same.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any, Awaitable, Callable, Optional

from ..core.host import host_of
from ..core.statedump import format_value, option_texts

FIXED_GRAPH_ENTRIES = ("top", "volfile")

_GF_LEVELS = {0: "NONE", 1: "CRITICAL", 2: "CRITICAL", 3: "CRITICAL", 4: "ERROR",
              5: "WARNING", 6: "INFO", 7: "INFO", 8: "DEBUG", 9: "TRACE"}
_LOCAL_LEVELS = {"TRACE": 5, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
                 "WARNING": logging.WARNING, "ERROR": logging.ERROR,
                 "CRITICAL": logging.CRITICAL, "NONE": logging.CRITICAL + 10}


class Node:
    """One name under ``.meta``; ``path`` is its names from ``.meta`` down."""
    __slots__ = ("path",)
    kind = ""

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path


class Dir(Node):
    __slots__ = ("entries",)
    kind = "dir"

    def __init__(self, path: tuple[str, ...], entries: Callable[[], dict[str, Node]]) -> None:
        super().__init__(path)
        self.entries = entries


class File(Node):
    """``fill()`` gives the text; ``write(data, fdstate)`` (async) makes it writable."""
    __slots__ = ("fill", "write")
    kind = "file"

    def __init__(self, path: tuple[str, ...], fill: Callable[[], str],
                 write: Optional[Callable[[bytes, Any], Awaitable[None]]] = None) -> None:
        super().__init__(path)
        self.fill = fill
        self.write = write


class Link(Node):
    __slots__ = ("target",)
    kind = "link"

    def __init__(self, path: tuple[str, ...], target: Callable[[], str]) -> None:
        super().__init__(path)
        self.target = target


def _kv(values: dict[str, Any]) -> str:
    return "".join(f"{k}={format_value(v)}\n" for k, v in values.items())


class MetaTree:
    """Builds the nodes of one meta translator's ``.meta``."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta
        self.started = time.time()

    # -- helpers -----------------------------------------------------------------------
    @property
    def host(self) -> Any:
        return host_of(self.meta.graph)

    def root(self) -> Dir:
        return Dir((), self._root_entries)

    def _root_entries(self) -> dict[str, Node]:
        p: tuple[str, ...] = ()
        host = self.host
        out: dict[str, Node] = {
            "graphs": Dir(p + ("graphs",), self._graphs_entries),
            "frames": File(p + ("frames",), self._frames),
            "logging": Dir(p + ("logging",), self._logging_entries),
            "process_uuid": File(p + ("process_uuid",), lambda: (
                f"{socket.gethostname()}-{os.getpid()}-"
                f"{time.strftime('%Y/%m/%d-%H:%M:%S', time.localtime(self.started))}\n")),
            "version": File(p + ("version",), lambda: (
                f"{getattr(self.host, 'version', None) or 'unknown'}\n")),
            "cmdline": File(p + ("cmdline",), lambda: " ".join(
                self.host.cmdline() if self.host is not None else sys.argv) + "\n"),
            "root": Dir(p + ("root",), self._bridge_entries),
            "measure_latency": File(p + ("measure_latency",), self._measure_fill,
                                    self._measure_write),
            "top": File(p + ("top",), lambda: "\n".join(
                self.meta.profiler.files_lines(self._name_of())) + "\n"),
            "statedump": File(p + ("statedump",), self._statedump_fill,
                              self._statedump_write),
        }
        if host is None:
            del out["root"]
        return out

    def _name_of(self) -> Any:
        host = self.host
        return getattr(host, "entry_name", None) if host is not None else None

    # -- graphs ------------------------------------------------------------------------
    def _graphs_entries(self) -> dict[str, Node]:
        gid = self.meta.graph_id
        return {"active": Dir(("graphs", "active"), self._graph_entries),
                gid: Link(("graphs", gid), lambda: "active")}

    def _graph_entries(self) -> dict[str, Node]:
        graph = self.meta.graph
        base = ("graphs", "active")
        out: dict[str, Node] = {}
        for xl in self.meta.graph_xlators():
            if xl.name not in out:
                out[xl.name] = self._xlator_dir(base + (xl.name,), xl)
        top = graph.top.name if graph is not None else self.meta.name
        out["top"] = Link(base + ("top",), lambda: top)
        if graph is not None:
            from ..core.volfile import format_volfile
            out["volfile"] = File(base + ("volfile",), lambda: format_volfile(graph.volumes))
        return out

    def _xlator_dir(self, p: tuple[str, ...], xl: Any) -> Dir:
        def entries() -> dict[str, Node]:
            return {
                "type": File(p + ("type",), lambda: f"{xl.type}\n"),
                "name": File(p + ("name",), lambda: f"{xl.name}\n"),
                "options": Dir(p + ("options",), lambda: self._options_entries(p, xl)),
                "subvolumes": Dir(p + ("subvolumes",),
                                  lambda: self._subvolumes_entries(p, xl)),
                "private": File(p + ("private",), lambda: _kv(_private(xl))),
                "profile": File(p + ("profile",), lambda: "\n".join(
                    self.meta.profiler.profile_lines(xl.name)) + "\n"),
                "state": File(p + ("state",), lambda: f"{self.meta.state_of(xl)}\n"),
                "view": Dir(p + ("view",), dict),
            }
        return Dir(p, entries)

    def _options_entries(self, p: tuple[str, ...], xl: Any) -> dict[str, Node]:
        values = option_texts(xl)
        for key, value in getattr(xl, "given_options", {}).items():
            values.setdefault(key, value)          # unknown keys, as given
        base = p + ("options",)
        return {k: File(base + (k,), (lambda v=v: f"{v}\n")) for k, v in values.items()
                if k and "/" not in k}

    def _subvolumes_entries(self, p: tuple[str, ...], xl: Any) -> dict[str, Node]:
        base = p + ("subvolumes",)
        return {str(i): Link(base + (str(i),), (lambda c=c: f"../../{c.name}"))
                for i, c in enumerate(xl.children)}

    # -- the bridge (root/) --------------------------------------------------------------
    def _bridge_entries(self) -> dict[str, Node]:
        p = ("root",)

        def options() -> dict[str, Node]:
            host = self.host
            opts = host.options() if host is not None else {}
            return {k: File(p + ("options", k), (lambda v=v: f"{format_value(v)}\n"))
                    for k, v in opts.items() if "/" not in k}

        return {
            "type": File(p + ("type",), lambda: "mount/fuse\n"),
            "name": File(p + ("name",), lambda: "fuse\n"),
            "options": Dir(p + ("options",), options),
            "private": File(p + ("private",), lambda: _kv(
                self.host.state() if self.host is not None else {})),
            "view": Dir(p + ("view",), dict),
        }

    # -- logging -------------------------------------------------------------------------
    def _logging_entries(self) -> dict[str, Node]:
        out: dict[str, Node] = {
            "loglevel": File(("logging", "loglevel"), self._loglevel_fill,
                             self._loglevel_write)}
        host = self.host
        path = host.log_file() if host is not None else None
        if path:
            out["logfile"] = Link(("logging", "logfile"), lambda: path)
        return out

    def _loglevel_fill(self) -> str:
        host = self.host
        if host is not None:
            return f"{host.log_level()}\n"
        level = logging.getLogger().level
        names = {v: k for k, v in _LOCAL_LEVELS.items()}
        return f"{names.get(level, logging.getLevelName(level))}\n"

    async def _loglevel_write(self, data: bytes, fdstate: Any) -> None:
        text = data.decode(errors="replace").strip()
        if text.isdigit():                  # GlusterFS's numbers (GF_LOG_NONE .. TRACE)
            text = _GF_LEVELS.get(int(text), text)
        host = self.host
        if host is not None:
            host.set_log_level(text)        # ValueError: EINVAL
        elif text.upper() in _LOCAL_LEVELS:
            logging.getLogger().setLevel(_LOCAL_LEVELS[text.upper()])
        else:
            raise ValueError(text)
        self.meta.log.info("log level set to %s through %s/logging/loglevel", text.upper(),
                           self.meta.dir_name)

    # -- profiling ------------------------------------------------------------------------
    def _measure_fill(self) -> str:
        return f"{1 if self.meta.profiler.on else 0}\n"

    async def _measure_write(self, data: bytes, fdstate: Any) -> None:
        text = data.decode(errors="replace").strip().lower()
        try:
            on = int(text, 0) != 0
        except ValueError:
            if text in ("on", "yes", "true", "start"):
                on = True
            elif text in ("off", "no", "false", "stop"):
                on = False
            else:
                raise
        self.meta.set_profiling(on)

    # -- frames ---------------------------------------------------------------------------
    def _frames(self) -> str:
        host = self.host
        pending = list(host.pending_requests()) if host is not None else []
        requests = [{"unique": r.unique, "opcode": r.opcode, "pid": r.pid, "uid": r.uid,
                     "gid": r.gid, "nodeid": r.nodeid, "age_s": round(r.age, 6),
                     "where": list(r.where), "waiting_on": r.waiting_on,
                     "interrupted": r.interrupted} for r in pending]
        return json.dumps({"requests": requests, "count": len(requests)}, indent=1) + "\n"

    # -- statedump ------------------------------------------------------------------------
    def _statedump_fill(self) -> str:
        last = self.meta.last_statedump
        return f"{last}\n" if last else ""

    async def _statedump_write(self, data: bytes, fdstate: Any) -> None:
        host = self.host
        if host is not None:
            path = await host.statedump()
        else:
            import trio
            from ..core.statedump import format_statedump, write_statedump_text
            text = format_statedump(self.meta.graph)
            path = await trio.to_thread.run_sync(write_statedump_text, text)
        self.meta.last_statedump = path
        fdstate.content = f"{path}\n".encode()


def _private(xl: Any) -> dict[str, Any]:
    try:
        return dict(xl.dump())
    except Exception as exc:     # a view must not fail because one translator does
        return {"dump-error": f"{type(exc).__name__}: {exc}"}
