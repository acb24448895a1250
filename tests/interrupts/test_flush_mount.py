"""GlusterFS's tests/features/interrupt.t, made deterministic, on real mounts.

volfiles/delay-flush.vol puts debug/delay-gen on FLUSH (delay shortened to DELAY here), so
a process in close() is still waiting for its FLUSH when the signal comes: what happens
next depends only on --fuse-flush-handle-interrupt.

- With the flag: the handler answers EINTR at once; close() returns EINTR (handled
  SIGINT) or the process dies (SIGINT default, SIGTERM, SIGKILL) in a fraction of a
  second; the log says ``FLUSH unique N: interrupt handler triggered``.  The flush itself
  finishes later, unseen.
- Without it: the process waits out the delay (FLUSH is a forced request: even SIGKILL
  leaves it in D state until the reply) and close() succeeds; the log says
  ``INTERRUPT unique N (FLUSH): no handler found``.
"""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from tests.interrupts.intrlib import DELAY_FLUSH, Victim, log_since, statedump
from tests.mountlib import Mounted, can_mount, wait_until

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

DELAY = 3.0
FAST = 1.0            # "at once": generous for a loaded 2-core VM (measured: ~2 ms)

CASES = {
    "sigint-handled": (signal.SIGINT, "handled"),
    "sigint-fatal": (signal.SIGINT, "fatal"),
    "sigterm": (signal.SIGTERM, "handled"),
    "sigkill": (signal.SIGKILL, "handled"),
}


@pytest.fixture(scope="module", params=[True, False], ids=["flag-on", "flag-off"])
def flush_mount(request, tmp_path_factory):
    flag = request.param
    work = tmp_path_factory.mktemp("flush-on" if flag else "flush-off")
    dumps = work / "dumps"
    dumps.mkdir()
    flags = ["--fuse-flush-handle-interrupt"] if flag else []
    with Mounted(DELAY_FLUSH, work, *flags, limit=600.0,
                 overrides=[f"delay.delay-duration={int(DELAY * 1e6)}"],
                 env={"XLFS_DUMP_DIR": str(dumps)}) as m:
        yield m, flag, dumps
        # every delayed flush has finished by now, or finishes within the delay
        deadline = time.monotonic() + DELAY + 5
        while time.monotonic() < deadline:
            state = statedump(m, dumps)
            if state.get("records") == "0" and state.get("in-flight") == "0":
                break
            time.sleep(0.2)
        assert state.get("records") == "0", state
        log = m.read_log()
        assert "Traceback" not in log and "corrupted" not in log


def wait_for_log(mounted, offset: int, pattern: str, timeout: float = 3.0) -> re.Match:
    """The first match of ``pattern`` in the log written since ``offset``, once there."""
    return wait_until(lambda: re.search(pattern, log_since(mounted, offset)), timeout,
                      f"/{pattern}/ in the log", detail=lambda: log_since(mounted, offset),
                      interval=0.05)


@pytest.mark.parametrize("case", list(CASES))
def test_signal_during_close(flush_mount, case):
    m, flag, _ = flush_mount
    sig, sigint = CASES[case]
    offset = len(m.read_log())
    path = m.path(f"testfile-{case}")
    with Victim("close", path, sigint) as v:
        v.wait_blocked()
        v.signal(sig)
        if not flag and sig == signal.SIGKILL:
            time.sleep(0.5)
            assert v.state() == "D"       # forced request: not even SIGKILL frees it
        took = v.wait_exit(DELAY + 10)
        result = v.wait_returned(0.5) if v.returncode == 0 else None
    fatal = sigint == "fatal" or sig != signal.SIGINT
    if fatal:
        assert v.returncode == -sig
    else:
        assert v.returncode == 0 and result is not None
    if flag:
        assert took < FAST, f"{case}: {took:.3f}s with the flag"
        if not fatal:
            assert (result["rc"], result["errno"]) == (-1, "EINTR")
        wait_for_log(m, offset, r"FLUSH unique \d+: interrupt handler triggered")
    else:
        assert took > DELAY * 0.6, f"{case}: {took:.3f}s without the flag"
        if not fatal:
            assert (result["rc"], result["errno"]) == (0, None)
        wait_for_log(m, offset, r"INTERRUPT unique \d+ \(FLUSH\): no handler found")
        assert "interrupt handler triggered" not in log_since(m, offset)
    # the filesystem is fine and the data is there (GlusterFS's sanity check; read on
    # the brick, since a close() on the mount would wait out a delayed FLUSH again)
    assert os.stat(path).st_size == len("written before close\n")
    assert (m.brick / f"testfile-{case}").read_text() == "written before close\n"


def test_the_flush_finishes_unseen(flush_mount):
    """With the flag, the interrupted flush still runs to the end; its reply is dropped."""
    m, flag, _ = flush_mount
    if not flag:
        pytest.skip("only with the flag")
    offset = len(m.read_log())
    with Victim("close", m.path("unseen")) as v:
        v.wait_blocked()
        v.signal(signal.SIGKILL)
        assert v.wait_exit(5) < FAST
    found = wait_for_log(m, offset, r"FLUSH unique (\d+): interrupt handler triggered")
    wait_for_log(m, offset, rf"FLUSH unique {found.group(1)}: answered EINTR by the interrupt "
                        r"handler; the flush finished afterwards", timeout=DELAY + 5)


def test_two_signals_one_interrupt(flush_mount):
    """Two SIGINTs during one close(): the kernel sends one INTERRUPT; one reply."""
    m, flag, _ = flush_mount
    offset = len(m.read_log())
    with Victim("close", m.path("twice")) as v:
        v.wait_blocked()
        v.signal(signal.SIGINT)
        time.sleep(0.05)
        v.signal(signal.SIGINT)
        took = v.wait_exit(DELAY + 10)
        result = v.wait_returned(0.5)
    assert result["errno"] == ("EINTR" if flag else None)
    assert (took < FAST) if flag else (took > DELAY * 0.5)
    log = log_since(m, offset)
    pattern = r"FLUSH unique \d+: interrupt handler triggered" if flag else \
        r"INTERRUPT unique \d+ \(FLUSH\): no handler found"
    assert len(re.findall(pattern, log)) == 1


def test_flag_in_the_statedump(flush_mount):
    m, flag, dumps = flush_mount
    state = statedump(m, dumps)
    assert state["option.flush_handle_interrupt"] == ("yes" if flag else "no")
