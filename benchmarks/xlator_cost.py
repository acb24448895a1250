"""What one translator adds per request, over a storage stub that answers at once.

    python -m benchmarks.xlator_cost                          # md-cache, ns per request
    python -m benchmarks.xlator_cost --instructions           # instructions (callgrind)
    python -m benchmarks.xlator_cost --tree /work/wt/base --instructions   # another checkout

The translator (``--xlator``, default performance/md-cache, default options) is stepped
by hand over :class:`Stub`, a leaf that keeps names in a dict and answers every fop
without a system call, then the stub alone; the difference is what the translator
costs per request, with nothing of the storage, the bridge or the kernel around it.
Each workload sends what the kernel sends for one call of the benchmark cases:

- ``getattr``: GETATTR of a file (a cache answers it); ``lookup``: LOOKUP of a name
  (a cache answers it); ``lookup-cold``: LOOKUP of a name after the kernel dropped its
  caches (the inode was forgotten, the translator's records are older than any timeout),
  then its FORGET; ``lookup-missing``: LOOKUP of a missing name;
- ``create``: LOOKUP (missing), CREATE (O_EXCL), GETXATTR security.capability, WRITE,
  FLUSH, RELEASE; ``unlink``: UNLINK, FORGET; ``rename``: LOOKUP of the new name
  (missing), RENAME; ``mkdir-rmdir``: LOOKUP (missing), MKDIR, RMDIR, FORGET;
- ``readdirp``: READDIRPLUS of 1,000 entries, then their FORGETs (per entry).

With ``--instructions`` the script runs itself under ``valgrind --tool=callgrind
--instr-atstart=no`` and counts the instructions of each loop only (vgdb switches the
instrumentation on and off around it; the cost of those switches, measured on empty
windows, is subtracted): the counts repeat to within a few per cent whatever else the
machine does.  Without it, the best of five timings per loop, which move with load.
``--tree`` imports xlators from another checkout (e.g. the code before a change).
"""
from __future__ import annotations

import argparse
import gc
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("getattr", "lookup", "lookup-cold", "lookup-missing", "create", "unlink",
             "rename", "mkdir-rmdir", "readdirp")
_ENTRIES = 1000                   # per READDIRPLUS batch


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.xlator_cost",
                                description=__doc__.splitlines()[0])
    p.add_argument("--xlator", default="performance/md-cache",
                   help="translator type over the stub (default performance/md-cache)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the translator; may be repeated")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--calls", type=int, default=1000, help="calls per loop")
    p.add_argument("--tree", type=Path, default=ROOT,
                   help="checkout whose xlators are measured (default this one)")
    p.add_argument("--instructions", action="store_true",
                   help="count instructions under callgrind instead of timing")
    p.add_argument("--dumps", type=Path, help=argparse.SUPPRESS)   # set under valgrind
    return p.parse_args(argv)


