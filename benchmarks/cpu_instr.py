"""Instructions per request under callgrind: a noise-free companion to benchmarks.cpu.

    python -m benchmarks.cpu_instr                              # xlfs, bindfs, glusterfs
    python -m benchmarks.cpu_instr --peers xlfs --workloads getattr,lookup
    python -m benchmarks.cpu_instr --baseline /work/main        # adds peer xlfs@main
    python -m benchmarks.cpu_instr --write-docs --json /tmp/instr.json
    python -m benchmarks.cpu_instr --render /tmp/instr.json --write-docs

CPU time per request on a shared 2-core machine moves 2-3x with load and with where the
scheduler puts the daemon; the number of instructions the daemon executes does not.
Each peer's daemon is started as ``benchmarks.peers`` starts it, prefixed with
``valgrind --tool=callgrind --instr-atstart=no`` (uninstrumented until told: Python
starts ~5x slower instead of ~50x).  Each workload of ``cpu_cases`` runs through
``cpu_cases.measure`` (the same loop, warm-up and kernel-side request count by the fuse
tracepoint), with callgrind's instrumentation switched on and its counters zeroed just
before the loop and a dump taken just after (vgdb monitor commands; vgdb reaches a
daemon blocked in read() through ptrace).  Instructions are counted for every thread of
the daemon.  Before the workloads, an idle window of ``--idle`` seconds gives the
daemon's background rate (timers), which is subtracted from each window pro rata.

Every peer runs alone (the counts do not depend on what else runs), once per cache
profile; the dumps stay in ``--out`` for callgrind_annotate.  Under valgrind the daemon
is far slower than the application, so back-to-back calls mostly find the next request
queued; ``--pace SECONDS`` pauses before each call so that every request wakes an idle
daemon (its wait path included).  The report adds, for xlfs, the calls per request
counted in the dumps (Python calls, allocations, system call wrappers) and the top
functions of the GETATTR window.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from . import cpu_cases as K
from . import fuse_trace
from .cpu import BaselinePeer
from .cpu_instr_report import (COUNTED_CALLS, InstrSample, Samples, call_counts,
                               costs_of, render, spread,
                               top_functions, totals, write_docs)
from .peers import FusePeer, MountLeft, PeerUnavailable
from .run import PEERS        # every peer, issue 10's stacks (xlfs-fast) included
from .report import machine_info
from .run import cleanup

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
DEFAULT_PEERS = "xlfs,bindfs,glusterfs"
#: Calls per window: ~1-10 ms a request for Python under callgrind.
CALLS = {"getattr": 2000, "lookup": 2000, "lookup-missing": 2000, "read": 1000,
         "write": 1000, "create": 500, "create-close": 500, "unlink": 500, "mkdir-rmdir": 300,
         "rename": 500,
         "listdir": 20}
TOP = 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Callgrind(FusePeer):
    """``inner`` (a FUSE peer) run under callgrind with instrumentation off at start;
    its dumps are ``out``.1, ``out``.2, ... in the order taken."""

    ready_timeout = 600.0

    def __init__(self, inner: FusePeer, out: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.out = Path(out)

    def unavailable(self) -> Optional[str]:
        for tool in ("valgrind", "vgdb"):
            if shutil.which(tool) is None:
                return f"no {tool} (apt-get install valgrind)"
        return self.inner.unavailable()

    def version(self) -> str:
        return self.inner.version()

    def env(self) -> dict:
        # hash randomisation would change dict layouts, so instruction counts, per run
        return dict(self.inner.env() or os.environ, PYTHONHASHSEED="0")

    def check_brick(self, brick: Path) -> None:
        self.inner.check_brick(brick)

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        return (["valgrind", "--tool=callgrind", "--instr-atstart=no",
                 f"--callgrind-out-file={self.out}"]
                + self.inner.argv(brick, mountpoint, log, timeouts, workdir))


class Control:
    """callgrind's monitor commands for one daemon, and the windows they delimit.

    The vgdb commands go through one shell started with the Control, before a workload
    opens anything on the mount: a vgdb forked by this process in the middle of a
    workload would inherit its descriptors and close them at exec, and every close of a
    FUSE file sends the daemon a FLUSH (500 of them in a window of 500 creates).
    Use as a context manager (the shell ends on exit)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = Path(out)
        self.dumps = 0
        self.last: Optional[Path] = None
        self.ir = 0
        self.seconds = 0.0
        self._shell = subprocess.Popen(
            ["sh", "-c", 'while read -r line; do eval "vgdb $line" 2>&1; '
             'echo "vgdb-status: $?"; done'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __enter__(self) -> "Control":
        return self

    def __exit__(self, *exc: object) -> None:
        self._shell.stdin.close()
        try:
            self._shell.wait(10)
        except subprocess.TimeoutExpired:
            self._shell.kill()
            self._shell.wait()

    def command(self, *cmds: str) -> None:
        argv = [f"--pid={self.pid}"]
        for c in cmds:
            argv += ["-c", c]
        self._shell.stdin.write(shlex.join(argv) + "\n")
        self._shell.stdin.flush()
        out = []
        while True:                     # vgdb reaches even a blocked daemon (ptrace)
            line = self._shell.stdout.readline()
            if not line:
                raise RuntimeError(f"vgdb {' '.join(cmds)}: the shell ended: {out[-3:]}")
            if line.startswith("vgdb-status: "):
                break
            out.append(line.strip())
        if line.split()[1] != "0":
            raise RuntimeError(f"vgdb {' '.join(cmds)}: {line.strip()}: "
                               f"{' | '.join(out)[-300:]}")

    @contextmanager
    def window(self) -> Iterator["Control"]:
        """Count instructions from entry to exit: ``ir`` and ``seconds`` after it."""
        self.command("instrumentation on", "zero")
        t0 = time.monotonic()
        try:
            yield self
        finally:
            self.seconds = time.monotonic() - t0
            self.command("dump", "instrumentation off")
            self.dumps += 1
            self.last = Path(f"{self.out}.{self.dumps}")
            deadline = time.monotonic() + 60
            while not self.last.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.ir = totals(self.last).get("Ir", 0)

    def idle_rate(self, seconds: float) -> float:
        """Instructions per second with no request: the daemon's timers."""
        with self.window():
            time.sleep(seconds)
        return self.ir / self.seconds if self.seconds else 0.0


class NamedBaseline(BaselinePeer):
    """benchmarks.cpu's baseline peer under a name of its own (xlfs@DIR-NAME), so that
    several checkouts can be measured in one run."""

    def __init__(self, name: str, root: Path, volfile: str = "local.vol") -> None:
        super().__init__(root, volfile)
        self.name = name

    def version(self) -> str:
        return self.name + super().version().removeprefix(BaselinePeer.name)


def make_peer(name: str, baselines: Dict[str, Path],
              baseline_vol: str = "local.vol") -> FusePeer:
    if name in baselines:
        return NamedBaseline(name, baselines[name], baseline_vol)
    return PEERS[name]()


def paced(w: K.Workload, seconds: float) -> K.Workload:
    """``w`` with a pause before each call, so that every request finds the daemon idle
    (waiting for the next request) as it mostly does at native speed; back to back, a
    daemon slowed down by valgrind mostly finds the next request already queued."""
    if seconds <= 0:
        return w
    call = w.call

    def slow(ctx, i):
        time.sleep(seconds)
        return call(ctx, i)
    return replace(w, call=slow)


def run_peer(name: str, peer: FusePeer, workloads: List[K.Workload], scale: float,
             rounds: int, root: Path, out: Path, idle: float, samples: Samples,
             na: Dict[str, str], idle_rates: Dict[str, float], pace: float = 0.0) -> None:
    for profile in K.PROFILES:
        todo = [w for w in workloads if w.profile == profile]
        if not todo:
            continue
        dumps = out / f"{name}-{profile}"
        cg = Callgrind(peer, dumps)
        try:
            with ExitStack() as stack:
                m = stack.enter_context(cg.session(root / name / profile,
                                                   K.PROFILES[profile], 7200))
                control = stack.enter_context(Control(m.pid, dumps))
                rate = control.idle_rate(idle) if idle > 0 else 0.0
                idle_rates[name] = max(rate, idle_rates.get(name, 0.0))
                log(f"{name} ({profile}): idle {rate / 1000:.1f} kIr/s")
                for _ in range(rounds):
                    for w in todo:
                        calls = max(10, int(CALLS[w.name] * scale))
                        try:
                            s = K.measure(paced(w, pace), m.directory, m.pid, m.connection,
                                          calls, time_limit=3600.0, around=control.window)
                        except (KeyboardInterrupt, MountLeft):
                            raise
                        except Exception as exc:     # this workload only, as benchmarks.cpu
                            log(f"{name}/{w.name}: error: {type(exc).__name__}: {exc}")
                            continue
                        got = InstrSample(s.calls, control.ir, control.seconds, s.counts,
                                          rate * control.seconds, s.note, str(control.last))
                        samples.setdefault(name, {}).setdefault(w.name, []).append(got)
                        per = (got.ir - got.idle_ir) / max(1, got.calls)
                        log(f"{name}/{w.name}: {per / 1000:.1f} kIr per call, "
                            f"{got.wall:.1f} s window; {s.counts}")
        except PeerUnavailable as exc:
            na[name] = str(exc)
            log(f"{name}: n/a: {exc}")
            return
        except (KeyboardInterrupt, MountLeft):
            raise
        except Exception as exc:
            na[name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} ({profile}): {na[name]}")
            return


def annotate(dump: str, n: int) -> Dict[str, List[tuple]]:
    """The top ``n`` functions of one dump by inclusive and by self Ir."""
    out = {}
    for kind, flag in (("inclusive", "yes"), ("self", "no")):
        r = subprocess.run(["callgrind_annotate", f"--inclusive={flag}", dump],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind_annotate {dump}: {r.stderr.strip()[-300:]}")
        out[kind] = top_functions(r.stdout, n, kind == "inclusive")
    return out


def counted_calls(samples: Samples, peers: List[str]) -> Dict[str, Dict[str, dict]]:
    """Per peer and workload: the calls of ``COUNTED_CALLS`` per request of the
    workload's own opcode, from the first round's dump."""
    out: Dict[str, Dict[str, dict]] = {}
    for p in peers:
        for w, ss in samples.get(p, {}).items():
            op = K.WORKLOADS[w].opcode.split()[0].split("+")[0]
            n = (ss[0].counts or {}).get(op) or ss[0].calls
            try:
                got = call_counts(Path(ss[0].dump), list(COUNTED_CALLS.values()))
            except OSError as exc:
                log(f"{p}/{w}: no call counts: {exc}")
                continue
            out.setdefault(p, {})[w] = {label: got[fn] / n
                                        for label, fn in COUNTED_CALLS.items()}
    return out


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_instr",
                                description=__doc__.splitlines()[0])
    p.add_argument("--peers", default=DEFAULT_PEERS, help=f"default {DEFAULT_PEERS}")
    p.add_argument("--workloads", default="", help="comma list (default all: "
                   + ",".join(K.WORKLOADS) + ")")
    p.add_argument("--baseline", type=Path, action="append", default=[], metavar="DIR",
                   help="also measure xlfs from the checkout DIR as peer xlfs@NAME "
                        "(NAME = DIR's last component); may be repeated")
    p.add_argument("--baseline-volfile", default="local.vol", metavar="NAME",
                   help="the baselines' volfile, in their volfiles/ (default local.vol; "
                   "fast.vol to compare with peer xlfs-fast)")
    p.add_argument("--scale", type=float, default=1.0, help="times the default calls")
    p.add_argument("--rounds", type=int, default=1, help="windows per workload (median)")
    p.add_argument("--pace", type=float, default=0.0, metavar="SECONDS",
                   help="pause before each call (e.g. 0.005): every request then wakes "
                        "an idle daemon, as at native speed (default 0: back to back)")
    p.add_argument("--idle", type=float, default=3.0, help="seconds of the idle window")
    p.add_argument("--top", type=int, default=TOP, help=f"functions listed for xlfs's GETATTR window (default {TOP})")
    p.add_argument("--out", type=Path, help="where the callgrind dumps go (kept)")
    p.add_argument("--workdir", default=None, help="where the bricks go (default: /tmp)")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--json", type=Path, help="also save the samples as JSON")
    p.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: report "
                   "a run saved with --json")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _valgrind_version() -> str:
    try:
        return subprocess.run(["valgrind", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def save(path: Path, info: dict, samples: Samples, na: Dict[str, str], top: dict) -> None:
    path.write_text(json.dumps({"info": info, "na": na, "top": top, "samples": {
        p: {w: [asdict(s) for s in ss] for w, ss in by_w.items()}
        for p, by_w in samples.items()}}, indent=1))


def load(path: Path):
    data = json.loads(path.read_text())
    samples = {p: {w: [InstrSample(**s) for s in ss] for w, ss in by_w.items()}
               for p, by_w in data["samples"].items()}
    return data["info"], samples, data.get("na", {}), data.get("top", {})


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.render:
        info, samples, na, top = load(args.render)
        if "call_counts" not in info:       # a run saved before the counts were taken
            info["call_counts"] = counted_calls(samples, [p for p in info.get("peers", [])
                                                    if p.startswith("xlfs")])
    else:
        names = [n.strip() for n in args.peers.split(",") if n.strip()]
        baselines = {}
        for d in args.baseline:
            if not (d / "fuse_bridge" / "cli.py").exists():
                log(f"--baseline {d}: not an xlfs checkout")
                return 2
            baselines[f"xlfs@{d.resolve().name}"] = d.resolve()
        names += list(baselines)
        bad = [n for n in names if n not in baselines and
               (n not in PEERS or not issubclass(PEERS[n], FusePeer))]
        workloads, unknown = K.chosen(args.workloads)
        bad += unknown
        if bad:
            log(f"unknown (or daemon-less) peer or workload: {', '.join(bad)}")
            return 2
        why = fuse_trace.unavailable()
        if why:
            log(f"requests are not counted: {why}")
        out = args.out or Path(tempfile.mkdtemp(prefix="xlfs-cpu-instr-dumps-"))
        out.mkdir(parents=True, exist_ok=True)
        info = dict(machine_info(), valgrind=_valgrind_version(), counted=why or "",
                    mode=f"scale {args.scale:g}, {args.rounds} round(s)"
                    + (f", {1000 * args.pace:g} ms pause before each call" if args.pace else
                       ", calls back to back"),
                    calls=", ".join(f"{w.name} {max(10, int(CALLS[w.name] * args.scale))}"
                                    for w in workloads), peers=names)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        root = Path(tempfile.mkdtemp(prefix="xlfs-cpu-instr-", dir=args.workdir))
        samples: Samples = {}
        na: Dict[str, str] = {}
        idle: Dict[str, float] = {}
        versions: Dict[str, str] = {}
        top: Dict[str, dict] = {}
        started = time.monotonic()
        try:
            for name in names:
                peer = make_peer(name, baselines, args.baseline_volfile)
                why_not = Callgrind(peer, out / name).unavailable()
                if why_not:
                    na[name] = why_not
                    continue
                versions[name] = peer.version()
                run_peer(name, peer, workloads, args.scale, max(1, args.rounds), root,
                         out, args.idle, samples, na, idle, args.pace)
        except KeyboardInterrupt:
            log("interrupted: unmounting")
            args.write_docs = False
        finally:
            left = cleanup(root)
            fuse_trace.release_tracefs()
        if left:
            log(f"error: still mounted: {', '.join(left)}")
        xlfs = [n for n in names if n == "xlfs"] or [n for n in names if n.startswith("xlfs")]
        for name in xlfs[:1]:
            ss = samples.get(name, {}).get("getattr")
            if ss and args.top > 0:
                try:
                    top[name] = annotate(ss[0].dump, args.top)
                except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
                    log(f"{name}: no annotation: {exc}")
        info["call_counts"] = counted_calls(samples, [n for n in names if n.startswith("xlfs")])
        info.update(versions=versions, idle=idle, dumps=str(out),
                    duration=f"{time.monotonic() - started:.0f} s")
        log(f"callgrind dumps: {out}")
        if args.json:
            save(args.json, info, samples, na, top)
    info["spread"] = spread(samples)
    costs = costs_of(samples)
    requests = {p: (samples[p]["getattr"][0].counts or {}).get("GETATTR", 0)
                for p in top if samples.get(p, {}).get("getattr")}
    text = render(info, costs, na, top, requests)
    print(text)
    if args.write_docs:
        write_docs(args.docs, text)
        log(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
