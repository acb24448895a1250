"""Run the benchmarks and print the table (optionally writing it into docs/benchmarks.md).

    python -m benchmarks.run                      # full mode, every peer (~10 min on 2 cores)
    python -m benchmarks.run --quick              # smaller sizes (~2-3 min)
    python -m benchmarks.run --peers raw,xlfs --cases create,getattr_loop
    python -m benchmarks.run --quick --write-docs --json /tmp/bench.json

For each cache profile ("cached": attribute and entry timeouts 1 s, negative 0, the
defaults of GlusterFS and xlfs; "nocache": all 0) every peer is mounted over a fresh brick
in a temporary directory (removed at the end); then each case runs on every peer in turn,
``rounds`` times (3 in full mode) with the peer order rotating, and the median is kept.
A peer that cannot run here shows "n/a" and why; a case that fails shows "error" and the
run goes on.  Ctrl-C (or SIGTERM) stops the run, unmounts everything and prints what
was measured so far.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from . import cases as C
from .cases import Metric
from fuse_bridge import mount as mnt

from .peer_table import PEERS
from .peers import (DEFAULT_PEERS, Mount, MountLeft, PeerUnavailable, mounts_under,
                    shielded)
from .report import PeerResult, Run, machine_info, markdown, write_docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, about 3 minutes")
    p.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                   help=f"comma list of peers (default {','.join(DEFAULT_PEERS)}; known: "
                        f"{','.join(PEERS)})")
    p.add_argument("--cases", default="",
                   help="comma list of cases (default all: "
                        + ",".join(c.name for c in C.all_cases()) + ")")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of every case (default: 3, quick 1); the median is kept")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the results into {DOCS.relative_to(ROOT)}")
    p.add_argument("--docs", type=Path, default=DOCS, help="the markdown file to write into")
    p.add_argument("--json", type=Path, help="also save the raw results as JSON")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: print (and with --write-docs write) the report of "
                        "a run saved with --json")
    p.add_argument("--workdir", default=None,
                   help="where to make the temporary bricks (default: the system temp dir; "
                        "it must be on a local disk with trusted.* xattrs for GlusterFS)")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="also run each xlfs peer from the checkout DIR (the code before a "
                        "change), as peer NAME@base, in the same rounds")
    p.add_argument("--limit", type=float, default=None,
                   help="hard time limit of one mount in seconds (default: every case's "
                        "own limit times the cases, peers and rounds, at least 300)")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Collector:
    """Samples per peer and metric row, reduced to medians at the end."""

    def __init__(self, names: List[str]) -> None:
        self.results = {n: PeerResult(n) for n in names}
        self.samples: Dict[str, Dict[str, List[Metric]]] = {n: {} for n in names}

    def add(self, peer: str, m: Metric) -> None:
        self.samples[peer].setdefault(m.case, []).append(m)

    def error(self, peer: str, rows, why: str) -> None:
        for row in rows:
            self.results[peer].errors.setdefault(row, why)

    def finish(self) -> List[PeerResult]:
        for name, rows in self.samples.items():
            res = self.results[name]
            for row, ms in rows.items():
                res.errors.pop(row, None)  # one good round is a result
                values = sorted(m.value for m in ms)
                last = ms[-1]
                short = [m.note for m in ms if "time limit" in m.note or "setup" in m.note]
                note = short[0] if short else last.note
                res.metrics[row] = Metric(row, statistics.median(values), last.unit,
                                          last.higher_is_better, note)
        return list(self.results.values())


def run_case(name: str, mount: Mount, case: C.Case, cfg: C.Config, out: Collector,
             case_limit: float) -> None:
    """One case on one peer, with a watchdog that aborts the mount if the case hangs."""
    if mount.aborted():
        out.error(name, case.metrics, "connection aborted earlier in the run")
        return
    timer = threading.Timer(case_limit, mount.abort)
    timer.daemon = True
    timer.start()
    t0 = time.monotonic()
    try:
        metrics = case.fn(mount.directory, cfg, mount.env)
    except (KeyboardInterrupt, MountLeft):
        raise
    except Exception as exc:  # one case failing must not end the run
        why = f"{type(exc).__name__}: {exc}"
        if mount.aborted():
            why = f"hung for {case_limit:.0f} s, connection aborted ({why})"
        out.error(name, case.metrics, why)
        log(f"{name}/{case.name}: error: {why}")
        return
    finally:
        timer.cancel()
    for m in metrics:
        out.add(name, m)
    log(f"{name}/{case.name}: " + "; ".join(f"{m.value:,.1f} {m.unit}" for m in metrics)
        + f"  [{time.monotonic() - t0:.1f} s]")


@contextmanager
def _reported(name: str, session, out: Collector, rows: List[str]) -> Iterator[Mount]:
    """A peer's session whose failure at the end (its hard time limit reached, say) is
    reported as an error of that peer, not raised: the other peers' results stand."""
    entered = False
    try:
        with session as m:
            entered = True
            yield m
    except TimeoutError as exc:
        if not entered:
            raise
        out.error(name, rows, str(exc))
        log(f"{name}: {exc}")


