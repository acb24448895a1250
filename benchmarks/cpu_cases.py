"""Daemon CPU per request: workloads whose requests reach the daemon, and the measurement.

    sample = measure(WORKLOADS["getattr"], directory, pid, connection, calls=20000)
    sample.user / sample.calls                    # daemon user CPU (s) per call
    sample.counts                                 # {"GETATTR": 20000}: what the kernel sent

Each workload is a loop of one system call made so that the kernel has to ask the daemon
every time: ``fstat`` of an open file with the attribute timeout 0 (GETATTR), ``stat`` of
a name with the entry timeout 0 (LOOKUP), a 4 KiB ``preadv`` of a page just dropped from
the mount's page cache with readahead off (READ), a 4 KiB ``pwritev`` (WRITE: FUSE writes
through to the daemon without the writeback cache), ``open(O_CREAT|O_EXCL)`` (CREATE;
the descriptors stay open until after the measurement, so no FLUSH or RELEASE falls in
it), ``unlink``, ``mkdir`` then ``rmdir``, ``rename``.  FORGETs are not counted (the
kernel queues them apart from other requests, past the tracepoint): their cost stays in
the call that caused them (unlink, rmdir).  The daemon's user and system CPU come from
``/proc/PID/stat`` (utime, stime: every thread of the process) read just before and after
the loop; the requests it got in that window are counted by the kernel's tracepoint
(fuse_trace), per opcode, for every peer alike.  Setup and clean-up are outside the window.

Not ``O_DIRECT`` for READ and WRITE: the daemon is told of it and does direct I/O on its
brick, so the loop would time the disk and the daemon's way of waiting for it (xlfs's
posix hands direct I/O to a worker thread) rather than the request path.

Most calls bring other requests along (a LOOKUP to revalidate the name, a GETATTR of the
directory whose attributes the change invalidated): ``attribute()`` subtracts those at
their own measured cost, which leaves the cost of the request the workload is named after.
"""
from __future__ import annotations

import mmap
import os
from contextlib import nullcontext
import stat as stat_mod
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, List, Optional

from . import fuse_trace

# Cache settings (attribute, entry, negative timeouts): GETATTR needs the attributes
# never valid; everything else needs the names never valid but the attributes valid, so
# that a stat or a create is not followed by GETATTRs of the file and its directory.
PROFILES = {"attr0": (0.0, 0.0, 0.0), "entry0": (1.0, 0.0, 0.0)}
BLOCK = 4096


@dataclass
class Workload:
    name: str                     # row name
    opcode: str                   # the request it measures (a label: "MKDIR+RMDIR")
    profile: str                  # key of PROFILES
    call: Callable[[Any, int], Any]
    setup: Callable[[str, int], Any] = lambda d, n: None
    teardown: Callable[[Any], None] = lambda ctx: None
    negative_lookups: int = 0     # LOOKUPs per call of a name that does not exist (yet)
    per: str = "request"          # what one call is
    repeatable: bool = False      # a call may be repeated (used to warm up)


class _Dir:
    """A scratch directory and the descriptors a workload keeps open in it."""

    def __init__(self, d: str) -> None:
        self.path = d
        self.dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        self.fd = -1
        self.fds: List[int] = []
        self.buf = mmap.mmap(-1, BLOCK)

    def close(self) -> None:
        for fd in self.fds + [self.fd, self.dfd]:
            if fd >= 0:
                os.close(fd)
        self.fds, self.fd, self.dfd = [], -1, -1
        self.buf.close()


def _plain(d: str, n: int) -> _Dir:
    return _Dir(d)


def _with_file(flags: int, size: int = 0) -> Callable[[str, int], _Dir]:
    def setup(d: str, n: int) -> _Dir:
        ctx = _Dir(d)
        fd = os.open("f", os.O_RDWR | os.O_CREAT, 0o644, dir_fd=ctx.dfd)
        try:
            if size:
                os.write(fd, b"x" * size)
        finally:
            os.close(fd)
        ctx.fd = os.open("f", flags, dir_fd=ctx.dfd)
        return ctx
    return setup


def _with_files(prefix: str) -> Callable[[str, int], _Dir]:
    def setup(d: str, n: int) -> _Dir:
        ctx = _Dir(d)
        for i in range(n):
            os.mknod(f"{prefix}{i}", stat_mod.S_IFREG | 0o644, dir_fd=ctx.dfd)
        return ctx
    return setup


LISTED = 1000                 # names in the directory the listdir workload lists


def _with_listed(d: str, n: int) -> _Dir:
    ctx = _Dir(d)
    os.mkdir("many", dir_fd=ctx.dfd)
    for i in range(LISTED):
        os.mknod(f"many/f{i:05}", stat_mod.S_IFREG | 0o644, dir_fd=ctx.dfd)
    return ctx


