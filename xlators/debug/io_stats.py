"""debug/io-stats: per-fop counts, errors, bytes and latency (GlusterFS's profile info).

For every fop: calls (``count-fop-hits``), failures by errno, and with
``latency-measurement`` the min/avg/max latency and a histogram in log2 microsecond
buckets; for readv/writev the bytes moved and a histogram of request sizes.  ``dump()``
gives the numbers to the statedump; ``dump_text()`` and ``dump_json()`` format them, and
with ``ios-dump-interval`` they are written every so often to ``ios-dump-file`` (or to
the log) in ``ios-dump-format``.  ``setfattr -n trusted.io-stats-dump -v NAME MNT``
writes them on request, as in GlusterFS (:mod:`xlators.debug.io_stats_dump`).

Latency is measured with ``time.perf_counter_ns`` around the wind to the child, so it
includes everything below this translator.  With latency-measurement off a call costs a
counter increment.

FUSE passthrough: by default io-stats declares that it passes data through, so it does
not prevent passthrough.  READ and WRITE of a file opened in passthrough are done by the
kernel on the brick file and never reach the graph: they are not counted here (open,
flush, release, setattr and every other fop of that file still are).  The dumps say so
(``passthrough_data``: "not counted") with the number of opens this io-stats handed to
the kernel (``passthrough_opens``).  ``option count-passthrough-data on`` makes io-stats
one of the translators that must see file data: the graph then refuses passthrough
(``--fuse-passthrough=auto`` mounts without it, ``yes`` fails the mount) and every read
and write is counted.  The option is read when the bridge asks (at mount, and at each
open): set at run time it applies to files opened afterwards, and a mount made with it on
gets passthrough only when mounted again.

FLUSH: io-stats declares that it does not need flush (``needs_flush`` False), so that
putting it on a stack does not add a synchronous round trip to every close(2) of the
stack it measures.  In a graph where no other translator needs flush either (no locks,
write-behind, trace, error-gen or delay-gen) the bridge answers opens with FOPEN_NOFLUSH,
the kernel sends no FLUSH, and the ``flush`` row stays at zero: what io-stats counts is
what reached the graph.

    volume io-stats
        type debug/io-stats
        option latency-measurement on
        option count-fop-hits on
        option ios-dump-interval 30s
        option ios-dump-format text
        option ios-dump-file /var/tmp/xlfs-stats.txt
        option count-passthrough-data off
        subvolumes posix
    end-volume
"""
from __future__ import annotations

import errno
import json
import os
import sys
import time
from time import perf_counter_ns  # noqa: F401 (the clock, as MODULE.perf_counter_ns)
from typing import Any, Optional

import trio

from ..core.events import Event
from ..core.fops import FOPS, Fop, compile_fop
from ..core.options import Opts, Option
from ..core.translator import Translator
from ._wrap import install_fops

_FOP_INDEX = {f.name: i for i, f in enumerate(FOPS)}


def _bucket_label(b: int, unit: str = "") -> str:
    """Bucket b holds values v with v.bit_length() == b: [2**(b-1), 2**b)."""
    if b == 0:
        return f"0{unit}"
    lo, hi = 1 << (b - 1), 1 << b
    return f"{lo}-{hi}{unit}"


_HIST_SHOWN = 48         # buckets reported; the last one holds everything above
_NO_MIN = 1 << 64        # lat_min before the first latency: above any


