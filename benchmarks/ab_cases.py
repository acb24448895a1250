"""Cases of benchmarks.cases on xlfs from this checkout and from another one (the code
before a change), on the same volfiles, in one run: before/after under the same load.

    python -m benchmarks.ab_cases --baseline /work/wt/base --vols local,fast \\
        --cases readdir,stat_dropped --rounds 5

Each volfile (``local``: volfiles/local.vol, ``fast``: volfiles/fast.vol, or a path) is
mounted once from each checkout, with the options benchmarks.run gives its xlfs peers
(1 s attribute and entry timeouts, no FUSE passthrough).  Every round runs each case on
every mount, the order of the mounts rotated from round to round; the table has the
median of the rounds and the ratio of this checkout to the baseline.  Wall-clock rates
on a shared machine move by up to 2x between minutes: read the ratios, and the rounds.
Needs root for the cases that drop caches (as benchmarks.run).  ``--peers bindfs,...``
adds peers of benchmarks.peers to the same rotation, each with its ratio to this
checkout.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Type

from . import cases
from .case_base import FULL, QUICK
from .peer_table import PEERS
from .peers import ROOT, XlfsPeer

VOLS = {"local": "local.vol", "fast": "fast.vol", "perf": "perf.vol"}


class TreePeer(XlfsPeer):
    """xlfs from checkout ``tree`` on ``volfile`` (a name of VOLS: that checkout's)."""

    def __init__(self, tree: Path, volfile: str, label: str) -> None:
        path = tree / "volfiles" / VOLS[volfile] if volfile in VOLS else Path(volfile)
        super().__init__(path)
        self.tree = tree.resolve()
        self.name = label

    def env(self):
        env = super().env()
        env["PYTHONPATH"] = str(self.tree)
        return env

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        return from_tree(super().argv(brick, mountpoint, log, timeouts, workdir), self.tree)


def from_tree(argv: List[str], tree: Path) -> List[str]:
    """An xlfs peer's ``python -m fuse_bridge.cli ...`` run from checkout ``tree``:
    ``-c``, not ``-m``, which would put the current directory first on sys.path."""
    boot = (f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
            "runpy.run_module('fuse_bridge.cli', run_name='__main__', alter_sys=True)")
    argv = list(argv)
    i = argv.index("-m")
    argv[i:i + 2] = ["-c", boot]
    return argv


def baseline_of(cls: Type[XlfsPeer], tree: Path) -> Type[XlfsPeer]:
    """Peer class ``cls`` (an xlfs peer) run from checkout ``tree``, named
    ``<name>@base`` (``benchmarks.run --baseline``)."""
    tree = tree.resolve()

    class Baseline(cls):                                # type: ignore[valid-type,misc]
        name = f"{cls.name}@base"
        description = f"{cls.description}, from {tree}"

        def env(self):
            env = dict(super().env() or os.environ)
            env["PYTHONPATH"] = str(tree)
            return env

        def argv(self, brick, mountpoint, log, timeouts, workdir):
            return from_tree(super().argv(brick, mountpoint, log, timeouts, workdir), tree)

        def version(self) -> str:
            import subprocess
            try:
                out = subprocess.run(["git", "-C", str(tree), "describe", "--always",
                                      "--dirty"], capture_output=True, text=True,
                                     timeout=10).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                out = ""
            return f"xlfs {out} from {tree}"
    return Baseline


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab_cases",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, required=True, metavar="DIR")
    p.add_argument("--vols", default="local,fast")
    p.add_argument("--cases", default="readdir,stat_dropped")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--full", action="store_true", help="full sizes (default: --quick's)")
    p.add_argument("--peers", default="", help="other peers (benchmarks.peers names) in "
                   "the same rotation, e.g. bindfs")
    args = p.parse_args(argv)
    if not (args.baseline / "fuse_bridge" / "cli.py").exists():
        print(f"--baseline {args.baseline}: not an xlfs checkout", file=sys.stderr)
        return 2
    cfg = FULL if args.full else QUICK
    fns = [getattr(cases, name) for name in args.cases.split(",")]
    trees = {"new": ROOT, "base": args.baseline.resolve()}
    labels = [f"{vol}@{tree}" for vol in args.vols.split(",") for tree in trees]
    others = [n for n in args.peers.split(",") if n]
    unknown = [n for n in others if n not in PEERS]
    if unknown:
        print(f"unknown peers: {', '.join(unknown)}", file=sys.stderr)
        return 2
    for name in others:
        why = PEERS[name]().unavailable()
        if why:
            print(f"peer {name} is unavailable: {why}", file=sys.stderr)
            return 2
    labels += others
    results: Dict[str, Dict[str, List[float]]] = {label: {} for label in labels}
    with tempfile.TemporaryDirectory(prefix="xlfs-ab-") as work, \
            contextlib.ExitStack() as stack:
        mounts = {}
        for label in labels:
            wd = Path(work) / label.replace("@", "-")
            wd.mkdir()
            if label in others:
                peer = PEERS[label]()
            else:
                vol, tree = label.split("@")
                peer = TreePeer(trees[tree], vol, label)
            mounts[label] = stack.enter_context(peer.session(wd, (1.0, 1.0, 0.0), 3600))
        for r in range(args.rounds):
            order = labels[r % len(labels):] + labels[:r % len(labels)]
            for label in order:
                m = mounts[label]
                for fn in fns:
                    for metric in fn(m.directory, cfg, m.env):
                        results[label].setdefault(metric.case, []).append(metric.value)
                        print(f"round {r + 1} {label:12s} {metric.case:32s} "
                              f"{metric.value:12,.0f} {metric.unit}", flush=True)
    print()
    print("| case | volfile | baseline | this checkout | ratio | rounds (this / baseline) |")
    print("|---|---|---:|---:|---:|---|")
    for vol in args.vols.split(","):
        new, base = results[f"{vol}@new"], results[f"{vol}@base"]
        for case in new:
            a, b = statistics.median(new[case]), statistics.median(base[case])
            rounds = (" ".join(f"{v:,.0f}" for v in new[case]) + " / "
                      + " ".join(f"{v:,.0f}" for v in base[case]))
            print(f"| {case} | {vol} | {b:,.0f} | {a:,.0f} | {a / b:.2f}x | {rounds} |")
    for name in others:
        print()
        print(f"| case | {name} | " + " | ".join(f"{vol} this / {name}, baseline / {name}"
                                                for vol in args.vols.split(",")) + " |")
        print("|---|---:|" + "---:|" * len(args.vols.split(",")))
        for case, values in results[name].items():
            o = statistics.median(values)
            cells = []
            for vol in args.vols.split(","):
                a = statistics.median(results[f"{vol}@new"][case])
                b = statistics.median(results[f"{vol}@base"][case])
                cells.append(f"{a / o:.2f}x, {b / o:.2f}x")
            print(f"| {case} | {o:,.0f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