def _listdir(ctx: _Dir, i: int) -> None:
    if len(os.listdir(os.path.join(ctx.path, "many"))) != LISTED:
        raise AssertionError("listed a wrong number of names")


def _missing(ctx: _Dir, i: int) -> None:
    try:
        os.stat("missing", dir_fd=ctx.dfd)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("'missing' exists")


def _create(ctx: _Dir, i: int) -> None:
    ctx.fds.append(os.open(f"c{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                           dir_fd=ctx.dfd))


def _create_close(ctx: _Dir, i: int) -> None:
    """Issue 10's small-file create: open(O_CREAT|O_EXCL), write 4 KiB, close (the
    kernel asks for security.capability before the first write, then FLUSH, RELEASE)."""
    fd = os.open(f"c{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=ctx.dfd)
    try:
        os.write(fd, ctx.buf)
    finally:
        os.close(fd)


def _reader(d: str, n: int) -> _Dir:
    ctx = _with_file(os.O_RDONLY, 16 * BLOCK)(d, n)
    os.posix_fadvise(ctx.fd, 0, 0, os.POSIX_FADV_RANDOM)     # no readahead
    return ctx


def _read(ctx: _Dir, i: int) -> None:
    off = (i & 15) * BLOCK
    os.posix_fadvise(ctx.fd, off, BLOCK, os.POSIX_FADV_DONTNEED)  # not from the page cache
    if os.preadv(ctx.fd, [ctx.buf], off) != BLOCK:
        raise AssertionError("short read")


def _mkdir_rmdir(ctx: _Dir, i: int) -> None:
    os.mkdir(f"m{i}", dir_fd=ctx.dfd)
    os.rmdir(f"m{i}", dir_fd=ctx.dfd)


WORKLOADS: Dict[str, Workload] = {w.name: w for w in (
    Workload("getattr", "GETATTR", "attr0", lambda c, i: os.fstat(c.fd),
             _with_file(os.O_RDWR), repeatable=True),
    Workload("lookup", "LOOKUP", "entry0", lambda c, i: os.stat("f", dir_fd=c.dfd),
             _with_file(os.O_RDONLY), repeatable=True),
    Workload("lookup-missing", "LOOKUP (ENOENT)", "entry0", _missing, _plain,
             negative_lookups=1, repeatable=True),
    Workload("read", "READ 4 KiB", "entry0", _read, _reader, repeatable=True),
    Workload("write", "WRITE 4 KiB", "entry0",
             lambda c, i: os.pwritev(c.fd, [c.buf], (i & 15) * BLOCK),
             _with_file(os.O_WRONLY, 16 * BLOCK), repeatable=True),
    Workload("create", "CREATE", "entry0", _create, _plain, negative_lookups=1),
    Workload("create-close", "CREATE+GETXATTR+WRITE+FLUSH+RELEASE", "entry0", _create_close,
             _plain, negative_lookups=1),
    Workload("unlink", "UNLINK", "entry0", lambda c, i: os.unlink(f"u{i}", dir_fd=c.dfd),
             _with_files("u")),
    Workload("mkdir-rmdir", "MKDIR+RMDIR", "entry0", _mkdir_rmdir, _plain,
             negative_lookups=1, per="pair"),
    Workload("rename", "RENAME", "entry0",
             lambda c, i: os.rename(f"f{i}", f"r{i}", src_dir_fd=c.dfd, dst_dir_fd=c.dfd),
             _with_files("f"), negative_lookups=1),
    # OPENDIR, a READDIRPLUS (the kernel asks it at offset 0), READDIRs, RELEASEDIR
    Workload("listdir", "READDIR", "entry0", _listdir, _with_listed, per="listing",
             repeatable=True),
)}


@dataclass
class Sample:
    """One timed loop on one peer."""
    calls: int
    user: float                   # daemon CPU seconds in the window
    system: float
    wall: float                   # seconds the loop took
    counts: Optional[Dict[str, int]] = None   # requests by opcode (None: not counted)
    note: str = ""


def chosen(text: str) -> tuple[List[Workload], List[str]]:
    """The workloads a ``--workloads`` comma list names (all when empty), and the names
    it has that are none."""
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    return [WORKLOADS[w] for w in (wanted or WORKLOADS) if w in WORKLOADS], unknown


def daemon_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measure(w: Workload, directory: str, pid: int, connection: Optional[int],
            calls: int, time_limit: float = 30.0, count: bool = True,
            settle: bool = True,
            around: Optional[Callable[[], ContextManager[Any]]] = None) -> Sample:
    """Run ``w`` ``calls`` times (fewer if ``time_limit`` runs out) in a fresh directory
    under ``directory`` and return the daemon's CPU and requests in that window.
    ``around()``, when given, is entered just before the loop and left just after it,
    inside the request count (benchmarks.cpu_instr switches callgrind on and off there)."""
    d = _fresh(directory, w.name)
    ctx = w.setup(d, calls)
    note = ""
    try:
        if w.repeatable:
            for i in range(min(100, calls)):       # warm up
                w.call(ctx, i)
        # Start every loop with no dirty data on the machine: the writeback of the previous
        # loop's files (any peer's) would otherwise land in this one's window.
        if settle:
            os.sync()
        trace = None
        if count and connection is not None and fuse_trace.unavailable() is None:
            trace = fuse_trace.FuseTrace(connection, events=8 * calls)
            trace.__enter__()
        try:
            with around() if around is not None else nullcontext():
                u0, s0 = daemon_cpu(pid)
                deadline = time.monotonic() + time_limit
                done = 0
                t0 = time.perf_counter()
                call = w.call
                while done < calls:
                    for i in range(done, min(done + 64, calls)):
                        call(ctx, i)
                    done = min(done + 64, calls)
                    if time.monotonic() > deadline:
                        note = f"time limit: {done} of {calls} calls"
                        break
                wall = time.perf_counter() - t0
                u1, s1 = daemon_cpu(pid)
        finally:
            if trace is not None:
                trace.__exit__(None, None, None)
        counts = None
        if trace is not None:
            counts = trace.counts()
            if trace.lost():
                note = "; ".join(filter(None, [note, "trace buffer overflowed: counts short"]))
        return Sample(done, u1 - u0, s1 - s0, wall, counts, note)
    finally:
        w.teardown(ctx)
        ctx.close()
        _remove(d)


def _fresh(directory: str, name: str) -> str:
    n = 0
    while True:
        path = os.path.join(directory, f"cpu-{name}" + (f".{n}" if n else ""))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


def _remove(d: str) -> None:
    import shutil
    shutil.rmtree(d, ignore_errors=True)


# -- per-request cost ---------------------------------------------------------------

@dataclass
class Cost:
    """Median CPU of one workload on one peer, per call, and what it attributes."""
    user: float                   # µs per call
    system: float
    wall: float                   # µs per call
    per_call: Dict[str, float] = field(default_factory=dict)   # requests per call
    main_user: Optional[float] = None   # µs per request the workload is named after
    main_system: Optional[float] = None
    derived: bool = False         # main_* had other requests subtracted
    counted: bool = False         # the kernel's requests were counted (per_call says)


def attribute(costs: Dict[str, Cost]) -> None:
    """Fill ``main_user``/``main_system`` of every workload of one peer: its CPU per call
    minus the GETATTRs and LOOKUPs that came with it, each at the cost measured by the
    getattr, lookup and lookup-missing workloads.  Requests of other kinds (a FORGET, a
    one-off GETXATTR) stay in; a workload whose helpers were not measured gets None."""
    def single(name: str, opcode: str, minus: Dict[str, tuple] = {}) -> Optional[tuple]:
        c = costs.get(name)
        if c is None or not c.per_call.get(opcode):
            return None
        u, s = c.user, c.system
        for op, (ou, os_) in minus.items():
            n = c.per_call.get(op, 0.0)
            u, s = u - n * ou, s - n * os_
        n = c.per_call[opcode]
        return u / n, s / n

    g = single("getattr", "GETATTR")
    lookup_minus = {"GETATTR": g} if g else {}
    pos = single("lookup", "LOOKUP", lookup_minus)
    neg = single("lookup-missing", "LOOKUP", lookup_minus)
    for name, c in costs.items():
        w = WORKLOADS[name]
        if not c.per_call or w.per == "listing":   # (uncounted, or per call anyway)
            c.main_user, c.main_system = c.user, c.system
            continue
        if name == "getattr":
            c.main_user, c.main_system = g if g else (None, None)
            continue
        if name in ("lookup", "lookup-missing"):
            r = pos if name == "lookup" else neg
            c.main_user, c.main_system = r if r else (None, None)
            c.derived = c.per_call.get("GETATTR", 0.0) >= 0.05
            continue
        lookups = c.per_call.get("LOOKUP", 0.0)
        negs = min(float(w.negative_lookups), lookups)
        getattrs = c.per_call.get("GETATTR", 0.0)
        helpers = [(getattrs, g), (negs, neg), (lookups - negs, pos)]
        if any(n > 0 and cost is None for n, cost in helpers):
            continue                      # a helper's own cost was not measured
        u, s = c.user, c.system
        for n, cost in helpers:
            if n > 0:
                u, s = u - n * cost[0], s - n * cost[1]
        c.main_user, c.main_system = u, s
        c.derived = lookups + getattrs >= 0.05
