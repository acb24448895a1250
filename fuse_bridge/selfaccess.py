"""Self-access detection: requests that the daemon itself made on its own mount.

A request whose caller is the daemon (its main thread or any of its threads: a worker
thread of a translator, the notification thread) means some code in the daemon touched
the mountpoint.  That is the first deadlock of the kernel's FUSE documentation (seed 003,
scenario 1): the daemon waits, in a syscall on its own mount, for a kernel lock or a reply
that only the daemon can release.  xlfs survives it when the access runs in a worker thread
and the request that caused it is interruptible (docs/deadlocks.md), but it is always a
bug worth a clear log line, so the bridge checks the caller of every request:

    if pid not in selfaccess.FOREIGN: selfaccess.check(pid, opcode, unique, nodeid)

``frame.pid`` is the kernel's thread id of the caller.  It is ours when
``/proc/self/task/<pid>`` exists.  That costs a syscall, so callers found foreign are
remembered in ``FOREIGN`` (a dict, for a fast ``in``; bounded, cleared when full) and
never looked up again; pid 0 (kernel-initiated requests: RELEASE, writeback) is foreign.
A remembered foreign pid that is later reused by a daemon thread would be missed: pids
wrap only after ``pid_max`` (4 million) forks, and the cache is cleared every
``FOREIGN_MAX`` callers.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from .abi import opcode_name as _opname

log = logging.getLogger("xlfs.fuse.selfaccess")

FOREIGN_MAX = 4096
#: Caller pids known not to belong to this process (pid -> None).
FOREIGN: dict[int, None] = {0: None}
#: How many self-accesses were seen, by opcode name.
SEEN: dict[str, int] = {}
_LOG_FIRST = 20          # log every one of the first 20, then one in 1000


def is_self(pid: int) -> bool:
    """Whether thread id ``pid`` is a thread of this process (uncached)."""
    if pid <= 0:
        return False
    return pid == os.getpid() or os.path.exists(f"/proc/self/task/{pid}")


def check(pid: int, opcode: int, unique: int = 0, nodeid: int = 0) -> bool:
    """Log a WARNING when the request comes from this process; True if it does."""
    if pid in FOREIGN:
        return False
    if not is_self(pid):
        if len(FOREIGN) >= FOREIGN_MAX:
            FOREIGN.clear()
            FOREIGN[0] = None
        FOREIGN[pid] = None
        return False
    name = _opname(opcode)
    n = SEEN[name] = SEEN.get(name, 0) + 1
    total = sum(SEEN.values())
    if total <= _LOG_FIRST or total % 1000 == 0:
        log.warning("self-access: %s (unique %d, nodeid %d) comes from thread %d of this "
                    "daemon (%s): the daemon is accessing its own mount and the request "
                    "waits on the daemon itself; if it hangs, interrupt the caller "
                    "(docs/deadlocks.md, seed 003) [%d such %s so far]", name, unique,
                    nodeid, pid, _thread_name(pid), n, name)
    return True


def dump() -> dict[str, Any]:
    return {f"self-access.{k}": v for k, v in sorted(SEEN.items())}


def _thread_name(pid: int) -> str:
    import threading
    for t in threading.enumerate():
        if t.native_id == pid:
            return f"thread {t.name!r}"
    if pid == os.getpid():
        return "the main thread"
    try:
        with open(f"/proc/self/task/{pid}/comm") as f:
            return f"thread {f.read().strip()!r}"
    except OSError:
        return "a thread"