def run_profile(profile: str, names: List[str], cases: List[C.Case], cfg: C.Config,
                root: Path, limit: float, out: Collector) -> None:
    """Mount every peer with this profile's cache settings, then run the cases round by
    round, each case on every peer in turn (the order rotating per round), so that load
    from elsewhere on the machine hits all peers alike."""
    timeouts = C.PROFILES[profile]
    case_limit = 6 * cfg.time_limit + 30
    with ExitStack() as stack:
        live: Dict[str, Mount] = {}
        for name in names:
            peer = PEERS[name]()
            try:
                live[name] = stack.enter_context(_reported(
                    name, peer.session(root / name / profile, timeouts, limit), out,
                    [r for c in cases for r in c.metrics]))
            except PeerUnavailable as exc:
                out.results[name].na = str(exc)
                log(f"{name}: n/a: {exc}")
            except (KeyboardInterrupt, MountLeft):
                raise
            except Exception as exc:
                why = f"mount failed: {type(exc).__name__}: {exc}"
                log(f"{name} ({profile}): {why}")
                out.error(name, [r for c in cases for r in c.metrics], why)
        order = list(live)
        for rnd in range(cfg.rounds):
            turn = order[rnd % len(order):] + order[:rnd % len(order)] if order else []
            for case in cases:
                for name in turn:
                    run_case(name, live[name], case, cfg, out, case_limit)


def cleanup(root: Path) -> List[str]:
    """Unmount anything still under ``root``, then remove it; returns what stayed mounted."""
    with shielded():
        for point in sorted(mounts_under(str(root)), key=len, reverse=True):
            log(f"cleanup: unmounting {point}")
            mnt.force_unmount(point)
        left = mounts_under(str(root))
        if not left:
            shutil.rmtree(root, ignore_errors=True)
        return left


def save_run(path: Path, run: Run) -> None:
    path.write_text(json.dumps({"info": run.info, "interrupted": run.interrupted,
                                "rows": run.rows, "peers": [asdict(p) for p in run.peers]},
                               indent=2))


def load_run(path: Path) -> Run:
    """A run saved with --json, back as a Run."""
    data = json.loads(path.read_text())
    peers = []
    for p in data["peers"]:
        metrics = {row: Metric(**m) for row, m in p.pop("metrics").items()}
        peers.append(PeerResult(**p, metrics=metrics))
    rows = data["rows"]
    units, lower = {}, {}
    for p in peers:
        for row, m in p.metrics.items():
            units[row], lower[row] = m.unit, not m.higher_is_better
    for row in rows:
        units.setdefault(row, "")
        lower.setdefault(row, "latency" in row)
    return Run(rows, units, lower, peers, data["info"], data.get("interrupted", False))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.render:
        text = markdown(load_run(args.render))
        print(text)
        if args.write_docs:
            write_docs(args.docs, text)
            log(f"wrote {args.docs}")
        return 0
    cfg = C.QUICK if args.quick else C.FULL
    if args.rounds is not None:
        cfg = C.with_overrides(cfg, rounds=max(1, args.rounds))
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    if args.baseline is not None:
        from .ab_cases import baseline_of
        from .peers import XlfsPeer
        for name in list(names):
            cls = PEERS.get(name)
            if cls is not None and issubclass(cls, XlfsPeer):
                PEERS[f"{name}@base"] = baseline_of(cls, args.baseline)
                names.append(f"{name}@base")
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        log(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(PEERS)}")
        return 2
    try:
        cases = C.select([c.strip() for c in args.cases.split(",") if c.strip()], cfg)
    except ValueError as exc:
        log(str(exc))
        return 2
    # The hard limit of one mount: it lives through all rounds of its profile, every case
    # on every peer in turn, each case bounded by its own watchdog (run_profile).
    limit = args.limit or max(300.0, (6 * cfg.time_limit + 30) * len(cases) * len(names)
                              * cfg.rounds)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    rows = [row for c in cases for row in c.metrics]
    units, lower = {}, {}
    info = dict(machine_info(), mode="quick" if args.quick else "full", rounds=str(cfg.rounds))
    load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    root = Path(tempfile.mkdtemp(prefix="xlfs-bench-", dir=args.workdir))
    out = Collector(names)
    interrupted = False
    left: List[str] = []
    started = time.monotonic()
    try:
        runnable = []
        for name in names:
            peer = PEERS[name]()
            res = out.results[name]
            res.description = peer.description
            why = peer.unavailable()
            if why:
                res.na = why
                log(f"{name}: n/a: {why}")
                continue
            res.version = peer.version()
            runnable.append(name)
        for profile in C.PROFILES:
            todo = [c for c in cases if c.profile == profile]
            ready = [n for n in runnable if out.results[n].na is None]
            if todo and ready:
                run_profile(profile, ready, todo, cfg, root, limit, out)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: unmounting and printing what was measured")
    except MountLeft as exc:
        log(f"error: {exc}")
    finally:
        left = cleanup(root)
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    info["load"] = load_before + " before, {:.2f} {:.2f} {:.2f} after".format(*os.getloadavg())
    results = out.finish()

    # Units come from the measurements (any peer), else from the case's kind.
    for p in results:
        for row, m in p.metrics.items():
            units[row], lower[row] = m.unit, not m.higher_is_better
    for row in rows:
        units.setdefault(row, "us" if "latency" in row else
                         "MiB/s" if row.startswith("seq") else
                         "entries/s" if row.startswith("readdir") else "ops/s")
        lower.setdefault(row, "latency" in row)
    run = Run(rows, units, lower, results, info, interrupted)
    text = markdown(run)
    print(text)
    print(f"\n(total {info['duration']})")
    if args.json:
        save_run(args.json, run)
    if args.write_docs:
        if interrupted:
            log(f"not writing {args.docs}: the run was interrupted")
        else:
            write_docs(args.docs, text)
            log(f"wrote {args.docs}")
    if left:
        log(f"error: still mounted: {', '.join(left)} (clear with: umount -l PATH)")
        return 1
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
