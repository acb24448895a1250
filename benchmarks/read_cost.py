"""What a cold sequential read costs each client, READ by READ: how many READs the kernel
sends, their sizes, how many are in flight, the time of each from the kernel's send to
the reply (the ``fuse:fuse_request_send`` and ``fuse_request_end`` tracepoints, so any
daemon is measured alike), and the CPU each of the daemon's threads spent per READ
(``/proc/PID/task``).  The peers take turns on one file each; the pages of the mount
are dropped before each read (``posix_fadvise(DONTNEED)``), as the cold read case does.

    .venv/bin/python -m benchmarks.read_cost --peers gfapi,glusterfs-replica --rounds 2

docs/gluster.md ("Where a cold READ's time went") has what it found.  Needs root
(tracefs) and the peers' own requirements.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from .fuse_trace import FuseTrace, events, unavailable
from .run import PEERS

MiB = 1 << 20
READ = 15            # FUSE_READ


def thread_cpu(pid: int) -> Dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid`` by tid, named
    ``loop`` for the main thread, else by the thread's name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: Dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = "loop" if tid == str(pid) else text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[f"{name}:{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def per_name(before: Dict[str, float], after: Dict[str, float], n: int) -> Dict[str, int]:
    """Microseconds of CPU per READ, summed over the threads of each name."""
    out: Dict[str, float] = {}
    for key, cpu in after.items():
        name = key.split(":")[0]
        out[name] = out.get(name, 0.0) + cpu - before.get(key, 0.0)
    return {k: round(v / max(1, n) * 1e6) for k, v in
            sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}


def reads_of(text: str) -> dict:
    """READ count, reply sizes, in flight (max, mean at each send) and latency (us)."""
    sent: Dict[int, float] = {}
    lat: List[float] = []
    sizes: Dict[int, int] = {}
    flight, at_send = 0, []
    for ev in events(text):
        if ev.kind == "send":
            if ev.opcode == READ:
                sent[ev.unique] = ev.time
                flight += 1
                at_send.append(flight)
        elif ev.unique in sent:
            flight -= 1
            lat.append((ev.time - sent.pop(ev.unique)) * 1e6)
            size = ev.length - 16                 # the reply's header is 16 bytes
            sizes[size] = sizes.get(size, 0) + 1
    lat.sort()

    def q(p: float) -> int:
        return round(lat[int(p * (len(lat) - 1))]) if lat else 0
    return {"reads": len(lat), "sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:3]),
            "in_flight_max": max(at_send or [0]),
            "in_flight_mean": round(statistics.mean(at_send), 2) if at_send else 0,
            "us_p10": q(0.1), "us_p50": q(0.5), "us_p90": q(0.9)}


class PeerProblem(Exception):
    """Why a tool of this kind cannot run: the trace or a peer is missing (exit code 1) or
    a peer's name is unknown (exit code 2)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def mount_peers(peers: str, work: str, stack: contextlib.ExitStack,
                limit: float) -> Dict[str, Any]:
    """Mount each peer of benchmarks.run named in the comma list ``peers``, in its own
    directory under ``work``, with a 1 s attribute and entry timeout; ``stack`` unmounts
    them.  Raises PeerProblem before mounting anything when one cannot run."""
    why = unavailable()
    if why:
        raise PeerProblem(why, 1)
    names = peers.split(",")
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise PeerProblem(f"unknown peer {unknown[0]!r} (known: {', '.join(PEERS)})", 2)
    mounts = {}
    for name in names:
        wd = Path(work) / name
        wd.mkdir()
        mounts[name] = stack.enter_context(PEERS[name]().session(wd, (1.0, 1.0, 0.0), limit))
    return mounts


def cold_read(path: str, block: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        done = 0
        while True:
            n = len(os.read(fd, block))
            if not n:
                return done
            done += n
    finally:
        os.close(fd)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="gfapi,glusterfs-replica")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mib", type=int, default=128, help="size of the file read")
    ap.add_argument("--block", type=int, default=1024, help="KiB per read(2)")
    args = ap.parse_args(argv)
    chunk = os.urandom(MiB)
    with tempfile.TemporaryDirectory(prefix="xlfs-read-cost-") as work, \
            contextlib.ExitStack() as stack:
        try:
            mounts = mount_peers(args.peers, work, stack, 600)
        except PeerProblem as exc:
            print(f"read_cost: {exc}", file=sys.stderr)
            return exc.code
        for m in mounts.values():
            with open(os.path.join(m.directory, "big"), "wb") as f:
                for _ in range(args.mib):
                    f.write(chunk)
        print(f"load average {os.getloadavg()[0]:.1f}; {args.mib} MiB in "
              f"{args.block} KiB reads", flush=True)
        for _ in range(args.rounds):
            for name, m in mounts.items():
                before = thread_cpu(m.pid)
                with FuseTrace(m.connection, events=200000, ends=True) as trace:
                    t0 = time.perf_counter()
                    done = cold_read(os.path.join(m.directory, "big"), args.block * 1024)
                    seconds = time.perf_counter() - t0
                r = reads_of(trace.text)
                cpu = per_name(before, thread_cpu(m.pid), r["reads"])
                print(f"{name:18s} {done / MiB / seconds:7.1f} MiB/s  {r}  "
                      f"cpu us/READ {cpu}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
