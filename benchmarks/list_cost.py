"""What a cold directory listing costs each client, request by request: how many READDIR
and READDIRPLUS the kernel sends for one ``os.listdir``, the size of each reply, the
entries per reply and the time of each from the kernel's send to the reply (the
``fuse:fuse_request_send`` and ``fuse_request_end`` tracepoints, so any daemon is
measured alike), and the daemon's CPU per listing by thread (``/proc/PID/task``) and its read/write
system calls (``/proc/PID/io``: the network's round trips show there).  The
peers take turns on one directory each; the machine's caches are dropped before each
listing (``echo 3 > /proc/sys/vm/drop_caches``), as the ``readdir ... cold`` case does.

    .venv/bin/python -m benchmarks.list_cost --peers gfapi,glusterfs-replica --rounds 2
    .venv/bin/python -m benchmarks.list_cost --peers xlfs --baseline /work/wt/base

docs/gluster.md (the cold listing) has what it found.  Needs root (tracefs,
drop_caches) and the peers' own requirements.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from .case_base import drop_caches
from .cpu_instr import NamedBaseline
from .fuse_trace import FuseTrace, replies
from .read_cost import PeerProblem, mount_peers, per_name, thread_cpu

OPCODES = {28: "READDIR", 44: "READDIRPLUS"}
# bytes of one entry of a reply: the names listed are f00000..f99999 (6 characters,
# padded to 8), "." and ".." pad to 8 too; fuse_dirent is 24 bytes, fuse_direntplus 152
ENTRY_BYTES = {"READDIR": 24 + 8, "READDIRPLUS": 152 + 8}


def io_counts(pid: int) -> Dict[str, int]:
    """The daemon's read/write syscalls and bytes so far (``/proc/PID/io``: sockets
    and /dev/fuse included), to see the network round trips a listing makes."""
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            key, value = line.split(":")
            if key in ("syscr", "syscw", "rchar", "wchar"):
                out[key] = int(value)
    return out


def schedstat_ns(pid: int) -> int:
    """Nanoseconds on a CPU of every thread of ``pid`` so far (``/proc/PID/task/*/
    schedstat``: exact, where ``/proc/PID/stat``'s ticks are 10 ms); threads that ended
    meanwhile are not counted."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def listing_requests(text: str) -> Dict[str, dict]:
    """Per opcode: count, then for each reply in the order sent its entries and its
    time in ms."""
    rows: Dict[str, List[tuple]] = {}
    for r in replies(text):
        if r.opcode in OPCODES:
            rows.setdefault(OPCODES[r.opcode], []).append((r.ended - r.sent, r.length - 16))
    return {name: {"count": len(r),
                   "entries": [size // ENTRY_BYTES[name] for _, size in r],
                   "ms": [round(t * 1e3, 1) for t, _ in r]}
            for name, r in rows.items()}


def timeline(text: str) -> str:
    """Every request of the listing in the order sent: opcode, when it was sent (ms
    after the first) and how long until its reply (ms), e.g. ``OPENDIR@0.0+0.3``: the
    gaps between a reply and the next request are the kernel's and the program's."""
    rows = sorted((r.sent, r.opcode, r.ended - r.sent) for r in replies(text))
    if not rows:
        return ""
    first = rows[0][0]
    return " ".join(f"{NAMES.get(op, op)}@{(t - first) * 1e3:.1f}+{d * 1e3:.1f}"
                    for t, op, d in rows)


NAMES = {1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 27: "OPENDIR", 28: "READDIR",
         29: "RELEASEDIR", 42: "BATCH_FORGET", 44: "READDIRPLUS"}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="gfapi,glusterfs-replica")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--entries", type=int, default=10000)
    ap.add_argument("--timeline", action="store_true",
                    help="also print every request of each listing with its timing")
    ap.add_argument("--baseline", type=Path, action="append", default=[], metavar="DIR",
                    help="also list through xlfs from the checkout DIR (peer xlfs@NAME)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xlfs-list-cost-") as work, \
            contextlib.ExitStack() as stack:
        try:
            mounts = mount_peers(args.peers, work, stack, 1200)
        except PeerProblem as exc:
            print(f"list_cost: {exc}", file=sys.stderr)
            return exc.code
        for d in args.baseline:
            peer = NamedBaseline(f"xlfs@{d.resolve().name}", d.resolve())
            wd = Path(work) / peer.name
            wd.mkdir()
            mounts[peer.name] = stack.enter_context(peer.session(wd, (1.0, 1.0, 0.0), 1200))
        for m in mounts.values():
            d = os.path.join(m.directory, "many")
            os.mkdir(d)
            for i in range(args.entries):
                os.close(os.open(os.path.join(d, f"f{i:05}"), os.O_CREAT | os.O_WRONLY,
                                 0o644))
        print(f"load average {os.getloadavg()[0]:.1f}; {args.entries} entries",
              flush=True)
        for _ in range(args.rounds):
            for name, m in mounts.items():
                d = os.path.join(m.directory, "many")
                if not drop_caches():
                    print("list_cost: cannot drop caches (not root?)", file=sys.stderr)
                    return 1
                before, io0 = thread_cpu(m.pid), io_counts(m.pid)
                ns0 = schedstat_ns(m.pid)
                with FuseTrace(m.connection, events=200000, ends=True) as trace:
                    t0 = time.perf_counter()
                    n = len(os.listdir(d))
                    seconds = time.perf_counter() - t0
                if n != args.entries:
                    print(f"list_cost: {name} listed {n} of {args.entries}",
                          file=sys.stderr)
                cpu_ms = (schedstat_ns(m.pid) - ns0) / 1e6
                cpu = per_name(before, thread_cpu(m.pid), 1)
                io1 = io_counts(m.pid)
                io = {k: io1[k] - io0[k] for k in io0}
                print(f"{name:18s} {seconds * 1e3:7.1f} ms  {n / seconds:7.0f} entries/s  "
                      f"daemon cpu {cpu_ms:6.2f} ms  "
                      f"{listing_requests(trace.text)}  cpu us/listing {cpu}  io {io}",
                      flush=True)
                if args.timeline:
                    print(f"{'':18s} {timeline(trace.text)}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
