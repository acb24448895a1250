"""A process to interrupt: it blocks in one system call on a mount and reports how it ended.

    python tests/interrupts/victim.py ACTION PATH [--sigint=handled|fatal] [--no-write]
        [--lock] [--gate]

ACTION is the call that blocks (made through libc with ctypes, so that Python's own
EINTR retries (PEP 475) hide nothing and the errno is the kernel's):

- ``close``:  creates PATH, writes to it (not with ``--no-write``), takes a whole-file
  POSIX write lock (only with ``--lock``: its FLUSH then releases the lock owner's
  locks), then close() (FLUSH);
- ``write``:  opens PATH and write()s to it (WRITE);
- ``read``:   opens PATH and read()s from it (READ; use a direct_io mount);
- ``fcntl``:  opens PATH and takes a whole-file POSIX write lock with F_SETLKW;
- ``setlk``:  the same with F_SETLK (does not wait for a holder; SETLK);
- ``flock``:  opens PATH and takes flock(LOCK_EX);
- ``lookup``: access(PATH, F_OK) (LOOKUP of a name the kernel does not know).

``--gate``: once the file is open (and, for ``close``, written and locked), print
``opened PID`` and wait for a line on stdin before going on, so the caller can change
the world in between (freeze the servers of the mount).

``--sigint=handled`` (the default) installs a SIGINT handler that only records the signal,
as any program with a handler does (Python's default KeyboardInterrupt handler is one):
the call then returns EINTR if the filesystem answers the interrupt.  ``fatal`` restores
the default action (the process dies).  SIGTERM and SIGKILL keep their default (fatal).

Protocol on stdout: ``ready PID SYSCALL_NR`` just before the call, then one JSON line
``{"rc": .., "errno": "EINTR" | null, "signals": [..], "elapsed": seconds}`` when the call
returns.  Lock actions then wait for a line (or EOF) on stdin before exiting, still
holding whatever lock they got, so the caller can look at the lock table meanwhile.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import struct
import sys
import time

# x86_64 syscall numbers (what /proc/PID/syscall shows while the call blocks)
SYSCALL_NR = {"read": 0, "write": 1, "close": 3, "fcntl": 72, "setlk": 72, "flock": 73,
              "lookup": 21}
F_SETLK = 6
F_SETLKW = 7
LOCK_EX = 2
_FLOCK = struct.Struct("hh4xqqi4x")   # struct flock on LP64 Linux

libc = ctypes.CDLL(None, use_errno=True)
got: list[int] = []


def _record(signum, frame) -> None:
    got.append(signum)


def main(argv: list[str]) -> int:
    action, path = argv[0], argv[1]
    sigint = "handled"
    for a in argv[2:]:
        if a.startswith("--sigint="):
            sigint = a.split("=", 1)[1]
    write = "--no-write" not in argv
    gate = "--gate" in argv
    signal.signal(signal.SIGINT, _record if sigint == "handled" else signal.SIG_DFL)
    fd = -1
    if action == "close":
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        if write:
            os.write(fd, b"written before close\n")
        if "--lock" in argv:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    elif action in ("write", "fcntl", "setlk", "flock"):
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    elif action == "read":
        fd = os.open(path, os.O_RDONLY)
    elif action != "lookup":
        raise SystemExit(f"unknown action {action}")
    if gate:
        print(f"opened {os.getpid()}", flush=True)
        sys.stdin.readline()
    buf = ctypes.create_string_buffer(b"x" * 4096, 4096)
    print(f"ready {os.getpid()} {SYSCALL_NR[action]}", flush=True)
    t0 = time.monotonic()
    if action == "close":
        rc = libc.close(fd)
    elif action == "write":
        rc = libc.write(fd, buf, 4096)
    elif action == "read":
        rc = libc.read(fd, buf, 4096)
    elif action in ("fcntl", "setlk"):
        lk = ctypes.create_string_buffer(_FLOCK.pack(1, 0, 0, 0, 0), _FLOCK.size)  # F_WRLCK
        rc = libc.fcntl(fd, F_SETLKW if action == "fcntl" else F_SETLK, lk)
    elif action == "lookup":
        rc = libc.access(path.encode(), os.F_OK)
    else:
        rc = libc.flock(fd, LOCK_EX)
    err = ctypes.get_errno() if rc < 0 else 0
    elapsed = time.monotonic() - t0
    print(json.dumps({"rc": rc, "errno": errno.errorcode.get(err) if err else None,
                      "signals": got, "elapsed": round(elapsed, 4)}), flush=True)
    if action in ("fcntl", "setlk", "flock"):
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
