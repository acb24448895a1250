"""Warm random 4 KiB preads, measured finely: what a peer costs per read once every page
of the file is in a page cache, and whether any request reaches its daemon meanwhile.

    python -m benchmarks.warm_read_probe \\
        --peers raw,xlfs-fast-pt,xlfs-pt,xlfs-fast,bindfs,glusterfs-perf \\
        --rounds 40 --reads 20000 --brick xlfs-fast-pt --trace

Every peer is mounted once (benchmarks.run's "cached" settings: 1 s attribute and entry
timeouts) and gets the 64 MiB file of the ``random_read_warm`` case, opened once.  Then
each round, on every peer in turn (the order rotated from round to round), reads the file
through (untimed: anything evicted since comes back) and times ``--reads`` preads at
random page offsets (one list per round, the same for every peer): short chunks, so that
load from elsewhere on the machine falls on all peers alike.  Per read it records the wall time and the reading thread's own CPU (user +
system, ``RUSAGE_THREAD``): a warm read is served in the reader's system call, so its CPU
is the whole cost and moves far less than wall time when other processes share the
cores.  ``--brick NAME`` adds ``NAME:brick``, the brick file of that FUSE peer read
directly: the very pages a passthrough mount reads, so the two differ by the kernel's
passthrough layer alone.  ``--trace`` counts the FUSE requests each peer's connection
sent during its timed loops (benchmarks/fuse_trace.py; root and tracefs).

The table: medians over the rounds, and the median over rounds of each round's ratio
raw/peer (above 1: the peer is faster than raw), for wall time and for CPU; what the
reader fetched from storage in all its timed loops (page-cache misses of a file read in
the reader's own call: raw, a brick, a passthrough mount); and the FUSE requests.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .case_base import MiB
from .cases import PROFILES
from .data_cases import RANDOM_FILE_BYTES, RANDOM_NAME, _chunks, _write_file
from .fuse_trace import FuseTrace
from .peer_table import PEERS
from .run import cleanup

PAGE = 4096
WARM_BLOCK = 1 * MiB


@dataclass
class Target:
    """One file to read: a peer's, or the brick file below a FUSE peer."""
    name: str
    path: str
    connection: Optional[int] = None       # the FUSE connection to trace, if any
    fd: int = -1
    wall: List[float] = field(default_factory=list)     # ns per read, one per round
    cpu: List[float] = field(default_factory=list)
    fetched: int = 0                       # bytes the reader fetched from storage
    requests: Dict[str, int] = field(default_factory=dict)


def _make_file(path: str, size: int) -> None:
    """The file of random data the reads go to, kept when it has the size already."""
    if not (os.path.exists(path) and os.stat(path).st_size == size):
        _write_file(path, size, WARM_BLOCK)


def _read_through(fd: int) -> None:
    """Read the file through, so that every page is cached (again)."""
    os.lseek(fd, 0, os.SEEK_SET)
    for _ in _chunks(fd, WARM_BLOCK):
        pass


def _thread_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime + r.ru_stime


