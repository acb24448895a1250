"""What every benchmark case shares: sizes and time bounds (Config), what a case knows of
its peer (CaseEnv), what it returns (Metric), fresh scratch directories, time-bounded
loops (timed_loop) and dropping the kernel's caches.  The cases are in
benchmarks/cases.py (metadata) and benchmarks/data_cases.py (file data)."""
from __future__ import annotations

import functools
import os
import shutil
import stat as stat_mod
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, List, Optional, TypeVar

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


@dataclass(frozen=True)
class Timed:
    """What one timed loop did: ``done`` of the ``wanted`` units (bytes, calls) in
    ``seconds``; fewer when the time limit cut it short."""
    done: int
    wanted: int
    seconds: float

    @property
    def cut(self) -> bool:
        return self.done < self.wanted

    @property
    def rate(self) -> float:
        return _rate(self.done, self.seconds)

    def note(self, text: str, what: str = "") -> str:
        """``text``, led by "time limit: WHAT; " (or "time limit; ") when cut short."""
        if not self.cut:
            return text
        return f"time limit: {what}; {text}" if what else f"time limit; {text}"


def timed_loop(work: Iterator[int], wanted: int, limit: float) -> Timed:
    """Time ``work``, a generator doing one operation per item it yields (the item: how
    much it did), until it ends or ``limit`` seconds have passed.  The generator's own
    setup and cleanup (an open, an fsync, a close in its ``finally``) are timed with it:
    it is closed inside the timed span."""
    clock = _Clock(limit)
    done = 0
    t0 = time.perf_counter()
    try:
        for amount in work:
            done += amount
            if clock.over():
                break
    finally:
        close = getattr(work, "close", None)
        if close is not None:
            close()
    return Timed(done, wanted, time.perf_counter() - t0)


T = TypeVar("T")


def each(fn: Callable[[T], Any], items: Iterable[T]) -> Iterator[int]:
    """``fn(item)`` for every item, as ``timed_loop`` work: one unit each."""
    for item in items:
        fn(item)
        yield 1


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
