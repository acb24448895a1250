"""The requests of one creating or removing call, through the bridge and a graph,
in-process and without a kernel: ``python -m benchmarks.entry_inline CALLS N [VOLFILE]``.

CALLS (comma list): create (LOOKUP of the new name, CREATE, GETXATTR
security.capability, FLUSH, RELEASE: open(O_CREAT|O_EXCL), write, close as issue 10's
create row does it, the write itself left out), unlink (LOOKUP, UNLINK, FORGET, and the
forget applied), mkdir-rmdir (LOOKUP, MKDIR, RMDIR, FORGET, the forget applied), rename (LOOKUP, LOOKUP of the new name,
RENAME), lookup (LOOKUP of an existing name).  The files that unlink and rename act on
are made through the bridge first (MKNOD), as the benchmarks make them through the
mount.  Each call also sends the GETATTR of the
directory that the kernel sends before it (the directory's attributes went stale with
the last change).  VOLFILE: volfiles/local.vol (default) or another stack over a brick.

Steps ``Session.serve`` inline on prepared requests (as the reader does); replies go to
/dev/null.  Prints user µs per call (min over slices).  Under callgrind, run it with two
N and take the difference of the totals for instructions per call; under cProfile
(``-m cProfile -s tottime``) for which Python functions a call runs and how often.
With ``CALLGRIND_STEPS=1`` as well, each opcode's requests run inside a C function of
their own (``STEP_WRAPPERS``: GETATTR in ``starmap_next``, LOOKUP in ``takewhile_next``,
...), so ``callgrind_annotate --inclusive=yes`` gives each opcode's share of the calls.
"""
from __future__ import annotations

import functools
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

from fuse_bridge import abi
from fuse_bridge.options import BridgeOptions
from fuse_bridge.session import Session
from xlators.core.graph import Graph

class O:
    """The opcodes as plain ints (an IntEnum member costs a __getattr__ per use)."""
    locals().update({op.name: int(op) for op in abi.Opcode})
ROOT = Path(__file__).resolve().parent.parent


class _Chan:
    fd = -1


def _setup(volfile: Path) -> tuple[Session, _Chan, str]:
    brick = tempfile.mkdtemp(prefix="entry-inline-brick-")
    text = volfile.read_text().replace("/var/lib/xlfs/brick", brick)
    g = Graph.from_text(text)
    g.init()
    g.activate()
    opts = BridgeOptions()
    opts.entry_timeout, opts.attribute_timeout, opts.negative_timeout = 0.0, 1.0, 0.0
    null = os.open("/dev/null", os.O_WRONLY)
    chan = _Chan()
    chan.fd = null
    return Session(g, null, opts), chan, brick


def _in(iterator_of):
    """Run ``f()`` inside the C function that steps the iterator ``iterator_of(f)``."""
    return lambda f: list(iterator_of(f))


# opcode -> (the C function callgrind shows, a runner of f() inside it)
STEP_WRAPPERS = {
    O.GETATTR: ("starmap_next", _in(lambda f: itertools.starmap(f, [()]))),
    O.LOOKUP: ("takewhile_next", _in(lambda f: itertools.takewhile(
        lambda _: f() or True, [0]))),
    O.MKDIR: ("dropwhile_next", _in(lambda f: itertools.dropwhile(
        lambda _: f() and False, [0]))),
    O.CREATE: ("dropwhile_next", _in(lambda f: itertools.dropwhile(
        lambda _: f() and False, [0]))),
    O.RMDIR: ("groupby_next", _in(lambda f: itertools.groupby([0], key=lambda _: f()))),
    O.UNLINK: ("groupby_next", _in(lambda f: itertools.groupby([0], key=lambda _: f()))),
    O.RENAME: ("groupby_next", _in(lambda f: itertools.groupby([0], key=lambda _: f()))),
    O.FORGET: ("filterfalse_next", _in(lambda f: itertools.filterfalse(
        lambda _: f(), [0]))),
    "apply_forgets": ("accumulate_next", _in(lambda f: itertools.accumulate(
        [0, 0], lambda a, b: f()))),
}


