"""The benchmark cases: each one a function of a directory that returns its measurements.
The metadata and caching-off cases are here, the file data cases in data_cases.py, what
they share in case_base.py; the list the runner walks (all_cases) is at the end.

    metrics = create(directory)                    # default (full) sizes
    metrics = create(directory, QUICK, CaseEnv())  # the sizes of --quick

A case makes what it needs in a fresh directory under ``directory`` (untimed), times only
the operation it is named after, and deletes that directory again (untimed), so that no
case runs on the inodes earlier cases left in the kernel's and the daemon's tables.  Every loop is
bounded by ``Config.time_limit`` seconds: a slow peer reports the rate of what it managed,
with a note saying so, instead of running for ever.

Each call measures once; the runner calls every case ``Config.rounds`` times, interleaved
across the peers, and keeps the median.
Rates are ops/s (higher is better), throughput MiB/s (higher is better), latency in
microseconds (lower is better).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, List, Optional

from .case_base import (FULL, QUICK, TINY, MiB, CaseEnv, Config, Metric,  # noqa: F401
                        _NOT_DROPPED, _Clock, _make_files, _rate, _scratch, _short,
                        drop_caches, each, timed_loop)
from .data_cases import (RANDOM_FILE_BYTES, RANDOM_NAME, SEQ_NAME,  # noqa: F401
                         random_read, random_read_warm, seq_read, seq_read_warm, seq_write,
                         seq_write_fsync)

# -- metadata ----------------------------------------------------------------------------

@_scratch("create")
def create(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """Small-file create: open(O_CREAT|O_EXCL), write ``file_bytes``, close."""
    payload = b"x" * cfg.file_bytes

    def create_one(i: int) -> None:
        fd = os.open(os.path.join(directory, f"f{i}"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
    t = timed_loop(each(create_one, range(cfg.files)), cfg.files, cfg.time_limit)
    return [Metric("small-file create", t.rate, "ops/s", note=_short(t.done, cfg.files))]


@_scratch("stat")
def stat(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """stat() of every small file, once per pass, each pass after the mount's entry and
    attribute timeouts have run out (so every stat asks the filesystem: one LOOKUP)."""
    env = env or CaseEnv()
    d = directory
    made = _make_files(d, cfg.files, cfg.time_limit)
    names = [f"f{i}" for i in range(made)]
    wait = max(env.entry_timeout, env.attr_timeout)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    rounds: List[float] = []
    note = ""
    try:
        for _ in range(cfg.stat_passes):
            if wait > 0:
                time.sleep(wait + 0.05)
            t = timed_loop(each(lambda name: os.stat(name, dir_fd=dfd), names),
                           len(names), cfg.time_limit)
            rounds.append(t.rate)
            if t.cut:
                note = _short(t.done, len(names))
    finally:
        os.close(dfd)
    value = statistics.median(rounds)
    note = "; ".join(filter(None, [note, f"median of {len(rounds)} passes"]))
    if made < cfg.files:
        note = f"setup made {made} of {cfg.files} files" + (f"; {note}" if note else "")
    return [Metric("stat (expired cache)", value, "ops/s", note=note)]


@_scratch("unlink")
def unlink(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """unlink() of small files."""
    d = directory
    made = _make_files(d, cfg.files, cfg.time_limit, b"x" * cfg.file_bytes)
    t = timed_loop(each(os.unlink, (os.path.join(d, f"f{i}") for i in range(made))), made,
                   cfg.time_limit)
    return [Metric("unlink", t.rate, "ops/s", note=_short(t.done, cfg.files))]


@_scratch("mkdir")
def mkdir_rmdir(directory: str, cfg: Config = FULL,
                env: Optional[CaseEnv] = None) -> List[Metric]:
    """mkdir() of ``dirs`` directories, then rmdir() of each: ops/s over both."""
    made: List[str] = []

    def mkdirs() -> Iterator[int]:
        try:
            for i in range(cfg.dirs):
                path = os.path.join(directory, f"d{i}")
                os.mkdir(path)
                made.append(path)
                yield 1
        finally:                      # timed too: timed_loop closes the generator
            for path in made:
                os.rmdir(path)
    t = timed_loop(mkdirs(), cfg.dirs, cfg.time_limit)
    return [Metric("mkdir+rmdir", _rate(2 * t.done, t.seconds), "ops/s",
                   note=_short(t.done, cfg.dirs, "pairs"))]


@_scratch("rename")
def rename(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """rename() of small files to new names in the same directory."""
    d = directory
    made = _make_files(d, cfg.files, cfg.time_limit)
    def rename_one(i: int) -> None:
        os.rename(os.path.join(d, f"f{i}"), os.path.join(d, f"r{i}"))
    t = timed_loop(each(rename_one, range(made)), made, cfg.time_limit)
    return [Metric("rename", t.rate, "ops/s", note=_short(t.done, cfg.files))]



@_scratch("readdir")
def readdir(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """os.listdir() of a directory of ``readdir_entries`` entries, entries per second:
    cold (the first listing after dropping the kernel's caches; the daemon keeps its own)
    and warm (the median of the listings right after it, ``readdir_rounds`` - 1 of them:
    what the kernel's directory cache can serve)."""
    d = directory
    made = _make_files(d, cfg.readdir_entries, 4 * cfg.time_limit)
    dropped = drop_caches(cfg)
    listings = []
    clock = _Clock(cfg.time_limit)
    for _ in range(max(2, cfg.readdir_rounds)):
        t0 = time.perf_counter()
        n = len(os.listdir(d))
        listings.append(time.perf_counter() - t0)
        if n != made:
            raise AssertionError(f"listed {n} entries, expected {made}")
        if clock.over() and len(listings) >= 2:
            break
    cold, warm = listings[0], statistics.median(listings[1:])
    note = (f"{made} entries; cold {cold * 1000:.1f} ms, warm {warm * 1000:.1f} ms per "
            f"listing (median of {len(listings) - 1})")
    if not dropped:
        note = f"{_NOT_DROPPED}; {note}"
    if made < cfg.readdir_entries:
        note = f"setup made only {made} of {cfg.readdir_entries}; " + note
    return [Metric(f"readdir {cfg.readdir_entries} entries cold", _rate(made, cold),
                   "entries/s", note=note),
            Metric(f"readdir {cfg.readdir_entries} entries warm", _rate(made, warm),
                   "entries/s", note=note)]


@_scratch("stat-dropped")
def stat_dropped(directory: str, cfg: Config = FULL,
                 env: Optional[CaseEnv] = None) -> List[Metric]:
    """stat() of every small file, each pass right after dropping the kernel's caches
    (dentries, inodes, pages: the brick's too, so the raw directory goes to its disk):
    one LOOKUP each on a FUSE mount, answered by whatever the daemon still knows."""
    d = directory
    made = _make_files(d, cfg.files, cfg.time_limit)
    names = [f"f{i}" for i in range(made)]
    rounds: List[float] = []
    note = ""
    dropped = True
    for _ in range(cfg.stat_passes):
        dropped = drop_caches(cfg) and dropped
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            t = timed_loop(each(lambda name: os.stat(name, dir_fd=dfd), names), len(names),
                           cfg.time_limit)
            rounds.append(t.rate)
        finally:
            os.close(dfd)
        if t.cut:
            note = _short(t.done, len(names))
    note = "; ".join(filter(None, [note, f"median of {len(rounds)} passes",
                                   "" if dropped else _NOT_DROPPED]))
    if made < cfg.files:
        note = f"setup made {made} of {cfg.files} files; {note}"
    return [Metric("stat (caches dropped)", statistics.median(rounds), "ops/s", note=note)]


# -- caching off -------------------------------------------------------------------------

def getattr_loop(directory: str, cfg: Config = FULL,
                 env: Optional[CaseEnv] = None) -> List[Metric]:
    """fstat() of one open file in a loop for ``getattr_seconds``: with the attribute
    timeout 0, every call is one GETATTR round trip."""
    path = os.path.join(directory, "getattr.dat")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(100):  # warm up
            os.fstat(fd)
        end = time.monotonic() + min(cfg.getattr_seconds, cfg.time_limit)
        done = 0
        t0 = time.perf_counter()
        while True:
            for _ in range(64):
                os.fstat(fd)
            done += 64
            if time.monotonic() > end:
                break
        secs = time.perf_counter() - t0
    finally:
        os.close(fd)
    return [Metric("GETATTR loop (fstat, caching off)", _rate(done, secs), "ops/s",
                   note=f"{done} calls in {secs:.1f} s")]


@_scratch("latency")
def stat_latency(directory: str, cfg: Config = FULL,
                 env: Optional[CaseEnv] = None) -> List[Metric]:
    """One stat() at a time, each timed: p50 and p99 in microseconds (caching off, so each
    is a LOOKUP, plus a GETATTR where the kernel asks for one)."""
    d = directory
    name = "target"
    os.close(os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o644))
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    samples = []
    try:
        for _ in range(min(200, cfg.latency_samples)):  # warm up
            os.stat(name, dir_fd=dfd)
        clock = _Clock(cfg.time_limit)
        ns = time.perf_counter_ns
        for _ in range(cfg.latency_samples):
            t0 = ns()
            os.stat(name, dir_fd=dfd)
            samples.append(ns() - t0)
            if clock.over():
                break
    finally:
        os.close(dfd)
    samples.sort()
    p50 = samples[len(samples) // 2] / 1000
    p99 = samples[min(len(samples) - 1, (len(samples) * 99) // 100)] / 1000
    note = f"{len(samples)} samples"
    return [Metric("stat latency p50", p50, "us", higher_is_better=False, note=note),
            Metric("stat latency p99", p99, "us", higher_is_better=False, note=note)]


# -- the list the runner walks -----------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., List[Metric]]
    profile: str                  # "cached" (timeouts 1 s) or "nocache" (timeouts 0)
    metrics: tuple = field(default=())  # the metric names it reports (for n/a rows)


def _rows(fn: Callable, cfg: Config) -> tuple:
    names = {
        create: ("small-file create",),
        stat: ("stat (expired cache)",),
        unlink: ("unlink",),
        mkdir_rmdir: ("mkdir+rmdir",),
        rename: ("rename",),
        readdir: (f"readdir {cfg.readdir_entries} entries cold",
                  f"readdir {cfg.readdir_entries} entries warm"),
        stat_dropped: ("stat (caches dropped)",),
        seq_write_fsync: (f"seq write {cfg.seq_bytes // MiB} MiB + fsync",),
        seq_read_warm: (f"seq read {cfg.seq_bytes // MiB} MiB warm",),
        random_read_warm: (f"random 4 KiB read {min(RANDOM_FILE_BYTES, cfg.seq_bytes) // MiB}"
                           f" MiB warm",),
        seq_write: (f"seq write {cfg.seq_bytes // MiB} MiB",),
        seq_read: (f"seq read {cfg.seq_bytes // MiB} MiB cold",),
        random_read: ("random 4 KiB read",),
        stat_latency: ("stat latency p50", "stat latency p99"),
        getattr_loop: ("GETATTR loop (fstat, caching off)",),
    }
    return names[fn]


# Cache settings of the two profiles: (attribute, entry, negative) timeouts in seconds.
PROFILES = {"cached": (1.0, 1.0, 0.0), "nocache": (0.0, 0.0, 0.0)}

# Order matters a little: the 10,000-entry directory is made late so that it does not sit
# in the inode tables of the earlier metadata cases.
_ORDER = [
    (create, "cached"), (stat, "cached"), (stat_dropped, "cached"), (rename, "cached"),
    (unlink, "cached"), (mkdir_rmdir, "cached"), (seq_write, "cached"),
    (seq_write_fsync, "cached"), (seq_read, "cached"), (seq_read_warm, "cached"),
    (random_read, "cached"), (random_read_warm, "cached"), (readdir, "cached"),
    (getattr_loop, "nocache"), (stat_latency, "nocache"),
]


def all_cases(cfg: Config = FULL) -> List[Case]:
    return [Case(fn.__name__, fn, profile, _rows(fn, cfg)) for fn, profile in _ORDER]


def select(names: Optional[List[str]], cfg: Config = FULL) -> List[Case]:
    cases = all_cases(cfg)
    if not names:
        return cases
    known = {c.name: c for c in cases}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown case(s): {', '.join(unknown)}; "
                         f"known: {', '.join(known)}")
    return [c for c in cases if c.name in names]


def with_overrides(cfg: Config, **kw) -> Config:
    return replace(cfg, **kw)