class _Meter:
    """Instructions (under callgrind, through vgdb) or nanoseconds of one loop."""

    def __init__(self, dumps: Optional[Path]) -> None:
        self.dumps = dumps
        self.taken = 0
        self.empty = 0
        if dumps is not None:
            self.empty = min(self._window(lambda: None) for _ in range(3))

    def _vgdb(self, *cmds: str) -> None:
        argv = ["vgdb", f"--pid={os.getpid()}"]
        for c in cmds:
            argv += ["-c", c]
        subprocess.run(argv, capture_output=True, check=True, timeout=120)

    def _window(self, loop: Callable[[], None]) -> int:
        self._vgdb("instrumentation on", "zero")
        loop()
        self._vgdb("dump", "instrumentation off")
        self.taken += 1
        path = Path(f"{self.dumps}.{self.taken}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            time.sleep(0.05)
        raise RuntimeError(f"no callgrind dump {path}")

    @property
    def repeats(self) -> int:
        """Loops per figure (the best is kept): one for the instruction count."""
        return 1 if self.dumps is not None else 5

    def __call__(self, loop: Callable[[], None]) -> float:
        gc.collect()
        gc.disable()
        try:
            if self.dumps is not None:
                return float(self._window(loop) - self.empty)
            t0 = time.perf_counter()
            loop()
            return (time.perf_counter() - t0) * 1e9
        finally:
            gc.enable()


def _drive(coro: Any) -> Any:
    """Run a coroutine that never suspends (the stub never waits)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a fop suspended over the stub")


def _classes() -> Dict[str, Any]:
    """The stub and the names it needs, imported from the measured checkout."""
    from xlators.core.errors import FopError
    from xlators.core.frame import Frame
    from xlators.core.inode import Fd, Loc
    from xlators.core.translator import Translator
    from xlators.core.types import Attr, DirEntry, Entry
    from xlators.testing import make_translator

    class Stub(Translator):
        """A leaf that answers every fop at once from a dict of names."""
        type = "bench/stub"
        passes_data_through = True

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.names: Dict[tuple, int] = {}
            self.next = 100

        @staticmethod
        def _attr(ino: int, mode: int = stat.S_IFREG | 0o644) -> Attr:
            return Attr(ino=ino, mode=mode, nlink=1)

        async def lookup(self, frame, loc):
            ino = self.names.get((loc.parent.ino, loc.name))
            if ino is None:
                raise FopError(2)
            return Entry(self.itable.link(ino), self._attr(ino))

        async def getattr(self, frame, inode, fd=None):
            return self._attr(inode.ino)

        def _new(self, loc, mode=stat.S_IFREG | 0o644):
            self.next += 1
            self.names[(loc.parent.ino, loc.name)] = self.next
            return Entry(self.itable.link(self.next), self._attr(self.next, mode))

        async def create(self, frame, loc, flags, mode, umask, fd):
            return self._new(loc)

        async def mknod(self, frame, loc, mode, rdev, umask):
            return self._new(loc)

        async def mkdir(self, frame, loc, mode, umask):
            return self._new(loc, stat.S_IFDIR | 0o755)

        async def unlink(self, frame, loc):
            self.names.pop((loc.parent.ino, loc.name))

        async def rmdir(self, frame, loc):
            self.names.pop((loc.parent.ino, loc.name))

        async def rename(self, frame, oldloc, newloc, flags=0):
            self.names[(newloc.parent.ino, newloc.name)] = \
                self.names.pop((oldloc.parent.ino, oldloc.name))

        async def getxattr(self, frame, inode, name):
            raise FopError(61)                     # ENODATA

        async def writev(self, frame, fd, data, offset, flags=0):
            return len(data)

        async def readdirp(self, frame, fd, offset, size):
            if offset:
                return []
            return [DirEntry(b"e%d" % i, 10_000_000 + i, 8, i + 1,
                             Entry(self.itable.link(10_000_000 + i),
                                   self._attr(10_000_000 + i)))
                    for i in range(_ENTRIES)]

    return dict(Stub=Stub, Frame=Frame, Fd=Fd, Loc=Loc, make_translator=make_translator)


def _run(k: Dict[str, Any], top: Any, workload: str, calls: int,
         meter: _Meter) -> float:
    """Set up, then measure one loop of ``workload`` on ``top``; per request."""
    Fd, Loc = k["Fd"], k["Loc"]
    itable = top.itable
    root = itable.root
    frame = k["Frame"](2)
    _drive(top.getattr(frame, root))
    d = _drive(top.mkdir(frame, Loc(root, b"dir"), 0o40755, 0)).inode
    f = _drive(top.create(frame, Loc(root, b"f"), os.O_RDWR | os.O_CREAT, 0o100644, 0,
                          Fd(root))).inode
    names = [b"n%d" % i for i in range(calls)]

    def forget(inode: Any) -> None:
        if itable.forget(inode, 1):
            _drive(top.forget(frame, inode))

    def missing(name: bytes) -> None:
        try:
            _drive(top.lookup(frame, Loc(d, name)))
        except OSError:
            pass

    made = []
    if workload in ("unlink", "rename", "lookup-cold"):
        for n in names:
            e = _drive(top.mknod(frame, Loc(d, n), 0o100644, 0, 0o022))
            e.inode.nlookup += 1
            made.append((n, e.inode))
    if workload == "lookup-cold":
        for _, inode in made:
            forget(inode)
        if hasattr(top, "clock"):
            top.clock = lambda: 1e9                  # every record is old

    def loop() -> None:
        if workload == "getattr":
            for _ in names:
                _drive(top.getattr(frame, f))
        elif workload == "lookup":
            for _ in names:
                _drive(top.lookup(frame, Loc(root, b"f")))
        elif workload == "lookup-cold":
            for n, _ in made:
                e = _drive(top.lookup(frame, Loc(d, n)))
                e.inode.nlookup += 1
                forget(e.inode)
        elif workload == "lookup-missing":
            for _ in names:
                missing(b"missing")
        elif workload == "create":
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            for n in names:
                missing(n)
                fd = Fd(d, flags)
                e = _drive(top.create(frame, Loc(d, n), flags, 0o100644, 0o022, fd))
                fd.inode = e.inode
                e.inode.nlookup += 1
                try:
                    _drive(top.getxattr(frame, e.inode, b"security.capability"))
                except OSError:
                    pass
                _drive(top.writev(frame, fd, b"x", 0, 0))
                _drive(top.flush(frame, fd))
                _drive(top.release(frame, fd))
        elif workload == "unlink":
            for n, inode in made:
                _drive(top.unlink(frame, Loc(d, n)))
                forget(inode)
        elif workload == "rename":
            for n, _ in made:
                missing(n + b"r")
                _drive(top.rename(frame, Loc(d, n), Loc(d, n + b"r"), 0))
        elif workload == "mkdir-rmdir":
            for n in names:
                missing(n)
                e = _drive(top.mkdir(frame, Loc(d, n), 0o40755, 0o022))
                e.inode.nlookup += 1
                _drive(top.rmdir(frame, Loc(d, n)))
                forget(e.inode)
        elif workload == "readdirp":
            dfd = Fd(d, os.O_RDONLY, is_dir=True)
            for _ in range(max(1, calls // _ENTRIES)):
                got = _drive(top.readdirp(frame, dfd, 0, 1 << 20))
                for e in got:
                    e.entry.inode.nlookup += 1
                for e in got:
                    forget(e.entry.inode)
    per = max(1, calls // _ENTRIES) * _ENTRIES if workload == "readdirp" else calls
    return meter(loop) / per


def measure(args: argparse.Namespace) -> str:
    sys.path.insert(0, str(args.tree.resolve()))
    k = _classes()
    options = dict(o.split("=", 1) for o in args.option)
    meter = _Meter(args.dumps)
    unit = "instructions" if args.dumps is not None else "ns"
    lines = [f"{args.xlator} over a storage stub ({args.tree.resolve()}), {unit} per "
             f"request (readdirp: per entry; create: its 6 requests), {args.calls} calls",
             "", f"| workload | stub | {args.xlator} over it | added |", "|---|---:|---:|---:|"]
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        if workload not in WORKLOADS:
            raise SystemExit(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
        def stacked() -> Any:
            leaf = k["Stub"]("stub", [], {})
            return k["make_translator"](args.xlator, (leaf,), options, itable=leaf.itable)
        alone = min(_run(k, k["Stub"]("stub", [], {}), workload, args.calls, meter)
                    for _ in range(meter.repeats))
        over = min(_run(k, stacked(), workload, args.calls, meter)
                   for _ in range(meter.repeats))
        lines.append(f"| {workload} | {alone:,.0f} | {over:,.0f} | {over - alone:+,.0f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.instructions and args.dumps is None:
        out = Path(tempfile.mkdtemp(prefix="xlator-cost-")) / "callgrind.out"
        argv = [a for a in (sys.argv[1:] if argv is None else argv)]
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}", sys.executable, "-m", "benchmarks.xlator_cost",
               *argv, "--dumps", str(out)]
        done = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
        return done.returncode
    print(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