class Driver:
    """Prepared requests stepped through ``Session.serve``, replies captured on demand."""

    def __init__(self, session: Session, chan: _Chan) -> None:
        self.s, self.chan, self.unique = session, chan, 2
        self.wrappers = STEP_WRAPPERS if os.environ.get("CALLGRIND_STEPS") else None

    def step(self, opcode: int, nodeid: int, body: bytes) -> None:
        wrap = self.wrappers.get(opcode) if self.wrappers is not None else None
        if wrap is not None:
            wrap[1](lambda: self._step(opcode, nodeid, body))
        else:
            self._step(opcode, nodeid, body)

    def _step(self, opcode: int, nodeid: int, body: bytes) -> None:
        self.unique += 2
        buf = bytearray(abi.IN_HEADER.pack(40 + len(body), opcode, self.unique, nodeid,
                                           0, 0, 1, 0) + body)
        if self.s.serve(self.chan, memoryview(buf), len(buf)) is not None:
            raise RuntimeError(f"opcode {opcode} waited")

    def apply_forgets(self) -> None:
        """What the session's forget applier does once the device is quiet (the
        deferred forgets: the table, then the graph's forget), stepped inline."""
        wrap = self.wrappers.get("apply_forgets") if self.wrappers is not None else None
        if wrap is not None:
            wrap[1](self._apply_forgets)
        else:
            self._apply_forgets()

    def _apply_forgets(self) -> None:
        coro = self.s.client.apply_forgets()
        try:
            coro.send(None)
        except StopIteration:
            return
        raise RuntimeError("apply_forgets waited")

    def capture(self, opcode: int, nodeid: int, body: bytes) -> bytes:
        r, w = os.pipe()
        null, self.chan.fd = self.chan.fd, w
        try:
            self.step(opcode, nodeid, body)
        finally:
            self.chan.fd = null
        data = os.read(r, 1 << 20)
        os.close(r)
        os.close(w)
        return data


def _reply_error(data: bytes) -> int:
    return -int.from_bytes(data[4:8], "little", signed=True)


def calls(d: Driver, dirid: int) -> dict:
    """One function per call name, each making one call with a fresh name."""
    getattr_dir = abi.GETATTR_IN.pack(0, 0)
    cap = abi.GETXATTR_IN.pack(0) + b"security.capability\0"
    counter = [0]

    def fresh(prefix: bytes) -> bytes:
        counter[0] += 1
        return b"%s%d" % (prefix, counter[0])

    def create() -> None:
        name = fresh(b"c")
        d.step(O.GETATTR, dirid, getattr_dir)
        d.step(O.LOOKUP, dirid, name + b"\0")
        rep = d.capture(O.CREATE, dirid, abi.CREATE_IN.pack(os.O_WRONLY | os.O_CREAT
                                                            | os.O_EXCL, 0o644, 0o022, 0)
                        + name + b"\0")
        if len(rep) < 16 + abi.ENTRY_OUT.size + 8:
            raise RuntimeError(f"CREATE failed: errno {_reply_error(rep)}")
        nodeid = int.from_bytes(rep[16:24], "little")
        fh = int.from_bytes(rep[16 + abi.ENTRY_OUT.size:16 + abi.ENTRY_OUT.size + 8],
                            "little")
        d.step(O.GETXATTR, nodeid, cap)
        d.step(O.FLUSH, nodeid, abi.FLUSH_IN.pack(fh, 7))
        d.step(O.RELEASE, nodeid, abi.RELEASE_IN.pack(fh, os.O_WRONLY, 0, 0))

    def unlink() -> None:
        name = unlinkable.pop()
        d.step(O.GETATTR, dirid, getattr_dir)
        rep = d.capture(O.LOOKUP, dirid, name + b"\0")
        nodeid = int.from_bytes(rep[16:24], "little")
        d.step(O.UNLINK, dirid, name + b"\0")
        d.step(O.FORGET, nodeid, abi.FORGET_IN.pack(2))     # MKNOD's and LOOKUP's
        d.apply_forgets()

    def mkdir_rmdir() -> None:
        name = fresh(b"m")
        d.step(O.GETATTR, dirid, getattr_dir)
        d.step(O.LOOKUP, dirid, name + b"\0")
        rep = d.capture(O.MKDIR, dirid, abi.MKDIR_IN.pack(0o755, 0o022) + name + b"\0")
        nodeid = int.from_bytes(rep[16:24], "little")
        d.step(O.GETATTR, dirid, getattr_dir)
        d.step(O.RMDIR, dirid, name + b"\0")
        d.step(O.FORGET, nodeid, abi.FORGET_IN.pack(1))
        d.apply_forgets()

    def rename() -> None:
        name = renamable.pop()
        d.step(O.GETATTR, dirid, getattr_dir)
        d.step(O.LOOKUP, dirid, name + b"\0")
        d.step(O.LOOKUP, dirid, b"r" + name + b"\0")
        d.step(O.RENAME, dirid, abi.RENAME_IN.pack(dirid) + name + b"\0r" + name + b"\0")

    def lookup() -> None:
        d.step(O.LOOKUP, dirid, b"f\0")

    unlinkable: list[bytes] = []
    renamable: list[bytes] = []
    return {"create": create, "unlink": unlink, "mkdir-rmdir": mkdir_rmdir,
            "rename": rename, "lookup": lookup,
            "_pools": (unlinkable, renamable)}


