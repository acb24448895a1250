"""The daemon's system calls per request, by workload: what each peer asks the kernel for.

    python -m benchmarks.syscalls --peers xlfs,xlfs-fast,xlfs-fast-pt,bindfs
    python -m benchmarks.syscalls --baseline /work/wt/base --workloads getattr,create-close

For each peer (``benchmarks.run.PEERS``; with ``--baseline DIR`` every xlfs peer also runs
from the checkout DIR, as ``<peer>@base``) and each workload of ``benchmarks.cpu_cases``
(the same loops as ``benchmarks.cpu``), the daemon's system calls are counted just for
the loop, and the kernel's fuse tracepoint counts the requests in the same window
(``fuse_trace``).  The report gives, per call of the workload, the requests the kernel
sent and the daemon's system calls by name.

How they are counted (``--tool``): ``perf`` (the default) counts the kernel's
``syscalls:sys_enter_*`` tracepoints of every thread of the daemon (``perf stat -p``):
the kernel counts, the daemon runs at its own speed.  ``strace`` (``strace -f -c``)
stops the daemon at every system call and slows it several times over, which changes
the counts that depend on timing: how often the next request is already queued when a
reader looks (a read that succeeds instead of a poll or an EAGAIN and a wait).  Either
way the counts are for comparing stacks and versions, not for CPU (``benchmarks.cpu``).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from . import cpu_cases as K
from . import fuse_trace
from .run import PEERS, cleanup

_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def based(peer_cls: type, root: Path) -> type:
    """``peer_cls`` run from the checkout ``root`` (its fuse_bridge and xlators)."""
    boot = (f"import runpy, sys; sys.path.insert(0, {str(root)!r}); "
            "runpy.run_module('fuse_bridge.cli', run_name='__main__', alter_sys=True)")

    class Based(peer_cls):             # type: ignore[misc, valid-type]
        name = peer_cls.name + "@base"

        def env(self):
            return dict(os.environ, PYTHONPATH=str(root))

        def argv(self, *a, **kw):
            argv = super().argv(*a, **kw)
            i = argv.index("-m")
            return argv[:i] + ["-c", boot] + argv[i + 2:]

    return Based


@contextmanager
def straced(pid: int, out: Path) -> Iterator[None]:
    """``strace -f -c`` on every thread of ``pid`` while the block runs."""
    # strace says "Process N attached" for each thread; give it a moment
    with _attached(["strace", "-f", "-c", "-o", str(out), "-p", str(pid)]):
        yield


@contextmanager
def perf_counted(pid: int, out: Path) -> Iterator[None]:
    """``perf stat`` of the syscall-entry tracepoints of every thread of ``pid`` while
    the block runs."""
    # (a moment for opening ~370 tracepoints per thread)
    with _attached(["perf", "stat", "-x,", "-o", str(out), "-p", str(pid),
                    "-e", "syscalls:sys_enter_*"]):
        yield


@contextmanager
def _attached(argv: List[str]) -> Iterator[None]:
    """A tracer (``argv``) attached for the block: started, given half a second to
    attach to every thread, stopped with SIGINT so that it writes its counts."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def parse_perf(text: str) -> Dict[str, int]:
    """{syscall: calls} from ``perf stat -x,`` output of syscalls:sys_enter_* events."""
    calls: Dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
            try:
                n = int(fields[0])
            except ValueError:
                continue            # <not counted>, <not supported>
            if n:
                calls[fields[2][len("syscalls:sys_enter_"):]] = n
    return calls


def parse_summary(text: str) -> Dict[str, int]:
    """{syscall: calls} from strace -c's table (errors counted in calls)."""
    calls: Dict[str, int] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = int(m.group(1))
    return calls


def measure(w: K.Workload, m, calls: int, tmp: Path, tool: str = "perf"
            ) -> tuple[Dict[str, int], dict, int]:
    """({syscall: calls}, {opcode: requests}, calls made) of one loop of ``w``."""
    out = tmp / f"{tool}-{os.getpid()}-{time.monotonic_ns()}.txt"
    counter = perf_counted if tool == "perf" else straced
    s = K.measure(w, m.directory, m.pid, m.connection, calls, time_limit=120.0,
                  around=lambda: counter(m.pid, out))
    text = out.read_text() if out.exists() else ""
    out.unlink(missing_ok=True)
    return (parse_perf if tool == "perf" else parse_summary)(text), s.counts or {}, s.calls


def render(results: Dict[str, Dict[str, tuple]], top: int) -> str:
    lines = []
    for wname, by_peer in results.items():
        lines.append(f"## {wname}")
        for peer, (sc, counts, n) in by_peer.items():
            if not n:
                lines.append(f"{peer:>16}: no call completed")
                continue
            reqs = ", ".join(f"{op} {c / n:.2f}" for op, c in sorted(counts.items()))
            total = sum(sc.values()) / n
            lines.append(f"{peer:>16}: {total:6.2f} syscalls/call  [{reqs}]")
            rows = sorted(sc.items(), key=lambda kv: -kv[1])[:top]
            lines.append(" " * 18 + "  ".join(f"{k} {v / n:.2f}" for k, v in rows))
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.syscalls",
                                description=__doc__.splitlines()[0])
    p.add_argument("--peers", default="xlfs,xlfs-fast,xlfs-pt,xlfs-fast-pt,bindfs")
    p.add_argument("--workloads", default="getattr,lookup,create-close,unlink,rename,"
                   "mkdir-rmdir,read,write,listdir")
    p.add_argument("--calls", type=int, default=2000, help="calls per loop (default 2000;"
                   " listdir a tenth)")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run every xlfs peer from the checkout DIR (<peer>@base)")
    p.add_argument("--top", type=int, default=12, help="system calls listed per row")
    p.add_argument("--tool", choices=("perf", "strace"), default="perf",
                   help="how to count (default perf: see the module docstring)")
    args = p.parse_args(argv)
    if shutil.which(args.tool) is None:
        log(f"{args.tool} is not installed")
        return 2
    classes = {}
    for name in (n.strip() for n in args.peers.split(",") if n.strip()):
        if name not in PEERS:
            log(f"unknown peer {name}")
            return 2
        classes[name] = PEERS[name]
        if args.baseline is not None and name.startswith("xlfs"):
            classes[name + "@base"] = based(PEERS[name], args.baseline.resolve())
    workloads, unknown = K.chosen(args.workloads)
    if unknown:
        log(f"unknown workload: {', '.join(unknown)}")
        return 2
    root = Path(tempfile.mkdtemp(prefix="xlfs-sys-"))
    results: Dict[str, Dict[str, tuple]] = {}
    try:
        for profile in K.PROFILES:
            todo = [w for w in workloads if w.profile == profile]
            if not todo:
                continue
            with ExitStack() as stack:
                live = {n: stack.enter_context(c().session(root / n / profile,
                                                           K.PROFILES[profile], 3600))
                        for n, c in classes.items()}
                for w in todo:
                    calls = args.calls // 10 if w.per == "listing" else args.calls
                    for n, m in live.items():
                        sc, counts, done = measure(w, m, calls, root, args.tool)
                        results.setdefault(w.name, {})[n] = (sc, counts, done)
                        log(f"{n}/{w.name}: {sum(sc.values()) / max(1, done):.2f} "
                            f"syscalls per call")
    finally:
        left = cleanup(root)
        fuse_trace.release_tracefs()
        if left:
            log(f"error: still mounted: {', '.join(left)}")
    print(render(results, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
