"""Daemon CPU per request by opcode, xlfs beside GlusterFS and bindfs in the same run.

    python -m benchmarks.cpu                       # full (~5 minutes on 2 cores)
    python -m benchmarks.cpu --quick               # a third of the calls, 3 rounds
    python -m benchmarks.cpu --write-docs --json /tmp/cpu.json
    python -m benchmarks.cpu --render /tmp/cpu.json --write-docs

For each cache profile of ``cpu_cases.PROFILES`` every peer is mounted over a fresh brick;
then each workload runs on every peer in turn, ``rounds`` times with the peer order
rotating, and the medians are kept.  The daemon's CPU comes from /proc/PID/stat, the
request counts from the kernel's fuse tracepoint (``fuse_trace``); the report gives CPU
per request of the opcode each workload is named after (other requests the kernel sent
with it subtracted at their own cost), CPU and wall-clock rate per call, and issue 12's
targets.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

from . import cpu_cases as K
from . import fuse_trace
from .cpu_report import BASELINE, render, write_docs
from .peers import (NO_PASSTHROUGH, MountLeft, PeerUnavailable, XlfsPeer,
                    _timeout_flags)
from .report import machine_info
from .run import PEERS, cleanup      # every peer, issue 10's stacks (xlfs-fast) included

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
DEFAULT_PEERS = "xlfs,glusterfs,bindfs,pyfuse3"
CALLS = {"getattr": 30000, "lookup": 20000, "lookup-missing": 20000, "read": 20000,
         "write": 20000, "create": 5000, "create-close": 5000, "unlink": 5000, "mkdir-rmdir": 3000,
         "rename": 5000,
         "listdir": 300}

Samples = Dict[str, Dict[str, List[K.Sample]]]    # peer -> workload -> rounds


class BaselinePeer(XlfsPeer):
    """xlfs from another checkout (``--baseline DIR``, e.g. a ``git worktree`` of main) on
    that checkout's local.vol (or ``--baseline-volfile NAME`` of its volfiles/), in the
    same run: before/after under the same load."""
    name = BASELINE

    def __init__(self, root: Path, volfile: str = "local.vol") -> None:
        super().__init__(Path(root) / "volfiles" / volfile)
        self.root = Path(root).resolve()
        self.description = f"xlfs from {self.root}"

    def version(self) -> str:
        import subprocess
        try:
            out = subprocess.run(["git", "-C", str(self.root), "describe", "--always",
                                  "--dirty"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        return f"{BASELINE} {out or self.root}"

    def env(self):
        return dict(os.environ, PYTHONPATH=str(self.root))

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        # -c, not -m: -m would put the current directory (this checkout) first on sys.path
        boot = (f"import runpy, sys; sys.path.insert(0, {str(self.root)!r}); "
                "runpy.run_module('fuse_bridge.cli', run_name='__main__', alter_sys=True)")
        return ([sys.executable, "-c", boot, "-N", "-L", "WARNING", "-l", str(log),
                 "-f", str(self.volfile), f"--xlator-option=posix.directory={brick}",
                 NO_PASSTHROUGH] + _timeout_flags(timeouts) + [str(mountpoint)])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a third of the calls")
    p.add_argument("--peers", default=DEFAULT_PEERS, help=f"default {DEFAULT_PEERS}")
    p.add_argument("--workloads", default="", help="comma list (default all: "
                   + ",".join(K.WORKLOADS) + ")")
    p.add_argument("--rounds", type=int, default=3, help="rounds (median kept); default 3")
    p.add_argument("--write-docs", action="store_true", help="rewrite the CPU section of "
                   + str(DOCS.relative_to(ROOT)))
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--json", type=Path, help="also save the raw samples as JSON")
    p.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: report "
                   "a run saved with --json")
    p.add_argument("--workdir", default=None, help="where the bricks go (default: /tmp)")
    p.add_argument("--placement", choices=PLACEMENTS, default="free", help="free: the "
                   "scheduler places the application and the daemon (default); same: both "
                   "pinned to CPU 0; split: application on CPU 0, daemon on CPU 1")
    p.add_argument("--baseline", type=Path, metavar="DIR", help=f"also measure xlfs from "
                   f"the checkout DIR, as peer {BASELINE} (before/after in one run)")
    p.add_argument("--baseline-volfile", default="local.vol", metavar="NAME",
                   help="the baseline's volfile, in its volfiles/ (default local.vol; "
                   "fast.vol to compare with peer xlfs-fast)")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


PLACEMENTS = ("free", "same", "split")


def place(pid: int, placement: str) -> None:
    """Pin this process and every thread of daemon ``pid``: "same" puts both on CPU 0,
    "split" the daemon on CPU 1; "free" leaves the scheduler to it.  Threads the daemon
    starts later inherit their creator's CPU."""
    if placement == "free":
        return
    os.sched_setaffinity(0, {0})
    cpu = {0} if placement == "same" else {1 % (os.cpu_count() or 1)}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpu)
        except OSError:
            pass                      # a thread that just ended


def _peer(name: str, baseline: Optional[Path], baseline_vol: str = "local.vol"):
    return BaselinePeer(baseline, baseline_vol) if name == BASELINE else PEERS[name]()


