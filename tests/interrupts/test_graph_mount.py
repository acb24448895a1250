"""Cancellation through the graph, on real mounts, with no flag at all.

debug/delay-gen on WRITE (and READ) registers frame.on_interrupt while it waits, so an
interrupt cancels the request's scope: the delay ends at once, the write never reaches
the brick, and the caller gets EINTR (handled signal) or dies (fatal signal) at once
instead of after the delay.  READs are interruptible only with direct_io (page-cache
READs are background requests the kernel never interrupts).
"""
from __future__ import annotations

import signal

import pytest

from tests.interrupts.intrlib import Victim, delay_stack, statedump
from tests.mountlib import Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

DELAY = 5.0
FAST = 1.0


@pytest.fixture(scope="module")
def delayed_io(tmp_path_factory):
    work = tmp_path_factory.mktemp("delay-io")
    vol = work / "delay-io.vol"
    vol.write_text(delay_stack("writev,readv", DELAY))
    dumps = work / "dumps"
    dumps.mkdir()
    (work / "brick").mkdir()
    (work / "brick" / "data").write_bytes(b"d" * 8192)
    with Mounted(vol, work, "--direct-io-mode=yes", limit=600.0,
                 env={"XLFS_DUMP_DIR": str(dumps)}) as m:
        yield m, dumps
        log = m.read_log()
        assert "Traceback" not in log and "corrupted" not in log


@pytest.mark.parametrize("action", ["write", "read"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["sigint", "sigterm", "sigkill"])
def test_delayed_io_is_cancelled(delayed_io, action, sig):
    m, dumps = delayed_io
    before = int(statedump(m, dumps).get("cancelled_during_delay", 0))
    path = m.path("data" if action == "read" else f"w-{sig.name}")
    with Victim(action, path) as v:
        v.wait_blocked()
        v.signal(sig)
        took = v.wait_exit(DELAY + 5)
        result = v.wait_returned(0.5) if sig == signal.SIGINT else None
    assert took < FAST, f"{action} {sig.name}: {took:.3f}s"
    if sig == signal.SIGINT:
        assert v.returncode == 0 and (result["rc"], result["errno"]) == (-1, "EINTR")
    else:
        assert v.returncode == -sig
    if action == "write":
        assert (m.brick / f"w-{sig.name}").stat().st_size == 0    # never reached posix
    after = int(statedump(m, dumps).get("cancelled_during_delay", 0))
    assert after == before + 1
    assert "cancelling through the graph" in m.read_log()
