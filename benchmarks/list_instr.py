"""Instructions per listed entry, in-process: the bridge (Session.dispatch) over
volfiles/local.vol answering a listing as the kernel asks for it, with no kernel and no
mount, under callgrind.

    python -m benchmarks.list_instr                         # this tree, every mode
    python -m benchmarks.list_instr --baseline /work/wt/base --modes readdir,cold
    python -m benchmarks.list_instr --run readdir 2000 3    # one run, no callgrind

A run builds a directory of N files (``f00000`` ...) in a brick, INITs a Session on
/dev/null and, ``--listings`` times, OPENDIR, READDIR(PLUS) requests of ``--size`` bytes
(32 KiB: what ``os.listdir`` makes the kernel ask) until an empty reply, RELEASEDIR.
Modes: ``readdir`` (plain READDIR throughout), ``cold`` (READDIRPLUS at offset 0 then
READDIR, as the kernel's READDIRPLUS_AUTO does for a listing), ``plus`` (READDIRPLUS
throughout; the inodes stay known after the first listing, so later listings take the
plain-stat path), ``plus-new`` (READDIRPLUS throughout, and the kernel's FORGET of every
inode after each listing, so every entry is a new inode).  Each mode is run at two
directory sizes under ``valgrind --tool=callgrind``; the difference of the instruction
totals divided by the difference of entries listed is the cost per entry (start-up,
INIT and the per-request overhead cancel out).  Deterministic (PYTHONHASHSEED=0), so one
run per tree is enough.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
MODES = ("readdir", "cold", "plus", "plus-new")
PYTHON = sys.executable
_NODEIDS = struct.Struct("<Q152x")


def make_brick(n: int) -> str:
    """A brick holding directory ``many`` of ``n`` empty files."""
    brick = tempfile.mkdtemp(prefix="xlfs-list-instr-")
    d = os.path.join(brick, "many")
    os.mkdir(d)
    for i in range(n):                  # (run() takes every record to be as long)
        os.close(os.open(os.path.join(d, f"f{i:05}"), os.O_CREAT | os.O_WRONLY, 0o644))
    with open(os.path.join(brick, "count"), "w") as f:   # (no os.listdir in the run)
        f.write(str(n))
    return brick


def run(mode: str, brick: str, listings: int, size: int) -> None:
    """One run in this process (under callgrind when driven by :func:`measure`) over
    ``brick`` (from :func:`make_brick`)."""
    import trio

    from fuse_bridge import abi
    from fuse_bridge.options import BridgeOptions
    from fuse_bridge.session import Session
    from xlators.core.graph import Graph

    with open(os.path.join(brick, "count")) as f:
        n = int(f.read())
    text = (ROOT / "volfiles" / "local.vol").read_text()
    g = Graph.from_text(text.replace("/var/lib/xlfs/brick", brick))
    g.init()
    g.activate()
    null = os.open("/dev/null", os.O_WRONLY)
    s = Session(g, null, BridgeOptions())

    class Chan:
        fd = null

    O = abi.Opcode
    unique = [2]

    async def ask(opcode: int, nodeid: int, body: bytes, reply: bool = False) -> bytes:
        unique[0] += 2
        b = bytearray(abi.IN_HEADER.pack(40 + len(body), opcode, unique[0], nodeid,
                                         0, 0, 1, 0) + body)
        if not reply:
            await s.dispatch(Chan, memoryview(b), len(b))
            return b""
        r, w = os.pipe2(os.O_NONBLOCK)
        Chan.fd = w
        try:
            await s.dispatch(Chan, memoryview(b), len(b))
            return os.read(r, 1 << 21)
        finally:
            Chan.fd = null
            os.close(r)
            os.close(w)

    async def main() -> None:
        await ask(O.INIT, 0, abi.INIT_IN_COMPAT.pack(7, 45, 131072, 0), True)
        rep = await ask(O.LOOKUP, 1, b"many\0", True)
        dir_id = int.from_bytes(rep[16:24], "little")
        plus_all = mode in ("plus", "plus-new")
        for _ in range(listings):
            rep = await ask(O.OPENDIR, dir_id, abi.OPEN_IN.pack(os.O_RDONLY, 0), True)
            fh = int.from_bytes(rep[16:24], "little")
            off = listed = 0
            while True:
                plus = plus_all or (mode == "cold" and off == 0)
                rep = await ask(O.READDIRPLUS if plus else O.READDIR, dir_id,
                                abi.READ_IN.pack(fh, off, size, 0, 0, 0), True)
                data = memoryview(rep)[16:]
                if not data:
                    if listed != n + 2:
                        raise RuntimeError(f"listed {listed} of {n + 2} entries")
                    break
                # every record is as long ("f%05d" names, and the dots, pad alike)
                rec = 160 if plus else 32
                listed += len(data) // rec
                off = int.from_bytes(data[len(data) - rec + (136 if plus else 8):][:8],
                                     "little")
                if plus:
                    nodeids = [x for x, in _NODEIDS.iter_unpack(data)]
                if mode == "plus-new":
                    body = abi.BATCH_FORGET_IN.pack(len([x for x in nodeids if x]))
                    body += b"".join(abi.FORGET_ONE.pack(x, 1) for x in nodeids if x)
                    await ask(O.BATCH_FORGET, 0, body)
            await ask(O.RELEASEDIR, dir_id, abi.RELEASE_IN.pack(fh, 0, 0, 0), True)
        os.close(null)

    trio.run(main)


def instructions(tree: Path, mode: str, n: int, listings: int, size: int) -> int:
    """Callgrind's instruction total of one run of ``tree``'s code."""
    brick = make_brick(n)
    with tempfile.TemporaryDirectory(prefix="xlfs-list-instr-cg-") as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            PYTHON, str(Path(__file__).resolve()), "--run", mode, brick,
                            str(listings), "--size", str(size)],
                           cwd=str(tree), env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{tree} {mode} {n}: {r.stderr.strip()[-600:]}")
        shutil.rmtree(brick)
        with open(out) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError(f"{tree} {mode} {n}: no total in callgrind's output")


def measure(trees: Dict[str, Path], modes: List[str], small: int, big: int,
            listings: int, size: int) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    for mode in modes:
        for name, tree in trees.items():
            a = instructions(tree, mode, small, listings, size)
            b = instructions(tree, mode, big, listings, size)
            per = (b - a) / ((big - small) * listings)
            out.setdefault(mode, {})[name] = per
            print(f"{mode:9s} {name:12s} {per:9.0f} instructions per entry", flush=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", nargs=4, metavar=("MODE", "N_OR_BRICK", "LISTINGS", "_"), help=argparse.SUPPRESS)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--baseline", type=Path, action="append", default=[], metavar="DIR")
    ap.add_argument("--small", type=int, default=1000, help="entries of the small run")
    ap.add_argument("--big", type=int, default=5000, help="entries of the big run")
    ap.add_argument("--listings", type=int, default=2)
    ap.add_argument("--size", type=int, default=32768, help="bytes each request asks")
    ap.add_argument("--no-this", action="store_true", help="measure the baselines only")
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--run":
        mode, listings = argv[1], int(argv[3])
        size = int(argv[argv.index("--size") + 1]) if "--size" in argv else 32768
        if argv[2].isdigit():                   # by hand: a brick of its own
            brick = make_brick(int(argv[2]))
            try:
                run(mode, brick, listings, size)
            finally:
                shutil.rmtree(brick)
        else:
            run(mode, argv[2], listings, size)
        return 0
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"unknown mode(s): {', '.join(bad)} (known: {', '.join(MODES)})",
              file=sys.stderr)
        return 2
    trees = {} if args.no_this else {"this": ROOT}
    for d in args.baseline:
        trees[d.resolve().name] = d.resolve()
    measure(trees, modes, args.small, args.big, args.listings, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