def _thread_read_bytes() -> int:
    """Bytes this thread caused to be fetched from storage (/proc/thread-self/io): a
    page-cache miss of the raw file, or of the brick file below a passthrough mount, is
    read in the reader's own system call and counted here."""
    with open("/proc/thread-self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def time_preads(fd: int, offsets: Sequence[int]) -> tuple[float, float, int]:
    """(wall ns, thread CPU ns) per 4 KiB pread at each of ``offsets``, and the bytes
    fetched from storage meanwhile."""
    pread = os.pread
    b0 = _thread_read_bytes()
    c0 = _thread_cpu()
    t0 = time.perf_counter()
    for off in offsets:
        pread(fd, PAGE, off)
    wall = time.perf_counter() - t0
    cpu = _thread_cpu() - c0
    fetched = _thread_read_bytes() - b0
    n = len(offsets)
    return wall / n * 1e9, cpu / n * 1e9, fetched


def _one(t: Target, offsets: Sequence[int], trace: bool) -> None:
    _read_through(t.fd)
    if trace and t.connection is not None:
        with FuseTrace(t.connection) as tr:
            wall, cpu, fetched = time_preads(t.fd, offsets)
        for op, n in tr.counts().items():
            t.requests[op] = t.requests.get(op, 0) + n
    else:
        wall, cpu, fetched = time_preads(t.fd, offsets)
    t.wall.append(wall)
    t.cpu.append(cpu)
    t.fetched += fetched


def _paired(base: List[float], other: List[float]) -> str:
    """The median over rounds of base/other, or "n/a" (CPU times of very short loops can
    read as 0)."""
    ratios = [b / o for b, o in zip(base, other) if b > 0 and o > 0]
    return f"{statistics.median(ratios):6.3f}" if ratios else f"{'n/a':>6s}"


def report(targets: List[Target], reads: int) -> str:
    base = targets[0]
    lines = [f"{len(base.wall)} rounds of {reads} preads each; ns per read, medians; "
             f"ratio = median over rounds of {base.name}/peer (above 1: faster than "
             f"{base.name})",
             f"{'peer':22s} {'wall':>7s} {'q1-q3':>13s} {'ratio':>6s} {'cpu':>6s} "
             f"{'ratio':>6s} {'fetched':>8s}  requests in the timed loops"]
    for t in targets:
        q = statistics.quantiles(t.wall, n=4) if len(t.wall) > 1 else [t.wall[0]] * 3
        reqs = ("-" if t.connection is None
                else ", ".join(f"{k} {v}" for k, v in sorted(t.requests.items())) or "none")
        lines.append(f"{t.name:22s} {statistics.median(t.wall):7.0f} "
                     f"{q[0]:6.0f}-{q[2]:<6.0f} {_paired(base.wall, t.wall)} "
                     f"{statistics.median(t.cpu):6.0f} {_paired(base.cpu, t.cpu)} "
                     f"{t.fetched // 1024:6d}Ki  {reqs}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", default="raw,xlfs-fast-pt,xlfs-pt,xlfs-fast,bindfs,glusterfs-perf",
                   help="comma list; the first is the base of the ratios")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--reads", type=int, default=20000, help="preads per peer per round")
    p.add_argument("--brick", default="", help="comma list of FUSE peers whose brick file "
                   "is also read directly (as NAME:brick)")
    p.add_argument("--trace", action="store_true", help="count FUSE requests in the loops")
    p.add_argument("--size-mib", type=int, default=RANDOM_FILE_BYTES // MiB,
                   help="size of the file read (default that of random_read_warm)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--limit", type=float, default=1800.0, help="hard limit of each mount (s)")
    args = p.parse_args(argv)
    names = [n for n in args.peers.split(",") if n]
    bricks = {n for n in args.brick.split(",") if n}
    size = args.size_mib * MiB
    root = Path(tempfile.mkdtemp(prefix="xlfs-warm-read-", dir=args.workdir))
    rng = random.Random(4321)
    targets: List[Target] = []
    try:
        with ExitStack() as stack:
            for name in names:
                m = stack.enter_context(PEERS[name]().session(root / name, PROFILES["cached"],
                                                              args.limit))
                path = os.path.join(m.directory, RANDOM_NAME)
                _make_file(path, size)
                targets.append(Target(name, path, m.connection))
                if name in bricks:
                    brick_file = root / name / "brick" / Path(m.directory).name / RANDOM_NAME
                    targets.append(Target(f"{name}:brick", str(brick_file)))
            for t in targets:
                t.fd = os.open(t.path, os.O_RDONLY)
                stack.callback(os.close, t.fd)
            for rnd in range(args.rounds):
                offsets = [rng.randrange(size // PAGE) * PAGE for _ in range(args.reads)]
                k = rnd % len(targets)
                for t in targets[k:] + targets[:k]:
                    _one(t, offsets, args.trace)
    finally:
        left = cleanup(root)
    print(report(targets, args.reads))
    if left:
        print(f"still mounted: {left}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