class FopStats:
    """Numbers of one fop.  The latencies measured are as many as the histogram holds
    (``lat_n``), the failures as many as ``errnos`` counts (``errors``); ``lat_min``
    means something once there is a latency."""
    __slots__ = ("count", "errnos", "lat_total", "lat_min", "lat_max", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.errnos: dict[int, int] = {}     # failures by errno (EIO: no errno)
        self.lat_total = 0       # ns
        self.lat_min = _NO_MIN
        self.lat_max = 0
        # By (latency in us).bit_length(): up to 54 for any 64-bit nanosecond latency,
        # so no clamp on the request path; buckets past _HIST_SHOWN - 1 are shown there.
        self.hist: list[int] = [0] * 64

    @property
    def lat_n(self) -> int:
        return sum(self.hist)

    @property
    def errors(self) -> int:
        return sum(self.errnos.values())

    def latency(self, ns: int) -> None:
        if ns < self.lat_min:
            self.lat_min = ns
        if ns > self.lat_max:
            self.lat_max = ns
        self.lat_total += ns
        self.hist[min((ns // 1000).bit_length(), 63)] += 1

    def shown_hist(self) -> list[int]:
        """The histogram as reported: _HIST_SHOWN buckets, the last one open-ended."""
        h = self.hist
        return h[:_HIST_SHOWN - 1] + [sum(h[_HIST_SHOWN - 1:])]

    def failed(self, exc: BaseException) -> None:
        err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
        self.errnos[err] = self.errnos.get(err, 0) + 1

    @property
    def active(self) -> bool:
        return bool(self.count or self.errnos or self.lat_n)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "errors": self.errors}
        if self.errnos:
            out["errnos"] = {errno.errorcode.get(e, str(e)): n
                             for e, n in sorted(self.errnos.items())}
        lat_n = self.lat_n
        if lat_n:
            out["latency_us"] = {"n": lat_n, "min": self.lat_min / 1000,
                                 "avg": self.lat_total / lat_n / 1000,
                                 "max": self.lat_max / 1000,
                                 "total": self.lat_total / 1000}
            out["histogram_us"] = {_bucket_label(b): n
                                   for b, n in enumerate(self.shown_hist()) if n}
        return out


class IoStats(Translator):
    """debug/io-stats: per-fop counts, errors, bytes and latency."""
    type = "debug/io-stats"
    # passthrough READ/WRITE are not counted, unless count-passthrough-data refuses it
    # (passthrough_blocker/passthrough_fd below; module docstring)
    passes_data_through = True
    forget_needs_context = True  # it keeps nothing per inode: forget passes it by
    children_range = (1, None)   # like GlusterFS: stats of the first, others just wound below
    needs_flush = False          # FLUSH not sent then: see the module docstring
    options = (
        Option.bool("latency-measurement", default=False,
                    description="Measure each fop's latency (min/avg/max and a log2 "
                                "histogram in microseconds)."),
        Option.bool("count-fop-hits", default=True,
                    description="Count the calls of each fop.  (GlusterFS leaves this off "
                                "unless profiling is started; xlfs counts by default.)"),
        Option.time("ios-dump-interval", default=0, min=0,
                    description="Write the statistics every this often (a time: 30, 30s, "
                                "5m); 0 turns the periodic dump off."),
        Option.str("ios-dump-format", default="json", values=("json", "text"),
                   description="Format of the periodic dump: json or text."),
        Option.path("ios-dump-file",
                    description="File the periodic dump (re)writes; unset: the dump goes "
                                "to the log at INFO."),
        Option.bool("count-passthrough-data", default=False,
                    description="Count READ and WRITE of every file: io-stats then must see "
                                "file data and FUSE passthrough is not used below it.  Off: "
                                "READ/WRITE of files opened in passthrough are done by the "
                                "kernel and not counted (the dumps say so)."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._dumper: Any = None
        self.reset()
        self._apply()

    # -- options and lifecycle -----------------------------------------------------
    def _apply(self) -> None:
        self._latency = bool(self.opts.latency_measurement)
        self._count_hits = bool(self.opts.count_fop_hits)

    def reconfigured(self, old: Opts) -> None:
        self._apply()
        dump_keys = ("ios-dump-interval", "ios-dump-format", "ios-dump-file")
        if any(old[k] != self.opts[k] for k in dump_keys):
            self._stop_dumper()             # restart with the new settings
        self._maybe_start_dumper()

    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        super().notify(event, data, source)
        if event is Event.CHILD_UP:
            self._maybe_start_dumper()

    def fini(self) -> None:
        self._stop_dumper()

    def _stop_dumper(self) -> None:
        if isinstance(self._dumper, trio.CancelScope):
            self._dumper.cancel()
        self._dumper = None

    def _maybe_start_dumper(self) -> None:
        """Start the periodic dump when it is on and a graph nursery exists."""
        if self._dumper is not None or not self.opts.ios_dump_interval:
            return
        self._dumper = "starting"
        try:
            self.spawn(self._dump_loop)
        except RuntimeError:
            self._dumper = None
            self.log.debug("ios-dump-interval: no running graph yet; the dump starts "
                           "at the next CHILD_UP or reconfigure")

    async def _dump_loop(self) -> None:
        with trio.CancelScope() as scope:
            self._dumper = scope
            try:
                while True:
                    interval = self.opts.ios_dump_interval
                    if not interval:
                        break
                    await trio.sleep(interval)
                    await self.dump_now()
            finally:
                if self._dumper is scope:
                    self._dumper = None

    async def dump_now(self) -> None:
        """Write the statistics once, as the periodic dump does."""
        text = self.dump_json() if self.opts.ios_dump_format == "json" else self.dump_text()
        path = self.opts.ios_dump_file
        if path is None:
            self.log.info("io-stats of %s:\n%s", self.name, text)
            return
        try:
            await trio.to_thread.run_sync(_write_replace, path, text)
        except OSError as exc:
            self.log.warning("ios-dump-file %s: %s", path, exc)

    # -- FUSE passthrough ----------------------------------------------------------
    def passthrough_blocker(self) -> Optional[str]:
        if self.opts.count_passthrough_data:
            return (f"volume '{self.name}' ({self.type}) counts every READ and WRITE "
                    f"(option count-passthrough-data on)")
        return super().passthrough_blocker()

    def passthrough_fd(self, fd: Any) -> Optional[int]:
        if self.opts.count_passthrough_data:
            return None
        brick_fd = super().passthrough_fd(fd)
        if brick_fd is not None:
            self.passthrough_opens += 1
        return brick_fd

    def _passthrough_note(self) -> str:
        if self.opts.count_passthrough_data:
            return "counted (count-passthrough-data on: no FUSE passthrough below)"
        return "not counted (READ/WRITE of files opened in FUSE passthrough)"

    # -- numbers -------------------------------------------------------------------
    def reset(self) -> None:
        """Start counting from zero (GlusterFS's "profile info clear")."""
        self._stats = [FopStats() for _ in FOPS]
        self.bytes_read = 0
        self.bytes_written = 0
        # Reads and writes by size.bit_length() (65: any 64-bit size); read_sizes and
        # write_sizes give them as {bucket: count}.
        self._read_hist: list[int] = [0] * 65
        self._write_hist: list[int] = [0] * 65
        self.passthrough_opens = 0      # opens whose READ/WRITE the kernel does itself
        self._since = time.time()

    @property
    def read_sizes(self) -> dict[int, int]:
        """Reads by size: bucket b holds sizes with size.bit_length() == b."""
        return {b: n for b, n in enumerate(self._read_hist) if n}

    @property
    def write_sizes(self) -> dict[int, int]:
        """Writes by size: bucket b holds sizes with size.bit_length() == b."""
        return {b: n for b, n in enumerate(self._write_hist) if n}

    def stats(self, fop: str) -> FopStats:
        return self._stats[_FOP_INDEX[fop]]

    def as_dict(self) -> dict[str, Any]:
        """Everything, nested (the JSON dump)."""
        def sizes(h: dict[int, int]) -> dict[str, int]:
            return {_bucket_label(b, "b"): n for b, n in sorted(h.items())}
        return {
            "name": self.name,
            "duration_s": round(time.time() - self._since, 3),
            "latency_measurement": self._latency, "count_fop_hits": self._count_hits,
            "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
            "read_sizes": sizes(self.read_sizes), "write_sizes": sizes(self.write_sizes),
            "passthrough_data": self._passthrough_note(),
            "passthrough_opens": self.passthrough_opens,
            "fops": {f.name: s.as_dict() for f, s in zip(FOPS, self._stats) if s.active},
        }

    def dump(self) -> dict[str, Any]:
        """Flat ``key -> value`` pairs for the statedump."""
        d = self.as_dict()
        out: dict[str, Any] = {k: v for k, v in d.items()
                               if k not in ("fops", "read_sizes", "write_sizes", "name")}
        for key in ("read_sizes", "write_sizes"):
            if d[key]:
                out[key] = ",".join(f"{k}:{v}" for k, v in d[key].items())
        for name, s in d["fops"].items():
            out[f"{name}.count"] = s["count"]
            out[f"{name}.errors"] = s["errors"]
            if "errnos" in s:
                out[f"{name}.errnos"] = ",".join(f"{k}:{v}" for k, v in s["errnos"].items())
            if "latency_us" in s:
                for k, v in s["latency_us"].items():
                    out[f"{name}.latency_{k}_us"] = round(v, 3)
                out[f"{name}.histogram_us"] = ",".join(
                    f"{k}:{v}" for k, v in s["histogram_us"].items())
        return out

    def dump_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def dump_text(self) -> str:
        """A table like ``gluster volume profile VOL info``."""
        d = self.as_dict()
        lines = [f"Cumulative Stats of {self.name}:"]
        for title, key in (("Read sizes", "read_sizes"), ("Write sizes", "write_sizes")):
            if d[key]:
                lines.append(f"  {title}: " + "  ".join(f"{k}:{v}" for k, v in d[key].items()))
        total_ns = sum(s.lat_total for s in self._stats) or 1
        lines.append(f" {'%-latency':>9} {'Avg-latency':>13} {'Min-Latency':>13} "
                     f"{'Max-Latency':>13} {'No. of calls':>13} {'Errors':>7}  Fop")
        lines.append(f" {'-' * 9} {'-' * 13} {'-' * 13} {'-' * 13} {'-' * 13} "
                     f"{'-' * 7}  {'-' * 4}")
        for f, s in zip(FOPS, self._stats):
            if not s.active:
                continue
            if s.lat_n:
                pct = 100.0 * s.lat_total / total_ns
                lat = (f"{pct:9.2f} {s.lat_total / s.lat_n / 1000:10.2f} us "
                       f"{s.lat_min / 1000:10.2f} us {s.lat_max / 1000:10.2f} us")
            else:
                lat = f"{'-':>9} {'-':>13} {'-':>13} {'-':>13}"
            lines.append(f" {lat} {s.count:13d} {s.errors:7d}  {f.name.upper()}")
        lines.append(f"    Duration: {d['duration_s']:.0f} seconds")
        lines.append(f"   Data Read: {self.bytes_read} bytes")
        lines.append(f"Data Written: {self.bytes_written} bytes")
        lines.append(f"Passthrough data: {d['passthrough_data']}; "
                     f"passthrough opens: {self.passthrough_opens}")
        return "\n".join(lines) + "\n"


def _write_replace(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# The request path, one function per fop taking the table's parameters by name
# (compile_fop), with FopStats.latency, FopStats.failed and the byte counts inlined, and
# only the data counting the fop needs: argument packing, method calls and tests that
# cannot be true were a good part of what io-stats cost per fop.  A failure (a negative
# LOOKUP and GETXATTR's ENODATA come with every create) is matched by its class, OSError
# (errno) before Exception (EIO) and BaseException (cancelled: latency only), and the
# exception is read with sys.exception() rather than bound with ``as``: that binding
# wraps the handler in a cleanup handler of its own, one more pass of the exception
# through the frame's handler table on the way out.  With isinstance tests and an
# ``errors`` count beside ``errnos`` that was ~1.9 kIr more per failure under callgrind
# (docs/benchmarks.md, "io-stats on a failing fop").
# The exception being handled: sys.exception() from Python 3.11, sys.exc_info()'s
# second item before (requires-python is 3.9; PyPy 3.9 runs xlfs).
_current_exception = getattr(sys, "exception", None) or (lambda: sys.exc_info()[1])
_LATENCY = """\
ns = clock() - t0                       # st.latency(ns), inline
st.lat_total += ns
if ns > st.lat_max:
    st.lat_max = ns
if ns < st.lat_min:
    st.lat_min = ns
st.hist[(ns // 1000).bit_length()] += 1     # lat_n is the histogram's sum
"""
_FAILED_ERRNO = """\
err = EXCEPTION().errno or EIO          # st.failed(exc), inline
errnos = st.errnos
errnos[err] = errnos.get(err, 0) + 1
"""
_FAILED_EIO = """\
errnos = st.errnos
errnos[EIO] = errnos.get(EIO, 0) + 1
"""
_COUNTED_SOURCE = """
async def {name}(self, frame, {params}):
    st = self._stats[IDX]
    if self._count_hits:
        st.count += 1
    child = self.child
    if self._latency:
        clock = MODULE.perf_counter_ns     # looked up per call: tests replace it
        t0 = clock()
        try:
            result = await {wind:child}
        except OSError:
{latency:12}{failed_errno:12}            raise
        except Exception:
{latency:12}{failed_eio:12}            raise
        except BaseException:
{latency:12}            raise
{latency:8}    else:
        try:
            result = await {wind:child}
        except OSError:
{failed_errno:12}            raise
        except Exception:
{failed_eio:12}            raise
{data}    return result
"""
for _key, _text in (("latency", _LATENCY), ("failed_errno", _FAILED_ERRNO),
                    ("failed_eio", _FAILED_EIO)):
    for _indent in (8, 12):
        _COUNTED_SOURCE = _COUNTED_SOURCE.replace(
            "{%s:%d}" % (_key, _indent),
            "".join(" " * _indent + line for line in _text.splitlines(True)))
# writev: the bytes written (its result); readv: the bytes read.
_DATA_IN = """\
    if result.__class__ is int:
        self.bytes_written += result
        self._write_hist[result.bit_length()] += 1
"""
_DATA_OUT = """\
    if result.__class__ is bytes or isinstance(result, BUFFERS):
        n = len(result)
        self.bytes_read += n
        self._read_hist[n.bit_length()] += 1
"""


def _make(fop: Fop):
    data = _DATA_IN if fop.data_in else _DATA_OUT if fop.data_out else ""
    return compile_fop(fop, _COUNTED_SOURCE.replace("{data}", data), {
        "__name__": __name__, "MODULE": sys.modules[__name__], "IDX": _FOP_INDEX[fop.name],
        "EIO": errno.EIO, "EXCEPTION": _current_exception,
        "BUFFERS": (bytes, bytearray, memoryview)})


install_fops(IoStats, _make, FOPS, "Counted (and timed), then wound to the child.")

# ``setfattr -n trusted.io-stats-dump -v NAME MNT`` (GlusterFS's dump on request)
from .io_stats_dump import install_dump_xattr  # noqa: E402

install_dump_xattr(IoStats)