def run_profile(profile: str, names: List[str], workloads: List[K.Workload], scale: float,
                rounds: int, root: Path, samples: Samples, na: Dict[str, str],
                baseline: Optional[Path] = None, placement: str = "free",
                baseline_vol: str = "local.vol") -> None:
    with ExitStack() as stack:
        live = {}
        for name in names:
            try:
                live[name] = stack.enter_context(_peer(name, baseline, baseline_vol).session(
                    root / name / profile, K.PROFILES[profile], 3600))
            except PeerUnavailable as exc:
                na[name] = str(exc)
                log(f"{name}: n/a: {exc}")
            except (KeyboardInterrupt, MountLeft):
                raise
            except Exception as exc:
                na[name] = f"mount failed: {type(exc).__name__}: {exc}"
                log(f"{name} ({profile}): {na[name]}")
        order = list(live)
        for rnd in range(rounds):
            turn = order[rnd % len(order):] + order[:rnd % len(order)] if order else []
            for w in workloads:
                calls = max(10, int(CALLS[w.name] * scale))
                for name in turn:
                    m = live[name]
                    if m.pid is None:
                        na[name] = "no daemon process to measure"
                        continue
                    place(m.pid, placement)
                    try:
                        s = K.measure(w, m.directory, m.pid, m.connection, calls)
                    except (KeyboardInterrupt, MountLeft):
                        raise
                    except Exception as exc:
                        log(f"{name}/{w.name}: error: {type(exc).__name__}: {exc}")
                        continue
                    samples.setdefault(name, {}).setdefault(w.name, []).append(s)
                    log(f"{name}/{w.name}: {1e6 * s.user / s.calls:.1f} us user, "
                        f"{1e6 * s.system / s.calls:.1f} us sys per call; {s.counts}")


def costs_of(samples: Samples) -> Dict[str, Dict[str, K.Cost]]:
    """Medians over the rounds, per peer and workload, with the per-request attribution."""
    out: Dict[str, Dict[str, K.Cost]] = {}
    for peer, by_w in samples.items():
        costs = {}
        for wname, ss in by_w.items():
            med = lambda xs: statistics.median(xs)  # noqa: E731
            per_call: Dict[str, float] = {}
            counted = [s for s in ss if s.counts is not None]
            for op in {op for s in counted for op in s.counts}:
                per_call[op] = med([s.counts.get(op, 0) / s.calls for s in counted])
            costs[wname] = K.Cost(med([1e6 * s.user / s.calls for s in ss]),
                                  med([1e6 * s.system / s.calls for s in ss]),
                                  med([1e6 * s.wall / s.calls for s in ss]), per_call,
                                  counted=bool(counted))
        K.attribute(costs)
        out[peer] = costs
    return out


def save(path: Path, info: dict, samples: Samples, na: Dict[str, str]) -> None:
    path.write_text(json.dumps({"info": info, "na": na, "samples": {
        p: {w: [asdict(s) for s in ss] for w, ss in by_w.items()}
        for p, by_w in samples.items()}}, indent=1))


def load(path: Path) -> tuple[dict, Samples, Dict[str, str]]:
    data = json.loads(path.read_text())
    samples = {p: {w: [K.Sample(**s) for s in ss] for w, ss in by_w.items()}
               for p, by_w in data["samples"].items()}
    return data["info"], samples, data.get("na", {})


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.render:
        info, samples, na = load(args.render)
    else:
        names = [n.strip() for n in args.peers.split(",") if n.strip()]
        if args.baseline is not None:
            if not (args.baseline / "fuse_bridge" / "cli.py").exists():
                log(f"--baseline {args.baseline}: not an xlfs checkout")
                return 2
            names.insert(names.index("xlfs") + 1 if "xlfs" in names else 0, BASELINE)
        bad = [n for n in names if (n not in PEERS or n == "raw") and n != BASELINE]
        workloads, unknown = K.chosen(args.workloads)
        bad += unknown
        if bad:
            log(f"unknown (or daemon-less) peer or workload: {', '.join(bad)}")
            return 2
        why = fuse_trace.unavailable()
        if why:
            log(f"requests are not counted: {why}")
        info = dict(machine_info(), mode="quick" if args.quick else "full",
                    rounds=str(args.rounds), counted="" if why is None else why,
                    placement=args.placement)
        affinity = os.sched_getaffinity(0)
        load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        root = Path(tempfile.mkdtemp(prefix="xlfs-cpu-", dir=args.workdir))
        samples, na = {}, {}
        versions = {}
        started = time.monotonic()
        left: List[str] = []
        try:
            for name in names:
                peer = _peer(name, args.baseline, args.baseline_volfile)
                why_not = peer.unavailable()
                if why_not:
                    na[name] = why_not
                    continue
                versions[name] = peer.version()
            for profile in K.PROFILES:
                todo = [w for w in workloads if w.profile == profile]
                ready = [n for n in names if n not in na]
                if todo and ready:
                    run_profile(profile, ready, todo, 1 / 3 if args.quick else 1.0,
                                max(1, args.rounds), root, samples, na, args.baseline,
                                args.placement, args.baseline_volfile)
        except KeyboardInterrupt:
            log("interrupted: unmounting")
            args.write_docs = False
        finally:
            os.sched_setaffinity(0, affinity)
            left = cleanup(root)
            fuse_trace.release_tracefs()
        info.update(versions=versions, duration=f"{time.monotonic() - started:.0f} s",
                    load=load_before + " before, {:.2f} {:.2f} {:.2f} after".format(
                        *os.getloadavg()), peers=names)
        if left:
            log(f"error: still mounted: {', '.join(left)}")
        if args.json:
            save(args.json, info, samples, na)
    text = render(info, costs_of(samples), na)
    print(text)
    if args.write_docs:
        write_docs(args.docs, text)
        log(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
