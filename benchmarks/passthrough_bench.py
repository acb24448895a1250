"""Measure FUSE passthrough: local.vol with and without ``--fuse-passthrough`` against the
raw brick directory, on real mounts (root).

    python -m benchmarks.passthrough_bench [--size-mb 256] [--rounds 3]

Cases (each peer in turn, the order rotating every round; the median is kept):
- ``write``: sequential 1 MiB writes of ``size`` MiB into a new file, then fsync;
- ``read cold``: the file read sequentially after dropping its pages (posix_fadvise
  DONTNEED on the brick file and on the file through the mount);
- ``read warm``: the same read again at once (pages kept by whoever caches them);
- ``random 4k``: 4 KiB preads at random offsets in a 64 MiB file (warm).
Prints MB/s (ops/s for random reads) and the ratio to the raw directory.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from tests.mountlib import VOLFILES, Mounted

CHUNK = 1 << 20


def _drop(*paths: str) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write(path: str, size: int) -> float:
    buf = os.urandom(CHUNK)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // CHUNK):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size / (time.perf_counter() - t0) / 1e6


def read(path: str) -> float:
    n = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            got = os.read(fd, CHUNK)
            if not got:
                break
            n += len(got)
    finally:
        os.close(fd)
    return n / (time.perf_counter() - t0) / 1e6


def random_reads(path: str, count: int = 20000) -> float:
    rng = random.Random(1)
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = os.fstat(fd).st_size // 4096
        for i in range(blocks):                 # warm: every page cached once
            os.pread(fd, 4096, i * 4096)
        offsets = [rng.randrange(blocks) * 4096 for _ in range(count)]
        t0 = time.perf_counter()
        for off in offsets:
            os.pread(fd, 4096, off)
        return count / (time.perf_counter() - t0)
    finally:
        os.close(fd)


def run_case(case: str, root: str, brick: str, size: int) -> float:
    big, small = os.path.join(root, "big"), os.path.join(root, "small")
    if case == "write":
        return write(big, size)
    if case == "read cold":
        _drop(os.path.join(brick, "big"), big)
        return read(big)
    if case == "read warm":
        read(big)
        return read(big)
    if not os.path.exists(small):
        write(small, 64 << 20)
    return random_reads(small)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default="write,read cold,read warm,random 4k",
                   help="comma list of cases (random 4k alone needs no big file)")
    a = p.parse_args()
    size = a.size_mb << 20
    cases = tuple(c.strip() for c in a.cases.split(",") if c.strip())
    with tempfile.TemporaryDirectory(prefix="xlfs-ptbench-") as tmp:
        t = Path(tmp)
        raw = t / "raw"
        raw.mkdir()
        peers = {"raw": (str(raw), str(raw))}
        mounts = []
        try:
            for name, mode in (("xlfs", "no"), ("xlfs+passthrough", "yes")):
                m = Mounted(VOLFILES / "local.vol", t / name, f"--fuse-passthrough={mode}",
                            "--log-level=WARNING", limit=3600)
                m.__enter__()
                mounts.append(m)
                peers[name] = (str(m.mountpoint), str(m.brick))
            results: dict = {(c, n): [] for c in cases for n in peers}
            names = list(peers)
            for r in range(a.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for case in cases:
                    for n in order:
                        root, brick = peers[n]
                        results[(case, n)].append(run_case(case, root, brick, size))
        finally:
            for m in reversed(mounts):
                m.__exit__(None, None, None)
    print(f"{'case':<12}" + "".join(f"{n:>26}" for n in peers))
    for case in cases:
        unit = "ops/s" if case == "random 4k" else "MB/s"
        base = statistics.median(results[(case, "raw")])
        cells = []
        for n in peers:
            v = statistics.median(results[(case, n)])
            cells.append(f"{v:>12.0f} {unit:<5} {v / base:>5.2f}x")
        print(f"{case:<12}" + "".join(f"{c:>26}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
