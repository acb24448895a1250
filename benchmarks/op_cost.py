"""What one metadata operation costs each client: wall time, the CPU and the voluntary
context switches of each of the daemon's threads (``/proc/PID/task``), and with
``--fops`` the requests it sent to the bricks (``strace -f`` of the daemon during the
timed loop, each ``writev`` decoded as GlusterFS's FOP program and procedure; strace
slows the daemon, so the times of such a run are not comparable).  The peers take
turns on one directory each, round by round.

    .venv/bin/python -m benchmarks.op_cost --peers gfapi,glusterfs-replica --op fstat

With ``--syscalls`` an ``strace -f -c`` of the daemon during the timed loop gives the
system calls per operation by name (futex wake-ups and waits included); with ``--perf
DIR`` a ``perf record -g`` of all its threads is written to DIR/PEER-ROUND.data and its
top symbols by thread are printed (``perf report --sort comm,dso,sym``).

Operations: ``fstat`` (GETATTR, timeouts 0), ``stat`` (LOOKUP, timeouts 0), ``rename``,
``unlink``, ``mkdir`` (mkdir then rmdir), ``listdir`` (a warm listing; per entry).
docs/gluster.md ("Where a metadata request's time goes now") has what it found.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from .run import PEERS

FOP_PROGRAM = 1298437          # GlusterFS's FOP program (version 400)
FOPS = {1: "STAT", 4: "MKDIR", 5: "UNLINK", 6: "RMDIR", 8: "RENAME", 11: "OPEN",
        12: "READ", 13: "WRITE", 23: "CREATE", 25: "FSTAT", 27: "LOOKUP", 28: "READDIR",
        29: "INODELK", 30: "FINODELK", 31: "ENTRYLK", 33: "XATTROP", 34: "FXATTROP",
        38: "SETATTR", 40: "READDIRP"}   # the procedures of GlusterFS's FOP program
_WRITEV = re.compile(r'\d+\s+writev\(\d+, \[\{iov_base="[^"]*", iov_len=4\}, '
                     r'\{iov_base="((?:[^"\\]|\\.)*)"')


def threads(pid: int) -> Dict[str, Tuple[str, float, int]]:
    """tid -> (name, CPU seconds, voluntary context switches); the main thread is
    ``loop``, Python's own threads ``python-TID``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except OSError:
            continue
        name = "loop" if tid == str(pid) else text[text.index("(") + 1:text.rindex(")")]
        if name == "python":
            name = f"python-{tid}"
        fields = text[text.rindex(")") + 2:].split()
        vcs = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick, vcs)
    return out


def per_op(before: dict, after: dict, n: int) -> Tuple[Dict[str, int], Dict[str, float]]:
    cpu: Dict[str, float] = collections.defaultdict(float)
    vcs: Dict[str, float] = collections.defaultdict(float)
    for tid, (name, c, v) in after.items():
        _, c0, v0 = before.get(tid, (name, 0.0, 0))
        cpu[name] += c - c0
        vcs[name] += v - v0
    return ({k: round(v / n * 1e6) for k, v in cpu.items() if v > 0},
            {k: round(v / n, 2) for k, v in vcs.items() if v / n >= 0.05})


def _unescape(text: str) -> bytes:
    """strace's escaped string (octal and C escapes) as bytes."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "01234567":
                j = i + 1
                while j < len(text) and j < i + 4 and text[j] in "01234567":
                    j += 1
                out.append(int(text[i + 1:j], 8))
                i = j
                continue
            out.append({"n": 10, "t": 9, "r": 13, "v": 11, "f": 12}.get(nxt, ord(nxt)))
            i += 2
            continue
        out.append(ord(ch))
        i += 1
    return bytes(out)


def brick_requests(trace: str, n: int) -> Dict[str, float]:
    """Requests per operation to the bricks, by fop, from an ``strace -f`` file."""
    counts: Dict[str, int] = collections.Counter()
    with open(trace) as f:
        for line in f:
            m = _WRITEV.match(line)
            if not m:
                continue
            head = _unescape(m.group(1))
            if len(head) >= 24 and int.from_bytes(head[12:16], "big") == FOP_PROGRAM:
                proc = int.from_bytes(head[20:24], "big")
                counts[FOPS.get(proc, str(proc))] += 1
    return {k: round(v / n, 2) for k, v in sorted(counts.items())}


def syscall_counts(text: str, n: int) -> Dict[str, float]:
    """System calls per operation by name, from ``strace -c``'s table."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls = int(f[3])
            if calls / n >= 0.05:
                out[f[-1]] = round(calls / n, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def perf_top(data: str, limit: int = 25) -> str:
    """The top symbols of a ``perf record`` file, by thread and library."""
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                        "--sort", "comm,dso,sym", "-g", "none", "--percent-limit", "0.8"],
                       capture_output=True, text=True)
    rows = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return "\n".join(rows[:limit])


def _timed(loop: Callable[[], None], mark: Callable[[], None]) -> float:
    mark()
    t = time.perf_counter()
    loop()
    t = time.perf_counter() - t
    mark()
    return t


