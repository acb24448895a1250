"""xlfsctl commands on a running mount, through its ``.meta`` directory (no pid needed).

    xlfsctl status MNT                      # graph, up/down, request counts, pending
    xlfsctl statedump MNT                   # writes one; prints its path
    xlfsctl profile MNT start|info|stop     # per-translator fop counts, bytes, latency
    xlfsctl top MNT [-d SECONDS] [-n N | --once] [-l LINES]

Everything is read from and written to files below ``MNT/.meta`` (meta/meta,
docs/operating.md), so the commands work for whoever may read the mount, from any
directory, whatever started the daemon.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from typing import Any, Callable

META = ".meta"
SUBCOMMANDS: list[Callable[[Any], None]] = []


class CtlError(OSError):
    """One line on stderr, ``MNT: reason``, exit status 1 (xlfsctl reports an OSError
    that way; this module does not import xlators.ctl, which imports it)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(errno.EINVAL, reason, where)


def subcommand(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    SUBCOMMANDS.append(fn)
    return fn


def add_subcommands(sub: Any) -> None:
    """Add this module's subcommands to xlfsctl's parser."""
    for add in SUBCOMMANDS:
        add(sub)


class MountView:
    """The ``.meta`` directory of one mount."""

    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        self.meta = os.path.join(mountpoint, META)
        if not os.path.isdir(mountpoint):
            raise CtlError(mountpoint, "not a directory")
        if not os.path.isdir(self.meta):
            raise CtlError(mountpoint, f"not an xlfs mount (no {META} directory in it)")

    def path(self, *parts: str) -> str:
        return os.path.join(self.meta, *parts)

    def read(self, *parts: str) -> str:
        with open(self.path(*parts), encoding="utf-8", errors="replace") as f:
            return f.read()

    def write(self, text: str, *parts: str) -> None:
        with open(self.path(*parts), "w", encoding="utf-8") as f:
            f.write(text)

    def keyvalues(self, *parts: str) -> dict[str, str]:
        out = {}
        for line in self.read(*parts).splitlines():
            key, eq, value = line.partition("=")
            if eq and not line.startswith("#"):
                out[key] = value
        return out

    # -- the graph ---------------------------------------------------------------------
    def graph_dir(self) -> str:
        return self.path("graphs", "active")

    def graph_id(self) -> str:
        """The active graph's id: the link in ``graphs/`` that points to ``active``."""
        graphs = self.path("graphs")
        for name in sorted(os.listdir(graphs)):
            path = os.path.join(graphs, name)
            if name != "active" and os.path.islink(path) and os.readlink(path) == "active":
                return name
        return "?"

    def top(self) -> str:
        return os.readlink(os.path.join(self.graph_dir(), "top"))

    def xlator(self, name: str, what: str) -> str:
        return self.read("graphs", "active", name, what).strip()

    def children(self, name: str) -> list[str]:
        d = os.path.join(self.graph_dir(), name, "subvolumes")
        names = sorted(os.listdir(d), key=int)
        return [os.path.basename(os.readlink(os.path.join(d, n))) for n in names]

    def walk(self) -> list[tuple[int, str]]:
        """(depth, name) from the top, depth-first."""
        out: list[tuple[int, str]] = []

        def rec(name: str, depth: int) -> None:
            out.append((depth, name))
            for c in self.children(name):
                rec(c, depth + 1)
        rec(self.top(), 0)
        return out

    def profiling(self) -> bool:
        return self.read("measure_latency").strip() == "1"

    def set_profiling(self, on: bool) -> None:
        self.write("1\n" if on else "0\n", "measure_latency")

    def profile(self, name: str) -> dict[str, dict[str, float]]:
        """fop -> {count, errors, bytes, latency_*_us} of translator ``name``."""
        fops: dict[str, dict[str, float]] = {}
        for key, value in self.keyvalues("graphs", "active", name, "profile").items():
            fop, dot, field = key.partition(".")
            if dot:
                fops.setdefault(fop, {})[field] = float(value)
        return fops

    def files(self) -> dict[str, list[int]]:
        """path -> [opens, reads, read bytes, writes, write bytes] (profiling only)."""
        out = {}
        for line in self.read("top").splitlines():
            if "=" in line.split(" ", 1)[0] or line.startswith("#"):
                continue
            parts = line.split(" ", 5)
            if len(parts) == 6:
                out[parts[5]] = [int(p) for p in parts[:5]]
        return out


def _mount(args: argparse.Namespace) -> MountView:
    return MountView(args.mountpoint)


# -- status ------------------------------------------------------------------------------
@subcommand
def add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="a running mount: graph, up/down, requests",
                       description="Show a running mount's graph with each translator's "
                                   "state (what it last told its parents: up, down, "
                                   "connecting), the request counters, the inode and fd "
                                   "tables and the requests in flight.")
    p.add_argument("mountpoint", metavar="MNT")
    p.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    m = _mount(args)
    version = m.read("version").strip()
    graph_id = m.graph_id()
    print(f"{m.mountpoint}: xlfs {version}, graph {graph_id}")
    print("graph:")
    walk = m.walk()
    seen_down = down_children(m, walk)
    for depth, name in walk:
        state = m.xlator(name, "state")
        if name in seen_down:
            state += f" (down for {', '.join(seen_down[name])})"
        print(f"  {'  ' * depth}{name} ({m.xlator(name, 'type')}): {state}")
    bridge = m.keyvalues("root", "private") if os.path.isdir(m.path("root")) else {}
    if bridge:
        print(f"requests: {bridge.get('requests', '?')} received, "
              f"{bridge.get('errors', '?')} answered with an error, "
              f"{bridge.get('in-flight', '?')} in flight "
              f"(this one included)")
        print(f"tables: {bridge.get('inodes', '?')} inodes, "
              f"{bridge.get('open-fds', '?')} open files and directories")
        print(f"interrupts: {bridge.get('interrupts-received', '?')} received, "
              f"{bridge.get('interrupts-unhandled', '?')} unhandled")
    pending = json.loads(m.read("frames")).get("requests", [])
    pending = [r for r in pending if r.get("pid") != os.getpid()]
    print(f"pending: {len(pending)}" + ("" if pending else " (none but this command's)"))
    for r in pending:
        print("  " + pending_line(r))
    return 0


