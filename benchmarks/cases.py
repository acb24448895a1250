"""The benchmark cases: each one a function of a directory that returns its measurements.

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

import functools
import os
import random
import shutil
import stat as stat_mod
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional

MiB = 1 << 20


@dataclass(frozen=True)
class Config:
    """Sizes and time bounds of one benchmark run."""
    files: int = 5000             # small-file create / stat / rename / unlink
    file_bytes: int = 4096        # payload of a "small file"
    dirs: int = 2000              # mkdir/rmdir pairs
    readdir_entries: int = 10000  # entries in the listed directory
    readdir_rounds: int = 20      # listings of it
    seq_bytes: int = 256 * MiB    # sequential write then read
    block: int = 1 * MiB          # sequential I/O block size
    random_reads: int = 20000     # 4 KiB reads at random offsets of the sequential file
    getattr_seconds: float = 5.0  # the GETATTR-bound fstat loop
    latency_samples: int = 20000  # single stats timed one by one
    stat_passes: int = 3          # stat passes over `files` (each after the entries expire)
    data_repeats: int = 3         # seq write/read and random read: timed runs per call; median
    rounds: int = 3               # the runner runs every case this often; median
    time_limit: float = 30.0      # bound of any one timed loop (and of any one setup)
    drop_caches: bool = True      # "cold" cases drop the kernel's caches (root only)


FULL = Config()
QUICK = Config(files=2000, dirs=1000, readdir_rounds=5, random_reads=20000,
               getattr_seconds=3.0, latency_samples=5000, stat_passes=3, data_repeats=3, rounds=1,
               time_limit=12.0)
# For the smoke test: a few files, well under a second on any disk.
TINY = Config(files=20, dirs=10, readdir_entries=50, readdir_rounds=2, seq_bytes=2 * MiB,
              block=256 * 1024, random_reads=50, getattr_seconds=0.05, latency_samples=50,
              stat_passes=1, data_repeats=1, rounds=1, time_limit=5.0, drop_caches=False)


@dataclass
class CaseEnv:
    """What a case needs to know about the peer it runs on."""
    fuse: bool = False            # a FUSE mount: evict its page cache before reads
    entry_timeout: float = 0.0    # kernel entry cache timeout of the mount (stat waits it out)
    attr_timeout: float = 0.0


@dataclass
class Metric:
    case: str
    value: float
    unit: str                     # "ops/s", "MiB/s", "us"
    higher_is_better: bool = True
    note: str = ""


class _Clock:
    """A deadline for one loop."""

    def __init__(self, limit: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + limit

    def over(self) -> bool:
        return time.monotonic() > self.deadline


def _fresh_dir(directory: str, name: str) -> str:
    """A new, empty directory ``name`` (suffixed if taken) under ``directory``."""
    path = os.path.join(directory, name)
    n = 0
    while True:
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1
            path = os.path.join(directory, f"{name}.{n}")


def _scratch(name: str) -> Callable:
    """Run the case in a fresh directory ``name`` under the one it is given, and delete
    that directory afterwards (untimed): a peer that keeps something per live inode must
    not be measured on the leftovers of earlier cases."""
    def deco(fn: Callable[..., List[Metric]]) -> Callable[..., List[Metric]]:
        @functools.wraps(fn)
        def case(directory: str, cfg: Config = FULL,
                 env: Optional[CaseEnv] = None) -> List[Metric]:
            d = _fresh_dir(directory, name)
            try:
                return fn(d, cfg, env)
            finally:
                shutil.rmtree(d, ignore_errors=True)
        return case
    return deco


def _repeated(fn: Callable[..., List[Metric]]) -> Callable[..., List[Metric]]:
    """Time the case ``cfg.data_repeats`` times and keep the median of each metric: the
    data cases take well under a second, so one hiccup of the machine would decide them."""
    @functools.wraps(fn)
    def case(directory: str, cfg: Config = FULL,
             env: Optional[CaseEnv] = None) -> List[Metric]:
        runs = [fn(directory, cfg, env) for _ in range(max(1, cfg.data_repeats))]
        out = []
        for ms in zip(*runs):
            short = [m.note for m in ms if "time limit" in m.note]
            out.append(replace(ms[-1], value=statistics.median(m.value for m in ms),
                               note=short[0] if short else ms[-1].note))
        return out
    return case


def _make_files(d: str, count: int, limit: float, payload: bytes = b"") -> int:
    """Untimed setup: up to ``count`` files f0..f(count-1) in ``d``; returns how many."""
    clock = _Clock(limit)
    for i in range(count):
        if clock.over():
            return i
        name = os.path.join(d, f"f{i}")
        if payload:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
        else:
            os.mknod(name, stat_mod.S_IFREG | 0o644)
    return count


def _rate(done: int, seconds: float) -> float:
    return done / seconds if seconds > 0 else float("inf")


def _short(done: int, wanted: int, what: str = "") -> str:
    """The note of a loop the time limit cut short (empty if it was not)."""
    if done >= wanted:
        return ""
    return f"time limit: {done} of {wanted}{' ' + what if what else ''} done"


# -- metadata ----------------------------------------------------------------------------

@_scratch("create")
def create(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """Small-file create: open(O_CREAT|O_EXCL), write ``file_bytes``, close."""
    payload = b"x" * cfg.file_bytes
    d = directory
    clock = _Clock(cfg.time_limit)
    done = 0
    t0 = time.perf_counter()
    for i in range(cfg.files):
        fd = os.open(os.path.join(d, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
        done += 1
        if clock.over():
            break
    secs = time.perf_counter() - t0
    return [Metric("small-file create", _rate(done, secs), "ops/s",
                   note=_short(done, cfg.files))]


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
            clock = _Clock(cfg.time_limit)
            done = 0
            t0 = time.perf_counter()
            for name in names:
                os.stat(name, dir_fd=dfd)
                done += 1
                if clock.over():
                    break
            rounds.append(_rate(done, time.perf_counter() - t0))
            if done < len(names):
                note = _short(done, len(names))
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
    clock = _Clock(cfg.time_limit)
    done = 0
    t0 = time.perf_counter()
    for i in range(made):
        os.unlink(os.path.join(d, f"f{i}"))
        done += 1
        if clock.over():
            break
    secs = time.perf_counter() - t0
    return [Metric("unlink", _rate(done, secs), "ops/s", note=_short(done, cfg.files))]


@_scratch("mkdir")
def mkdir_rmdir(directory: str, cfg: Config = FULL,
                env: Optional[CaseEnv] = None) -> List[Metric]:
    """mkdir() of ``dirs`` directories, then rmdir() of each: ops/s over both."""
    d = directory
    clock = _Clock(cfg.time_limit)
    made = 0
    t0 = time.perf_counter()
    for i in range(cfg.dirs):
        os.mkdir(os.path.join(d, f"d{i}"))
        made += 1
        if clock.over():
            break
    for i in range(made):
        os.rmdir(os.path.join(d, f"d{i}"))
    secs = time.perf_counter() - t0
    return [Metric("mkdir+rmdir", _rate(2 * made, secs), "ops/s",
                   note=_short(made, cfg.dirs, "pairs"))]


@_scratch("rename")
def rename(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """rename() of small files to new names in the same directory."""
    d = directory
    made = _make_files(d, cfg.files, cfg.time_limit)
    clock = _Clock(cfg.time_limit)
    done = 0
    t0 = time.perf_counter()
    for i in range(made):
        os.rename(os.path.join(d, f"f{i}"), os.path.join(d, f"r{i}"))
        done += 1
        if clock.over():
            break
    secs = time.perf_counter() - t0
    return [Metric("rename", _rate(done, secs), "ops/s", note=_short(done, cfg.files))]


def drop_caches(cfg: Config = FULL) -> bool:
    """Drop the machine's clean page cache, dentries and inodes (``echo 3 >
    /proc/sys/vm/drop_caches``, root only; dirty pages are synced first): the kernel then
    asks every filesystem again, FUSE mounts included.  False when not allowed, or not
    wanted (``cfg.drop_caches`` off: the smoke test must not empty a shared machine's
    caches)."""
    if not cfg.drop_caches:
        return False
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


_NOT_DROPPED = "caches NOT dropped (needs root; off in the smoke test): warm numbers"


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
            clock = _Clock(cfg.time_limit)
            done = 0
            t0 = time.perf_counter()
            for name in names:
                os.stat(name, dir_fd=dfd)
                done += 1
                if clock.over():
                    break
            rounds.append(_rate(done, time.perf_counter() - t0))
        finally:
            os.close(dfd)
        if done < len(names):
            note = _short(done, len(names))
    note = "; ".join(filter(None, [note, f"median of {len(rounds)} passes",
                                   "" if dropped else _NOT_DROPPED]))
    if made < cfg.files:
        note = f"setup made {made} of {cfg.files} files; {note}"
    return [Metric("stat (caches dropped)", statistics.median(rounds), "ops/s", note=note)]


# -- data --------------------------------------------------------------------------------

SEQ_NAME = "seq.dat"


def _evict(fd: int, env: CaseEnv) -> None:
    """Drop the mount's cached pages of this file, so reads go to the filesystem.  The raw
    directory keeps its page cache: it is the limit, and the FUSE peers' bricks are warm."""
    if env.fuse:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write_file(path: str, size: int, block: int, clock: Optional[_Clock] = None) -> int:
    buf = os.urandom(min(block, 1 << 16)) * max(1, block // (1 << 16))
    buf = buf[:block]
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while written < size:
            written += os.write(fd, buf[:min(block, size - written)])
            if clock is not None and clock.over():
                break
    finally:
        os.close(fd)
    return written


@_repeated
def seq_write(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """Sequential write of ``seq_bytes`` in ``block`` writes into a new file, close
    included, no fsync (after a sync(2) beforehand, untimed)."""
    path = os.path.join(directory, SEQ_NAME)
    try:
        os.unlink(path)  # a new file every time, not an overwrite
    except FileNotFoundError:
        pass
    # Start with no dirty pages on the machine (untimed): otherwise the writeback of the
    # previous peer's 256 MiB throttles this one.
    os.sync()
    clock = _Clock(cfg.time_limit)
    t0 = time.perf_counter()
    written = _write_file(path, cfg.seq_bytes, cfg.block, clock)
    secs = time.perf_counter() - t0
    note = f"{cfg.seq_bytes // MiB} MiB in {cfg.block // 1024} KiB writes"
    if written < cfg.seq_bytes:
        note = f"time limit: {written // MiB} MiB written; " + note
    return [Metric(f"seq write {cfg.seq_bytes // MiB} MiB", written / MiB / secs, "MiB/s",
                   note=note)]


def _seq_file(directory: str, cfg: Config) -> str:
    path = os.path.join(directory, SEQ_NAME)
    try:
        if os.stat(path).st_size >= cfg.seq_bytes:
            return path
    except FileNotFoundError:
        pass
    _write_file(path, cfg.seq_bytes, cfg.block)
    return path


@_repeated
def seq_read(directory: str, cfg: Config = FULL, env: Optional[CaseEnv] = None) -> List[Metric]:
    """Sequential read of the ``seq_bytes`` file in ``block`` reads, cold in the mount."""
    env = env or CaseEnv()
    path = _seq_file(directory, cfg)
    fd = os.open(path, os.O_RDONLY)
    try:
        _evict(fd, env)
        clock = _Clock(cfg.time_limit)
        got = 0
        t0 = time.perf_counter()
        while True:
            chunk = os.read(fd, cfg.block)
            if not chunk:
                break
            got += len(chunk)
            if clock.over():
                break
        secs = time.perf_counter() - t0
    finally:
        os.close(fd)
    note = f"{cfg.block // 1024} KiB reads" + ("; page cache of the mount dropped first"
                                                 if env.fuse else "; page cache warm")
    if got < cfg.seq_bytes:
        note = f"time limit: {got // MiB} MiB read; " + note
    return [Metric(f"seq read {cfg.seq_bytes // MiB} MiB cold", got / MiB / secs, "MiB/s",
                   note=note)]


@_repeated
def random_read(directory: str, cfg: Config = FULL,
                env: Optional[CaseEnv] = None) -> List[Metric]:
    """4 KiB preads at random page-aligned offsets of the sequential file, readahead off
    (POSIX_FADV_RANDOM), cold in the mount."""
    env = env or CaseEnv()
    path = _seq_file(directory, cfg)
    pages = cfg.seq_bytes // 4096
    rng = random.Random(1234)
    offsets = [rng.randrange(pages) * 4096 for _ in range(cfg.random_reads)]
    fd = os.open(path, os.O_RDONLY)
    try:
        _evict(fd, env)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        clock = _Clock(cfg.time_limit)
        done = 0
        t0 = time.perf_counter()
        for off in offsets:
            if len(os.pread(fd, 4096, off)) != 4096:
                raise AssertionError(f"short read at {off}")
            done += 1
            if clock.over():
                break
        secs = time.perf_counter() - t0
    finally:
        os.close(fd)
    note = f"{done} reads over {cfg.seq_bytes // MiB} MiB"
    if done < cfg.random_reads:
        note = "time limit; " + note
    return [Metric("random 4 KiB read", _rate(done, secs), "ops/s", note=note)]


@_repeated
def seq_write_fsync(directory: str, cfg: Config = FULL,
                    env: Optional[CaseEnv] = None) -> List[Metric]:
    """Sequential write of ``seq_bytes`` in ``block`` writes into a new file, then fsync
    and close, all timed (after a sync(2) beforehand, untimed): the data reaches the disk."""
    path = os.path.join(directory, "seq-fsync.dat")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.sync()
    clock = _Clock(cfg.time_limit)
    buf = (os.urandom(1 << 16) * max(1, cfg.block // (1 << 16)))[:cfg.block]
    written = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while written < cfg.seq_bytes:
            written += os.write(fd, buf[:min(cfg.block, cfg.seq_bytes - written)])
            if clock.over():
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    secs = time.perf_counter() - t0
    os.unlink(path)
    note = f"{cfg.seq_bytes // MiB} MiB in {cfg.block // 1024} KiB writes, fsync included"
    if written < cfg.seq_bytes:
        note = f"time limit: {written // MiB} MiB written; " + note
    return [Metric(f"seq write {cfg.seq_bytes // MiB} MiB + fsync", written / MiB / secs,
                   "MiB/s", note=note)]


def _read_all(path: str, block: int, clock: Optional[_Clock] = None) -> int:
    got = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            chunk = os.read(fd, block)
            if not chunk:
                break
            got += len(chunk)
            if clock is not None and clock.over():
                break
    finally:
        os.close(fd)
    return got


@_repeated
def seq_read_warm(directory: str, cfg: Config = FULL,
                  env: Optional[CaseEnv] = None) -> List[Metric]:
    """Sequential read of the ``seq_bytes`` file through a second open, right after a
    first open read it all (untimed): a mount that keeps its page cache across opens of
    an unchanged file serves it from the kernel."""
    path = _seq_file(directory, cfg)
    _read_all(path, cfg.block)
    clock = _Clock(cfg.time_limit)
    t0 = time.perf_counter()
    got = _read_all(path, cfg.block, clock)
    secs = time.perf_counter() - t0
    note = f"{cfg.block // 1024} KiB reads, second open"
    if got < cfg.seq_bytes:
        note = f"time limit: {got // MiB} MiB read; " + note
    return [Metric(f"seq read {cfg.seq_bytes // MiB} MiB warm", got / MiB / secs, "MiB/s",
                   note=note)]


RANDOM_FILE_BYTES = 64 * MiB
RANDOM_NAME = "random.dat"


@_repeated
def random_read_warm(directory: str, cfg: Config = FULL,
                     env: Optional[CaseEnv] = None) -> List[Metric]:
    """4 KiB preads at random page offsets of a 64 MiB file (``seq_bytes`` if smaller)
    whose every page the same fd read once before (untimed): the page cache serves them
    wherever the mount lets it."""
    size = min(RANDOM_FILE_BYTES, cfg.seq_bytes)
    path = os.path.join(directory, RANDOM_NAME)
    try:
        if os.stat(path).st_size != size:
            raise FileNotFoundError(path)
    except FileNotFoundError:
        _write_file(path, size, cfg.block)
    pages = size // 4096
    rng = random.Random(4321)
    offsets = [rng.randrange(pages) * 4096 for _ in range(cfg.random_reads)]
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in range(0, size, cfg.block):
            os.pread(fd, cfg.block, off)
        clock = _Clock(cfg.time_limit)
        done = 0
        t0 = time.perf_counter()
        for off in offsets:
            if len(os.pread(fd, 4096, off)) != 4096:
                raise AssertionError(f"short read at {off}")
            done += 1
            if clock.over():
                break
        secs = time.perf_counter() - t0
    finally:
        os.close(fd)
    note = f"{done} reads over {size // MiB} MiB, pages read once before"
    if done < cfg.random_reads:
        note = "time limit; " + note
    return [Metric(f"random 4 KiB read {size // MiB} MiB warm", _rate(done, secs), "ops/s",
                   note=note)]


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