def run_op(op: str, d: str, n: int, mark: Callable[[], None]) -> Tuple[float, int]:
    """Prepare, time ``n`` operations between two ``mark()``s; (seconds, ops)."""
    p = os.path.join
    if op == "fstat":
        fd = os.open(p(d, "f"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            return _timed(lambda: [os.fstat(fd) for _ in range(n)], mark), n
        finally:
            os.close(fd)
    if op == "stat":
        open(p(d, "f"), "w").close()
        return _timed(lambda: [os.stat(p(d, "f")) for _ in range(n)], mark), n
    if op == "rename":
        for i in range(n):
            open(p(d, f"a{i}"), "w").close()
        return _timed(lambda: [os.rename(p(d, f"a{i}"), p(d, f"b{i}"))
                               for i in range(n)], mark), n
    if op == "unlink":
        for i in range(n):
            open(p(d, f"u{i}"), "w").close()
        return _timed(lambda: [os.unlink(p(d, f"u{i}")) for i in range(n)], mark), n
    if op == "mkdir":
        def pairs() -> None:
            for i in range(n):
                os.mkdir(p(d, f"d{i}"))
                os.rmdir(p(d, f"d{i}"))
        return _timed(pairs, mark), n
    if op == "listdir":
        for i in range(n):
            open(p(d, f"entry-with-a-name-{i}"), "w").close()
        os.listdir(d)
        return _timed(lambda: [os.listdir(d) for _ in range(5)], mark), 5 * n
    raise ValueError(f"unknown operation {op!r}")


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="gfapi,glusterfs-replica")
    ap.add_argument("--op", default="fstat",
                    choices=("fstat", "stat", "rename", "unlink", "mkdir", "listdir"))
    ap.add_argument("-n", type=int, default=0, help="operations per round (default: "
                    "3000 for fstat/stat, 5000 entries for listdir, else 500)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fops", action="store_true", help="strace the daemons and count "
                    "the requests to the bricks (slows them)")
    ap.add_argument("--syscalls", action="store_true", help="strace -f -c the daemons: "
                    "system calls per operation (slows them)")
    ap.add_argument("--perf", metavar="DIR", help="perf record -g every thread of the "
                    "daemons into DIR and print the top symbols")
    args = ap.parse_args(argv)
    n = args.n or {"fstat": 3000, "stat": 3000, "listdir": 5000}.get(args.op, 500)
    names = args.peers.split(",")
    unknown = [x for x in names if x not in PEERS]
    if unknown:
        print(f"unknown peer {unknown[0]!r} (known: {', '.join(PEERS)})", file=sys.stderr)
        return 2
    timeouts = (0.0, 0.0, 0.0) if args.op in ("fstat", "stat") else (1.0, 1.0, 0.0)
    walls: Dict[str, List[float]] = {x: [] for x in names}
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        mounts = {}
        for name in names:
            wd = Path(work) / name
            wd.mkdir()
            mounts[name] = stack.enter_context(PEERS[name]().session(wd, timeouts, 3600))
        for r in range(args.rounds):
            for name in names:
                m = mounts[name]
                d = os.path.join(m.directory, f"round{r}")
                os.mkdir(d)
                marks: list = []
                tracer: list = []
                trace = os.path.join(work, f"{name}-{r}.strace")

                counts = os.path.join(work, f"{name}-{r}.counts")
                data = os.path.join(args.perf, f"{name}-{r}.data") if args.perf else ""

                def mark() -> None:
                    if not marks:
                        if args.fops:
                            tracer.append(subprocess.Popen(
                                ["strace", "-f", "-qq", "-o", trace, "-e",
                                 "trace=writev", "-p", str(m.pid)],
                                stderr=subprocess.DEVNULL))
                        if args.syscalls:
                            tracer.append(subprocess.Popen(
                                ["strace", "-f", "-c", "-qq", "-o", counts,
                                 "-p", str(m.pid)], stderr=subprocess.DEVNULL))
                        if args.perf:
                            tracer.append(subprocess.Popen(
                                ["perf", "record", "-q", "-g", "-F", "2000", "-o", data,
                                 "-p", str(m.pid)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL))
                        if tracer:
                            time.sleep(1.0)
                    else:
                        for t in tracer:
                            t.send_signal(signal.SIGINT)
                            t.wait()
                    marks.append(threads(m.pid))
                seconds, ops = run_op(args.op, d, n, mark)
                cpu, vcs = per_op(marks[0], marks[1], ops)
                walls[name].append(seconds / ops * 1e6)
                line = (f"{name:26} {seconds / ops * 1e6:8.0f} us/op  CPU us/op {cpu}  "
                        f"voluntary switches/op {vcs}")
                if args.fops:
                    line += f"  brick requests/op {brick_requests(trace, ops)}"
                if args.syscalls:
                    with open(counts) as f:
                        line += f"  syscalls/op {syscall_counts(f.read(), ops)}"
                print(line, flush=True)
                if args.perf:
                    print(perf_top(data), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    for name in names:
        print(f"median {name:26} {statistics.median(walls[name]):8.0f} us/op")
    return 0


if __name__ == "__main__":
    sys.exit(main())