def down_children(m: MountView, walk: list[tuple[int, str]]) -> dict[str, list[str]]:
    """child -> the parents whose state lists it in ``children-down`` (cluster/replicate
    and cluster/distribute take a child out on its first failure, before any event)."""
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(n for _, n in walk):
        if not m.children(name):
            continue
        down = m.keyvalues("graphs", "active", name, "private").get("children-down", "")
        for child in filter(None, (c.strip() for c in down.split(","))):
            if child != "(none)":
                out.setdefault(child, []).append(name)
    return out


def pending_line(r: dict) -> str:
    where = " > ".join(r.get("where") or []) or "the bridge"
    line = (f"unique {r['unique']} {r['opcode']} pid {r['pid']} uid {r['uid']} "
            f"age {r['age_s']:.3f}s in {where}")
    if r.get("waiting_on"):
        line += f", waiting on {r['waiting_on']}"
    if r.get("interrupted"):
        line += " (interrupted)"
    return line


# -- statedump ---------------------------------------------------------------------------
@subcommand
def add_statedump(sub: Any) -> None:
    p = sub.add_parser("statedump", help="make a running mount write a statedump",
                       description="Make the daemon serving MNT write a statedump "
                                   "(docs/operating.md) and print its path.")
    p.add_argument("mountpoint", metavar="MNT")
    p.set_defaults(func=run_statedump)


def run_statedump(args: argparse.Namespace) -> int:
    m = _mount(args)
    fd = os.open(m.path("statedump"), os.O_RDWR)
    try:
        os.write(fd, b"dump\n")
        path = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    finally:
        os.close(fd)
    if not path.startswith("/"):             # page-cached (--direct-io-mode=no): reopen
        path = m.read("statedump").strip()
    if not path:
        raise CtlError(m.mountpoint, "the daemon wrote no statedump (see its log)")
    print(path)
    return 0


