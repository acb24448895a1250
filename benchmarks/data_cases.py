"""The file data cases: sequential write (with and without fsync), sequential read cold
and warm, random 4 KiB reads cold and warm.  Each takes (directory, Config, CaseEnv) and
returns its Metrics, like the cases of benchmarks/cases.py, which lists them all.  Every
timed part is a generator of work for case_base.timed_loop."""
from __future__ import annotations

import os
import random
from typing import Iterator, List, Optional, Sequence

from .case_base import FULL, MiB, CaseEnv, Config, Metric, _repeated, timed_loop

SEQ_NAME = "seq.dat"


def _evict(fd: int, env: CaseEnv) -> None:
    """Drop the mount's cached pages of this file, so reads go to the filesystem.  The raw
    directory keeps its page cache: it is the limit, and the FUSE peers' bricks are warm."""
    if env.fuse:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _writes(path: str, size: int, block: int, fsync: bool = False) -> Iterator[int]:
    """Create ``path`` anew and write ``size`` bytes in ``block`` writes (then fsync if
    asked) and close it; yields the bytes of each write."""
    buf = (os.urandom(min(block, 1 << 16)) * max(1, block // (1 << 16)))[:block]
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while written < size:
            n = os.write(fd, buf[:min(block, size - written)])
            written += n
            yield n
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, size: int, block: int) -> int:
    """Untimed setup: ``path`` with ``size`` bytes of random data."""
    return sum(_writes(path, size, block))


def _chunks(fd: int, block: int) -> Iterator[int]:
    """Read ``fd`` to its end in ``block`` reads; yields the bytes of each."""
    while True:
        n = len(os.read(fd, block))
        if not n:
            return
        yield n


def _read_through(path: str, block: int) -> Iterator[int]:
    """Open ``path``, read it all in ``block`` reads, close it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        yield from _chunks(fd, block)
    finally:
        os.close(fd)


def _preads(fd: int, offsets: Sequence[int]) -> Iterator[int]:
    """One 4 KiB pread at each offset; yields 1 per read."""
    for off in offsets:
        if len(os.pread(fd, 4096, off)) != 4096:
            raise AssertionError(f"short read at {off}")
        yield 1


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
    t = timed_loop(_writes(path, cfg.seq_bytes, cfg.block), cfg.seq_bytes, cfg.time_limit)
    note = t.note(f"{cfg.seq_bytes // MiB} MiB in {cfg.block // 1024} KiB writes",
                  f"{t.done // MiB} MiB written")
    return [Metric(f"seq write {cfg.seq_bytes // MiB} MiB", t.done / MiB / t.seconds,
                   "MiB/s", note=note)]


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
        t = timed_loop(_chunks(fd, cfg.block), cfg.seq_bytes, cfg.time_limit)
    finally:
        os.close(fd)
    note = t.note(f"{cfg.block // 1024} KiB reads" + ("; page cache of the mount dropped "
                                                      "first" if env.fuse
                                                      else "; page cache warm"),
                  f"{t.done // MiB} MiB read")
    return [Metric(f"seq read {cfg.seq_bytes // MiB} MiB cold", t.done / MiB / t.seconds,
                   "MiB/s", note=note)]


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
        t = timed_loop(_preads(fd, offsets), len(offsets), cfg.time_limit)
    finally:
        os.close(fd)
    note = t.note(f"{t.done} reads over {cfg.seq_bytes // MiB} MiB")
    return [Metric("random 4 KiB read", t.rate, "ops/s", note=note)]


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
    t = timed_loop(_writes(path, cfg.seq_bytes, cfg.block, fsync=True), cfg.seq_bytes,
                   cfg.time_limit)
    os.unlink(path)
    note = t.note(f"{cfg.seq_bytes // MiB} MiB in {cfg.block // 1024} KiB writes, fsync "
                  "included", f"{t.done // MiB} MiB written")
    return [Metric(f"seq write {cfg.seq_bytes // MiB} MiB + fsync", t.done / MiB / t.seconds,
                   "MiB/s", note=note)]


@_repeated
def seq_read_warm(directory: str, cfg: Config = FULL,
                  env: Optional[CaseEnv] = None) -> List[Metric]:
    """Sequential read of the ``seq_bytes`` file through a second open, right after a
    first open read it all (untimed): a mount that keeps its page cache across opens of
    an unchanged file serves it from the kernel."""
    path = _seq_file(directory, cfg)
    sum(_read_through(path, cfg.block))
    t = timed_loop(_read_through(path, cfg.block), cfg.seq_bytes, cfg.time_limit)
    note = t.note(f"{cfg.block // 1024} KiB reads, second open", f"{t.done // MiB} MiB read")
    return [Metric(f"seq read {cfg.seq_bytes // MiB} MiB warm", t.done / MiB / t.seconds,
                   "MiB/s", note=note)]


RANDOM_FILE_BYTES = 64 * MiB
RANDOM_NAME = "random.dat"
#: A warm 4 KiB pread costs 1-3 us: ``random_reads`` of them would be timed in 20-60 ms,
#: shorter than what other processes take of a 2-core machine's time in one go, and the
#: rounds moved by 0.7-1.3x for that alone.  Ten times as many time 0.2-0.6 s.
WARM_READS_PER_RANDOM_READ = 10


@_repeated
def random_read_warm(directory: str, cfg: Config = FULL,
                     env: Optional[CaseEnv] = None) -> List[Metric]:
    """4 KiB preads (``WARM_READS_PER_RANDOM_READ`` times ``random_reads``) at random page
    offsets of a 64 MiB file (``seq_bytes`` if smaller) whose every page the same fd read
    once before (untimed): the page cache serves them wherever the mount lets it."""
    size = min(RANDOM_FILE_BYTES, cfg.seq_bytes)
    path = os.path.join(directory, RANDOM_NAME)
    try:
        if os.stat(path).st_size != size:
            raise FileNotFoundError(path)
    except FileNotFoundError:
        _write_file(path, size, cfg.block)
    pages = size // 4096
    rng = random.Random(4321)
    offsets = [rng.randrange(pages) * 4096
               for _ in range(cfg.random_reads * WARM_READS_PER_RANDOM_READ)]
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in range(0, size, cfg.block):
            os.pread(fd, cfg.block, off)
        t = timed_loop(_preads(fd, offsets), len(offsets), cfg.time_limit)
    finally:
        os.close(fd)
    note = t.note(f"{t.done} reads over {size // MiB} MiB, pages read once before")
    return [Metric(f"random 4 KiB read {size // MiB} MiB warm", t.rate, "ops/s", note=note)]
