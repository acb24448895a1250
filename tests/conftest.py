"""Session-wide process hygiene for every test.

This machine's PID 1 (and some CI containers') never reaps orphans: a daemon that
forked away from its parent (glusterd's child, a daemonized xlfs mount, a brick) and
then died stays a zombie for good, and ``.ci/run`` would find it.  The test process
therefore makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): orphans of
anything the tests start are re-parented to it instead of PID 1, and when the run ends
it reaps every child that is left, so that nothing the tests started outlives them
as a zombie.  Processes still running are not touched here: each fixture stops its
own, and ``.ci/run`` reports any it missed.
"""
from __future__ import annotations

import ctypes
import os

PR_SET_CHILD_SUBREAPER = 36


def pytest_configure(config) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass                     # not Linux: orphans go to init, which reaps them


def reap_children() -> list[int]:
    """Reap every child that has exited; returns their pids."""
    reaped = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)


def pytest_unconfigure(config) -> None:
    reap_children()
