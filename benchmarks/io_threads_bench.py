"""Measure performance/io-threads in process (no mount): with and without it, over
storage/posix and over debug/delay-gen (over posix).

    python -m benchmarks.io_threads_bench [--tasks 32] [--ops 300]

Each run starts ``tasks`` concurrent trio tasks; each does ``ops`` rounds of getattr plus
a 4 KiB pread of a (page-cached) file, through the stack's top translator, as the bridge
would.  Prints operations per second (best of 3 runs) for every stack.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import trio

from xlators.testing import Harness

STACKS = {
    "posix": (),
    "io-threads/posix": ("performance/io-threads",),
    "delay-gen/posix": ("debug/delay-gen",),
    "io-threads/delay-gen/posix": ("performance/io-threads", "debug/delay-gen"),
}


async def _run(types: tuple[str, ...], brick: str, tasks: int, ops: int) -> float:
    opts = {"storage/posix": {"directory": brick, "reserve": "0"},
            "debug/delay-gen": {"delay-percentage": "100", "delay-duration": "1000",
                                "enable": "getattr,readv"}}
    h = Harness.stack(*types, leaf="storage/posix", options=opts)
    try:
        await h.write_file("/data", os.urandom(1 << 20))
        fd = await h.open("/data", os.O_RDONLY)
        inode = fd.inode

        async def worker(k: int) -> None:
            for i in range(ops):
                await h.top.getattr(h.frame(), inode)
                await h.read(fd, 4096, ((k * 131 + i) % 256) * 4096)
        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for k in range(tasks):
                n.start_soon(worker, k)
        elapsed = time.perf_counter() - t0
        await h.close(fd)
        return 2 * tasks * ops / elapsed
    finally:
        h.fini()


def measure(tasks: int = 32, ops: int = 300, rounds: int = 3) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="xlfs-iot-") as brick:
        for _ in range(rounds):               # interleaved rounds, best kept
            for name, types in STACKS.items():
                rate = trio.run(_run, types, brick, tasks, ops)
                out[name] = max(out.get(name, 0.0), rate)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--ops", type=int, default=300)
    a = ap.parse_args()
    for name, rate in measure(a.tasks, a.ops).items():
        print(f"{name:30s} {rate:10.0f} ops/s")


if __name__ == "__main__":
    main()
