"""Round trips per application call on a GlusterFS volume: for each metadata case of the
benchmark, the requests the kernel sent the client (the ``fuse:fuse_request_send``
tracepoint, benchmarks/fuse_trace.py) and the requests the bricks served (their
debug/io-stats counters, read from a statedump before and after; tests/gluster/bricks.py),
per call, for each peer of benchmarks/gluster_peers.py on its own fresh volume.

    .venv/bin/python -m benchmarks.gluster_fops --peers gfapi,gfapi-base,glusterfs-replica

The counts are deterministic where the clients are (a kernel cache that expires inside a
loop, or replicate's choice of a brick, can move them a little); the microseconds per
call are one pass, for orientation only.  Each case does what its namesake in
benchmarks/cases.py does, with the same cache profile.  Needs root (bricks, tracefs).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import stat as stat_mod
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from fuse_bridge.abi import opcode_name

from . import fuse_trace
from .case_base import drop_caches
from .cases import PROFILES
from .gluster_peers import GLUSTER_PEERS

Counts = Dict[str, float]
SETTLE = 0.3          # s after the loop for requests sent after it (RELEASE, FORGET)


def _mknod(d: str, n: int) -> None:
    for i in range(n):
        os.mknod(os.path.join(d, f"f{i}"), stat_mod.S_IFREG | 0o644)


def _files_with_data(d: str, n: int) -> None:
    for i in range(n):
        _create(d, i)


def _create(d: str, i: int) -> None:
    fd = os.open(os.path.join(d, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"x" * 4096)
    finally:
        os.close(fd)


def _one_file(d: str, n: int) -> None:
    _mknod(d, 1)
    for _ in range(20):                       # stat_latency's warm-up
        os.stat(os.path.join(d, "f0"))


def _stat_at(d: str, name: str) -> None:
    """stat of ``name`` in ``d`` through a descriptor of ``d``, as the benchmark does
    (one LOOKUP, not one per component of the path)."""
    fd = _dir_fds.get(d)
    if fd is None:
        fd = _dir_fds[d] = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.stat(name, dir_fd=fd)


_dir_fds: Dict[str, int] = {}


def _close_dir_fds() -> None:
    while _dir_fds:
        os.close(_dir_fds.popitem()[1])


def _expire(d: str) -> None:
    time.sleep(max(PROFILES["cached"][:2]) + 0.05)


def _drop(d: str) -> None:
    if not drop_caches():
        raise RuntimeError("cannot drop the caches (needs root)")


def _mkdir_rmdir(d: str, i: int) -> None:
    path = os.path.join(d, f"d{i}")
    os.mkdir(path)
    os.rmdir(path)


@dataclass(frozen=True)
class Case:
    name: str
    profile: str                                  # a key of benchmarks.cases.PROFILES
    call: Callable[[str, int], None]              # the i-th application call (timed)
    setup: Callable[[str, int], None] = lambda d, n: None
    before: Callable[[str], None] = lambda d: None   # right before the loop


CASES = [
    Case("stat_latency", "nocache", lambda d, i: _stat_at(d, "f0"), _one_file),
    Case("stat", "cached", lambda d, i: _stat_at(d, f"f{i}"), _mknod, _expire),
    Case("stat_dropped", "cached", lambda d, i: _stat_at(d, f"f{i}"), _mknod, _drop),
    Case("rename", "cached",
         lambda d, i: os.rename(os.path.join(d, f"f{i}"), os.path.join(d, f"r{i}")),
         _mknod),
    Case("mkdir_rmdir", "cached", _mkdir_rmdir),
    Case("create", "cached", _create),
    Case("unlink", "cached", lambda d, i: os.unlink(os.path.join(d, f"f{i}")),
         _files_with_data),
]


@dataclass
class Result:
    kernel: Counts          # requests per call, by opcode
    kernel_us: Counts       # median microseconds from the kernel's send to the reply
    bricks: Counts          # requests per call, both bricks, by fop
    bricks_us: Counts       # mean microseconds the bricks spent on each (below io-stats)
    us: float               # wall time per call
    lost: bool = False


def _per_call(before: Dict[str, tuple], after: Dict[str, tuple], n: int
              ) -> Tuple[Counts, Counts]:
    counts, us = {}, {}
    for k in sorted(after):
        c0, t0 = before.get(k, (0, 0))
        c1, t1 = after[k]
        if c1 != c0:
            counts[k] = round((c1 - c0) / n, 2)
            us[k] = round((t1 - t0) / (c1 - c0) / 1000)
    return counts, us


def kernel_latency(text: str) -> Counts:
    """Median microseconds from send to reply of each opcode, from a trace with ends."""
    lat: Dict[str, List[float]] = {}
    for r in fuse_trace.replies(text):
        lat.setdefault(opcode_name(r.opcode), []).append((r.ended - r.sent) * 1e6)
    return {op: round(statistics.median(v)) for op, v in sorted(lat.items())}


def measure(case: Case, directory: str, bricks, connection: int, n: int) -> Result:
    d = os.path.join(directory, case.name)
    os.mkdir(d)
    case.setup(d, n)
    case.before(d)
    b0 = bricks.fop_stats()
    try:
        with fuse_trace.FuseTrace(connection, events=20 * n, ends=True) as trace:
            t = time.perf_counter()
            for i in range(n):
                case.call(d, i)
            t = time.perf_counter() - t
            time.sleep(SETTLE)
    finally:
        _close_dir_fds()
    b1 = bricks.fop_stats()
    counts, us = _per_call(b0, b1, n)
    return Result({k: round(v / n, 2) for k, v in sorted(trace.counts().items())},
                  kernel_latency(trace.text), counts, us, t / n * 1e6, trace.lost())


def run(peers: List[str], cases: List[Case], n: int, workdir: str,
        limit: float) -> Dict[Tuple[str, str], Result]:
    results: Dict[Tuple[str, str], Result] = {}
    for profile in PROFILES:
        todo = [c for c in cases if c.profile == profile]
        if not todo:
            continue
        for name in peers:
            peer = GLUSTER_PEERS[name]()
            peer.profile = True
            wd = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
            try:
                with peer.session(wd, PROFILES[profile], limit) as m:
                    for case in todo:
                        results[(case.name, name)] = r = measure(
                            case, m.directory, peer.bricks, m.connection, n)
                        print(f"{case.name:13} {name:18} {r.us:8.0f} us  kernel "
                              f"{_fmt(r.kernel)} ({_fmt(r.kernel_us)} us)  bricks "
                              f"{_fmt(r.bricks)} ({_fmt(r.bricks_us)} us)"
                              + ("  (trace lost events)" if r.lost else ""), flush=True)
            finally:
                shutil.rmtree(wd, ignore_errors=True)
    return results


def _fmt(c: Counts, us: Optional[Counts] = None) -> str:
    if us is None:
        return ", ".join(f"{k} {v:g}" for k, v in c.items()) or "-"
    return ", ".join(f"{k} {v:g} ({us[k]:g})" if k in us else f"{k} {v:g}"
                     for k, v in c.items()) or "-"


def markdown(results: Dict[Tuple[str, str], Result], peers: List[str],
             cases: List[Case]) -> str:
    rows = ["| case | peer | kernel requests per call (median us each) | brick requests "
            "per call, both bricks (mean us each) | us per call |", "|---|---|---|---|---:|"]
    for case in cases:
        for name in peers:
            r = results.get((case.name, name))
            if r is not None:
                rows.append(f"| {case.name} | {name} | {_fmt(r.kernel, r.kernel_us)} | "
                            f"{_fmt(r.bricks, r.bricks_us)} | {r.us:,.0f} |")
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="gfapi,glusterfs-replica")
    ap.add_argument("--cases", default=",".join(c.name for c in CASES))
    ap.add_argument("-n", type=int, default=200, help="calls per case (default 200)")
    ap.add_argument("--workdir", default=None, help="where the bricks go (default: the "
                    "system temp dir; a local disk with trusted.* xattrs)")
    ap.add_argument("--limit", type=float, default=600.0, help="hard limit of one mount (s)")
    args = ap.parse_args(argv)
    peers = args.peers.split(",")
    unknown = [p for p in peers if p not in GLUSTER_PEERS]
    by_name = {c.name: c for c in CASES}
    wanted = args.cases.split(",")
    unknown += [c for c in wanted if c not in by_name]
    if unknown:
        ap.error(f"unknown peers or cases: {', '.join(unknown)}")
    why = fuse_trace.unavailable()
    if why:
        print(f"cannot count FUSE requests: {why}", file=sys.stderr)
        return 2
    cases = [by_name[c] for c in wanted]
    try:
        results = run(peers, cases, args.n, args.workdir or tempfile.gettempdir(),
                      args.limit)
    finally:
        fuse_trace.release_tracefs()
    print()
    print(markdown(results, peers, cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
