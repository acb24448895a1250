"""The file data cases: sequential write (with and without fsync), sequential read cold
and warm, random 4 KiB reads cold and warm.  Each takes (directory, Config, CaseEnv) and
returns its Metrics, like the cases of benchmarks/cases.py, which lists them all."""
from __future__ import annotations

import os
import random
import time
from typing import List, Optional

from .case_base import (FULL, MiB, CaseEnv, Config, Metric, _Clock, _rate, _repeated)

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
