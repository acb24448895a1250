"""Per-translator profiling for meta/meta (GlusterFS's ``measure_latency`` and each
translator's ``profile`` file), and per-file counters for ``xlfsctl top``.

When profiling starts, every translator of the graph gets, for every fop, an instance
attribute that shadows its class's method: it counts the call, its failures, the bytes
of readv/writev and the latency (``perf_counter_ns`` around the call, so a translator's
numbers include everything below it, as in GlusterFS).  Stopping deletes the attributes:
with profiling off nothing is wrapped and nothing costs.  A parent that kept a bound
method of its child from before the start (none of the shipped translators does) bypasses
the count of that child.

The top translator (meta itself) also counts opens, reads and writes per file, and keeps
the names it saw in lookups and readdirp replies to show the files as paths.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from time import perf_counter_ns
from typing import Any, Callable, Iterable, Optional

from ..core.fops import FOPS, Fop
from ..core.inode import ROOT_NODEID

#: At most this many files are counted and named (the oldest are dropped).
MAX_FILES = 65536


class FopCounts:
    """The numbers of one fop in one translator."""
    __slots__ = ("count", "errors", "bytes", "lat_total", "lat_min", "lat_max")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.bytes = 0
        self.lat_total = 0
        self.lat_min = 0
        self.lat_max = 0

    def timed(self, ns: int) -> None:
        if self.lat_min == 0 or ns < self.lat_min:
            self.lat_min = ns
        if ns > self.lat_max:
            self.lat_max = ns
        self.lat_total += ns


def _wrapper(counts: FopCounts, method: Callable[..., Any], fop: Fop) -> Callable[..., Any]:
    data_in = bool(fop.data_in)
    data_out = fop.data_out

    async def profiled(frame: Any, *args: Any, **kwargs: Any) -> Any:
        counts.count += 1
        t0 = perf_counter_ns()
        try:
            result = await method(frame, *args, **kwargs)
        except BaseException:
            counts.errors += 1
            raise
        finally:
            counts.timed(perf_counter_ns() - t0)
        if data_in and type(result) is int:
            counts.bytes += result
        elif data_out and isinstance(result, (bytes, bytearray, memoryview)):
            counts.bytes += len(result)
        return result
    profiled.__name__ = fop.name
    return profiled


class FileCounts:
    __slots__ = ("opens", "reads", "read_bytes", "writes", "write_bytes")

    def __init__(self) -> None:
        self.opens = self.reads = self.read_bytes = self.writes = self.write_bytes = 0


class Profiler:
    """Profiling of one graph's translators; ``on`` says whether it runs."""

    def __init__(self) -> None:
        self.on = False
        self.since = time.time()
        self.counts: dict[str, dict[str, FopCounts]] = {}
        self._wrapped: list[Any] = []
        self.files: "OrderedDict[int, FileCounts]" = OrderedDict()
        self.names: "OrderedDict[int, tuple[int, bytes]]" = OrderedDict()

    def start(self, xlators: Iterable[Any]) -> None:
        """Count from zero, every translator of ``xlators`` (restarting when on)."""
        self.stop()
        self.on = True
        self.since = time.time()
        self.counts = {}
        self.files.clear()
        self.names.clear()
        for xl in xlators:
            per_fop = self.counts[xl.name] = {}
            for fop in FOPS:
                c = per_fop[fop.name] = FopCounts()
                setattr(xl, fop.name, _wrapper(c, getattr(xl, fop.name), fop))
            self._wrapped.append(xl)

    def stop(self) -> None:
        """Unwrap every translator; the numbers stay readable until the next start."""
        for xl in self._wrapped:
            for fop in FOPS:
                xl.__dict__.pop(fop.name, None)
        self._wrapped = []
        self.on = False

    # -- per file ----------------------------------------------------------------------
    def named(self, nodeid: int, parent: int, name: bytes) -> None:
        """``nodeid`` was seen as ``name`` in directory ``parent``."""
        names = self.names
        names[nodeid] = (parent, name)
        names.move_to_end(nodeid)
        if len(names) > MAX_FILES:
            names.popitem(last=False)

    def file(self, nodeid: int) -> FileCounts:
        f = self.files.get(nodeid)
        if f is None:
            f = self.files[nodeid] = FileCounts()
            if len(self.files) > MAX_FILES:
                self.files.popitem(last=False)
        return f

    def path(self, nodeid: int, name_of: Optional[Callable[[int], Any]] = None) -> str:
        """The path of ``nodeid`` from the names seen, else from ``name_of(nodeid)``
        (``(parent nodeid, name)`` or None); "<nodeid N>" where both have none."""
        parts: list[str] = []
        seen = set()
        while nodeid != ROOT_NODEID and nodeid not in seen:
            seen.add(nodeid)
            got = self.names.get(nodeid)
            if got is None and name_of is not None:
                got = name_of(nodeid)
            if got is None:
                parts.append(f"<nodeid {nodeid}>")
                break
            nodeid, name = got
            parts.append(name.decode(errors="backslashreplace"))
        return "/" + "/".join(reversed(parts))

    # -- texts -------------------------------------------------------------------------
    def profile_lines(self, name: str) -> list[str]:
        """``key=value`` lines of one translator (GlusterFS's ``<xl>.latency`` section)."""
        out = [f"measure_latency={1 if self.on else 0}",
               f"duration_s={time.time() - self.since:.3f}"]
        for fop_name, c in (self.counts.get(name) or {}).items():
            if not c.count:
                continue
            out.append(f"{fop_name}.count={c.count}")
            out.append(f"{fop_name}.errors={c.errors}")
            if c.bytes:
                out.append(f"{fop_name}.bytes={c.bytes}")
            out.append(f"{fop_name}.latency_avg_us={c.lat_total / c.count / 1000:.3f}")
            out.append(f"{fop_name}.latency_min_us={c.lat_min / 1000:.3f}")
            out.append(f"{fop_name}.latency_max_us={c.lat_max / 1000:.3f}")
            out.append(f"{fop_name}.latency_total_us={c.lat_total / 1000:.3f}")
        return out

    def files_lines(self, name_of: Optional[Callable[[int], Any]] = None) -> list[str]:
        """One line per counted file: ``opens reads read_bytes writes write_bytes PATH``."""
        out = [f"measure_latency={1 if self.on else 0}",
               f"duration_s={time.time() - self.since:.3f}",
               "# opens reads read-bytes writes write-bytes path"]
        for nodeid, f in self.files.items():
            out.append(f"{f.opens} {f.reads} {f.read_bytes} {f.writes} {f.write_bytes} "
                       f"{self.path(nodeid, name_of)}")
        return out

