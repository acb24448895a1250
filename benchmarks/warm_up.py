"""A mix of every request the benchmarks measure, run on a fresh mount before its cases.

A JIT (PyPy's) compiles a code path only after running it some thousand times, so a
daemon under one is measured warm only after each request kind has been served that
often.  ``warm_up(mountpoint, rounds)`` serves each kind about ``rounds`` times (twice
for LOOKUP): LOOKUP of existing and missing names, GETATTR, CREATE, OPEN, 4 KiB WRITE
and READ, FLUSH and RELEASE, RENAME, UNLINK, MKDIR, RMDIR, OPENDIR and READDIR, in a
directory of its own that it removes.  A peer asks for it with ``warm_up_rounds``
(benchmarks.peers.FusePeer); CPython's peers do not.
"""
from __future__ import annotations

import os
import shutil

_BLOCK = b"w" * 4096


def warm_up(mountpoint: str, rounds: int) -> None:
    """Serve each request kind about ``rounds`` times on ``mountpoint``."""
    d = os.path.join(mountpoint, "warm-up")
    os.mkdir(d)
    try:
        for i in range(rounds):
            a, b = os.path.join(d, f"a{i % 64}"), os.path.join(d, f"b{i % 64}")
            fd = os.open(a, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o644)
            try:
                os.pwrite(fd, _BLOCK, 0)
                os.pread(fd, 4096, 0)
                os.fstat(fd)
            finally:
                os.close(fd)
            os.stat(a)
            try:
                os.stat(os.path.join(d, f"missing{i}"))
            except FileNotFoundError:
                pass
            os.rename(a, b)
            os.unlink(b)
            sub = os.path.join(d, f"d{i % 64}")
            os.mkdir(sub)
            os.rmdir(sub)
            if i % 16 == 0:
                os.listdir(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