def _profiled(name: str, one, n: int) -> None:
    """cProfile of ``n`` calls: each function's calls and own time per call."""
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        one()
    prof.disable()
    st = pstats.Stats(prof)
    rows = sorted(st.stats.items(), key=lambda kv: (-kv[1][1], kv[0]))
    print(f"{name}: {sum(v[1] for _, v in rows) / n:.1f} calls per call "
          "(calls per call, own us per call, function)")
    for (file, line, func), (cc, nc, tt, ct, _) in rows[:int(os.environ.get("PROFILE_ROWS", 200))]:
        print(f"  {nc / n:6.2f} {tt / n * 1e6:7.2f}  {Path(file).name}:{line}({func})")


async def main(names: list[str], n: int, volfile: Path, profile: bool = False) -> None:
    s, chan, brick = _setup(volfile)
    try:
        d = Driver(s, chan)
        d.capture(O.INIT, 0, abi.INIT_IN_COMPAT.pack(7, 45, 131072, 0))
        assert s.client.initialized
        rep = d.capture(O.MKDIR, 1, abi.MKDIR_IN.pack(0o755, 0) + b"d\0")
        dirid = int.from_bytes(rep[16:24], "little")
        os.close(os.open(os.path.join(brick, "d", "f"), os.O_CREAT | os.O_WRONLY, 0o644))
        table = calls(d, dirid)
        unlinkable, renamable = table.pop("_pools")
        total = 200 + n
        for call, pool, prefix in (("unlink", unlinkable, "u"), ("rename", renamable, "f")):
            if call not in names:
                continue
            for i in range(total):      # made through the bridge: known inodes
                nm = f"{prefix}{i}".encode()
                d.step(O.MKNOD, dirid, abi.MKNOD_IN.pack(0o100644, 0, 0) + nm + b"\0")
                pool.append(nm)
        for name in names:
            one = table[name]
            for _ in range(200):
                one()
            if profile:
                _profiled(name, one, n)
                continue
            if os.environ.get("CALLGRIND"):
                # valgrind --tool=callgrind --collect-atstart=no
                # --toggle-collect=functools_reduce: only these n calls are counted
                functools.reduce(lambda _, __: one(), range(n), None)
                print(f"{name:12s} {n} calls under callgrind", flush=True)
                if d.wrappers is not None:
                    print("  each opcode inside: " + ", ".join(
                        f"{op if isinstance(op, str) else abi.Opcode(op).name} {fn}"
                        for op, (fn, _) in STEP_WRAPPERS.items()), flush=True)
                continue
            best = 1e9
            per = max(1, n // 20)
            done = 0
            while done < n:
                t0 = time.process_time()
                for _ in range(per):
                    one()
                best = min(best, (time.process_time() - t0) / per)
                done += per
            print(f"{name:12s} {best * 1e6:7.2f} us/call (min of slices)", flush=True)
    finally:
        shutil.rmtree(brick)


if __name__ == "__main__":
    vol = Path(sys.argv[3]) if len(sys.argv) > 3 else ROOT / "volfiles" / "local.vol"
    trio.run(main, sys.argv[1].split(","), int(sys.argv[2]), vol,
             bool(os.environ.get("PROFILE")))