# -- profile -----------------------------------------------------------------------------
@subcommand
def add_profile(sub: Any) -> None:
    p = sub.add_parser("profile", help="per-translator fop counts, bytes and latency",
                       description="start: count every fop of every translator from "
                                   "zero (calls, errors, bytes, latency); info: show "
                                   "the numbers; stop: stop counting (the numbers stay "
                                   "readable until the next start).")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("action", choices=("start", "info", "stop"))
    p.add_argument("-x", "--xlator", metavar="VOLUME", action="append",
                   help="info: only this volume (repeatable); default every one")
    p.set_defaults(func=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    m = _mount(args)
    if args.action == "start":
        m.set_profiling(True)
        print(f"{m.mountpoint}: profiling started")
        return 0
    if args.action == "stop":
        m.set_profiling(False)
        print(f"{m.mountpoint}: profiling stopped")
        return 0
    names = [n for _, n in m.walk()]
    wanted = args.xlator or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise CtlError(m.mountpoint, f"no volume {unknown[0]!r} in the graph "
                                     f"(volumes: {', '.join(names)})")
    on = m.profiling()
    if not on:
        print(f"profiling is off (start it with: xlfsctl profile {m.mountpoint} start); "
              "numbers of the last run:")
    for name in wanted:
        print(profile_table(name, m.xlator(name, "type"), m.profile(name),
                            m.keyvalues("graphs", "active", name, "profile")))
    return 0


def profile_table(name: str, type_name: str, fops: dict[str, dict[str, float]],
                  head: dict[str, str]) -> str:
    lines = [f"{name} ({type_name}): {head.get('duration_s', '?')} s"]
    if not fops:
        lines.append("  (no fop)")
        return "\n".join(lines) + "\n"
    lines.append(f"  {'fop':<16} {'calls':>9} {'errors':>7} {'bytes':>12} "
                 f"{'avg-us':>10} {'min-us':>10} {'max-us':>10}")
    for fop, v in sorted(fops.items(), key=lambda kv: -kv[1].get("latency_total_us", 0)):
        lines.append(f"  {fop:<16} {int(v.get('count', 0)):>9} {int(v.get('errors', 0)):>7} "
                     f"{int(v.get('bytes', 0)):>12} {v.get('latency_avg_us', 0):>10.1f} "
                     f"{v.get('latency_min_us', 0):>10.1f} "
                     f"{v.get('latency_max_us', 0):>10.1f}")
    return "\n".join(lines) + "\n"


# -- top ---------------------------------------------------------------------------------
@subcommand
def add_top(sub: Any) -> None:
    p = sub.add_parser("top", help="live per-fop and per-file rates of a mount",
                       description="Show the fops per second (and bytes per second of "
                                   "reads and writes) the mount serves, and the busiest "
                                   "files, refreshed every DELAY seconds until "
                                   "interrupted.  Starts profiling when it is off, and "
                                   "stops it again at exit.")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("-d", "--delay", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between refreshes (default 2)")
    p.add_argument("-n", "--iterations", type=int, default=0, metavar="N",
                   help="refresh N times, then exit (default: until interrupted)")
    p.add_argument("--once", action="store_true", help="the same as -n 1")
    p.add_argument("-l", "--lines", type=int, default=10, metavar="LINES",
                   help="files shown (default 10)")
    p.set_defaults(func=run_top)


class Sample:
    def __init__(self, m: MountView, top: str) -> None:
        self.at = time.monotonic()
        self.fops = m.profile(top)
        self.files = m.files()


def rates(a: Sample, b: Sample) -> tuple[float, list[tuple], list[tuple]]:
    dt = max(b.at - a.at, 1e-6)
    fops = []
    for fop, v in b.fops.items():
        old = a.fops.get(fop, {})
        calls = v.get("count", 0) - old.get("count", 0)
        if calls > 0:
            fops.append((fop, calls / dt, (v.get("bytes", 0) - old.get("bytes", 0)) / dt))
    fops.sort(key=lambda t: -t[1])
    files = []
    for path, v in b.files.items():
        old = a.files.get(path, [0] * 5)
        d = [x - y for x, y in zip(v, old)]
        ops = d[0] + d[1] + d[3]
        if ops > 0:
            files.append((path, ops / dt, d[2] / dt, d[4] / dt))
    files.sort(key=lambda t: -t[1])
    return dt, fops, files


def top_screen(mnt: str, dt: float, fops: list[tuple], files: list[tuple],
               lines: int) -> str:
    out = [f"xlfs top {mnt}: rates over the last {dt:.1f} s",
           "", f"  {'fop':<16} {'calls/s':>10} {'bytes/s':>12}"]
    out += [f"  {f:<16} {c:>10.1f} {b:>12.0f}" for f, c, b in fops] or ["  (idle)"]
    out += ["", f"  {'ops/s':>8} {'read B/s':>12} {'write B/s':>12}  file"]
    out += [f"  {o:>8.1f} {r:>12.0f} {w:>12.0f}  {p}" for p, o, r, w in files[:lines]] \
        or ["  (no file opened, read or written)"]
    return "\n".join(out) + "\n"


def run_top(args: argparse.Namespace) -> int:
    m = _mount(args)
    if args.delay <= 0:
        raise CtlError("xlfsctl top", "--delay must be more than 0")
    iterations = 1 if args.once else args.iterations
    started = not m.profiling()
    if started:
        m.set_profiling(True)
    interactive = sys.stdout.isatty() and iterations != 1
    try:
        top = m.top()
        prev = Sample(m, top)
        done = 0
        while not iterations or done < iterations:
            time.sleep(args.delay)
            cur = Sample(m, top)
            screen = top_screen(m.mountpoint, *rates(prev, cur), args.lines)
            if interactive:
                sys.stdout.write("\x1b[H\x1b[2J")
            sys.stdout.write(screen)
            sys.stdout.flush()
            prev = cur
            done += 1
    except KeyboardInterrupt:
        pass
    finally:
        if started:
            try:
                m.set_profiling(False)
            except OSError:
                pass
    return 0

