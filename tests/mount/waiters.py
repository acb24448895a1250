"""Helper process of test_many_waiters: N threads, each with its own open file
description of PATH, block one after the other in one kind of wait on the mount.

    python waiters.py KIND PATH N

KIND: ``ofd`` (fcntl F_OFD_SETLKW write lock: each description is its own lock owner,
unlike classic POSIX locks, which all threads of a process share), ``flock`` (LOCK_EX),
or ``statfs`` (os.statvfs, for a mount whose statfs is delayed).

For the locks, thread i starts only when thread i-1 sleeps in its system call, i.e. its
request is queued in the kernel; requests are read in queue order, so the daemon sees
them in order.  The statfs waiters start all at once.
Prints ``blocked N`` when all wait, then, once they all got through, ``order [i, ...]``:
the order in which the threads got the lock (each unlocks at once, letting the next in).
"""
from __future__ import annotations

import fcntl
import json
import os
import resource
import struct
import sys
import threading
import time

SYSCALLS = {"ofd": 72, "flock": 73, "statfs": 137}    # x86_64: fcntl, flock, statfs
F_WRLCK, F_UNLCK = 1, 2


def ofd(fd: int, type_: int, wait: bool) -> None:
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (must be 0 for OFD locks)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK,
                struct.pack("@hhqqi4x", type_, 0, 0, 0, 0))


def sleeping_in(tid: int, nr: int) -> bool:
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            call = f.read().split()
        with open(f"/proc/self/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return bool(call) and call[0] == str(nr) and state in ("S", "D")


def wait_blocked(threads: list, tids: list, i: int, kind: str, errors: list) -> bool:
    deadline = time.monotonic() + 30
    while len(tids) <= i or not sleeping_in(tids[i], SYSCALLS[kind]):
        if not threads[i].is_alive() or time.monotonic() > deadline:
            print(f"waiter {i} did not block: {errors}", flush=True)
            return False
        time.sleep(0.0005)
    return True


def main() -> int:
    kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sequential = kind != "statfs"       # the lock waiters queue in a known order
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    threading.stack_size(256 * 1024)
    order: list[int] = []
    errors: list[str] = []
    fds = [os.open(path, os.O_RDWR) for _ in range(n)] if kind != "statfs" else []
    tids: list[int] = []

    def waiter(i: int) -> None:
        tids.append(threading.get_native_id())
        try:
            if kind == "ofd":
                ofd(fds[i], F_WRLCK, True)
                order.append(i)
                ofd(fds[i], F_UNLCK, False)
            elif kind == "flock":
                fcntl.flock(fds[i], fcntl.LOCK_EX)
                order.append(i)
                fcntl.flock(fds[i], fcntl.LOCK_UN)
            else:
                os.statvfs(path)
                order.append(i)
        except OSError as exc:
            errors.append(f"{i}: {exc}")

    threads = []
    for i in range(n):
        t = threading.Thread(target=waiter, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        if sequential and not wait_blocked(threads, tids, i, kind, errors):
            return 1
    if not sequential and not all(wait_blocked(threads, tids, i, kind, errors)
                                  for i in range(n)):
        return 1
    print(f"blocked {n}", flush=True)
    for t in threads:
        t.join()
    print("order " + json.dumps({"order": order, "errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
