"""FORGET and BATCH_FORGET are recorded and applied once the device is idle
(fuse_bridge.forget_backlog): a request sent right behind them is answered first, a
LOOKUP of an inode whose forget waits keeps that inode, and whatever needs exact counts
(statedump, DESTROY) applies them first.  Forgets that follow a removal (UNLINK, RMDIR,
RENAME) are applied after QUIET seconds without requests, the others after LINGER."""
from __future__ import annotations

import pytest
import trio

from fuse_bridge import abi, forget_backlog
from fuse_bridge.abi import Opcode as O
from tests.protocol.conftest import REAL_LINGER, REAL_MAX_LINGER
from tests.protocol.kernel import cstr, memory_graph, serve


async def make_files(k, count: int) -> list[int]:
    nodeids = []
    for i in range(count):
        e, o = (await k.create(1, b"f%d" % i)).create()
        (await k.release(e.nodeid, o.fh)).ok()
        nodeids.append(e.nodeid)
    return nodeids


@pytest.fixture(autouse=True)
def real_linger(short_linger, monkeypatch):
    """The real LINGER and MAX_LINGER (tests/protocol/conftest.py shortens them)."""
    monkeypatch.setattr(forget_backlog, "LINGER", REAL_LINGER)
    monkeypatch.setattr(forget_backlog, "MAX_LINGER", REAL_MAX_LINGER)


@pytest.fixture
def slow_applier(monkeypatch):
    """Forgets applied only after half a second without requests, so that a test can
    look at them waiting even when this machine is slow (1 ms is the real wait after a
    removal)."""
    monkeypatch.setattr(forget_backlog, "QUIET", 0.5)
    monkeypatch.setattr(forget_backlog, "LINGER", 0.5)


def send_now(k, *messages: bytes) -> None:
    """Send ``messages`` back to back, with no checkpoint between them: the session
    finds them all queued, as the kernel's forgets ahead of a request."""
    for msg in messages:
        k.sent.append(msg)
        assert k.ksock.send(msg) == len(msg)


def batch_forget(k, items) -> bytes:
    body = abi.BATCH_FORGET_IN.pack(len(items)) + b"".join(
        abi.FORGET_ONE.pack(n, c) for n, c in items)
    return k.message(O.BATCH_FORGET, body)


async def test_a_request_behind_a_batch_forget_is_answered_before_it_is_applied(slow_applier):
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        nodeids = await make_files(k, 20)
        lookup = k.message(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1)
        send_now(k, batch_forget(k, [(n, 1) for n in nodeids]), lookup)
        r = await k.recv()
        assert r.unique == abi.IN_HEADER.unpack_from(lookup)[2] and r.error == 0
        # answered while the forgets wait: the inodes are still in the table
        assert all(n in s.itable.by_nodeid for n in nodeids)
        assert gate.forgotten == [] and s.client.forgets_pending == 20
        await k.sync()                      # the device idles: they are applied
        assert not any(n in s.itable.by_nodeid for n in nodeids)
        assert len(gate.forgotten) == 20 and s.client.forgets_pending == 0


async def test_a_lookup_of_an_inode_whose_forget_waits_keeps_that_inode():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        (nodeid,) = await make_files(k, 1)
        inode = s.itable.by_nodeid[nodeid]
        lookup = k.message(O.LOOKUP, cstr(b"f0"), 1)
        send_now(k, k.message(O.FORGET, abi.FORGET_IN.pack(1), nodeid), lookup)
        e = (await k.recv()).entry()
        assert e.nodeid == nodeid
        await k.sync()
        # the forget took back the first lookup, the second one stays: the same inode
        assert s.itable.by_nodeid[nodeid] is inode and inode.nlookup == 1
        assert gate.forgotten == []


async def test_a_statedump_counts_after_the_waiting_forgets(slow_applier):
    async with serve(memory_graph()) as (k, s):
        nodeids = await make_files(k, 5)
        send_now(k, batch_forget(k, [(n, 1) for n in nodeids[:3]]),
                 k.message(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1))
        (await k.recv()).ok()
        assert s.client.forgets_pending == 3
        assert s.dump_state()["inodes"] == 1 + 2        # the table is settled first
        await k.sync()                    # (the graph hears of the three when idle)
        assert s.dump_state()["forgets-pending"] == 0


async def test_destroy_applies_the_waiting_forgets_first():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        nodeids = await make_files(k, 4)
        destroy = k.message(O.DESTROY)
        send_now(k, batch_forget(k, [(n, 1) for n in nodeids]), destroy)
        (await k.recv()).ok()
        assert sorted(i.nodeid for i in gate.forgotten) == sorted(nodeids)
        assert s.client.forgets_pending == 0


async def test_past_the_bound_a_batch_forget_applies_the_oldest_at_once(monkeypatch,
                                                                       slow_applier):
    monkeypatch.setattr(forget_backlog, "HELD_MAX", 8)
    async with serve(memory_graph("test/gate")) as (k, s):
        nodeids = await make_files(k, 10)
        send_now(k, batch_forget(k, [(n, 1) for n in nodeids]),
                 k.message(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1))
        (await k.recv()).ok()
        # the 2 oldest were applied on arrival, 8 wait
        assert [n in s.itable.by_nodeid for n in nodeids] == [False] * 2 + [True] * 8
        assert s.client.forgets_pending == 8


async def test_a_forget_that_waits_does_not_hold_up_the_device():
    """A translator's forget that waits (a network client's would): the task applying
    it hands the device to another reader meanwhile."""
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        nodeids = await make_files(k, 3)
        started, release = trio.Event(), trio.Event()

        async def forget(frame, inode):
            started.set()
            await release.wait()
            gate.forgotten.append(inode)
        gate.forget = forget
        send_now(k, batch_forget(k, [(n, 1) for n in nodeids]))
        with trio.fail_after(5):
            await started.wait()          # applied once the device stayed empty
        (await k.getattr(1)).ok()         # answered while that forget waits
        release.set()
        await k.sync()
        assert sorted(i.nodeid for i in gate.forgotten) == sorted(nodeids)


async def test_no_forget_waits_while_the_table_is_past_the_lru_limit():
    """The LRU evicting means the daemon wants its descriptors back: the forgets of the
    names it invalidated are applied on arrival."""
    async with serve(memory_graph("test/gate")) as (k, s):
        nodeids = await make_files(k, 6)
        s.client.lru_limit = 4            # the table holds the root and 6 files
        send_now(k, batch_forget(k, [(n, 1) for n in nodeids[:2]]),
                 k.message(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1))
        (await k.recv()).ok()
        assert s.client.forgets_pending == 0
        assert not any(n in s.itable.by_nodeid for n in nodeids[:2])


async def test_forgets_of_files_that_keep_their_names_wait_for_linger_seconds_of_quiet(
        autojump_clock):
    """After dropping caches the kernel forgets files it merely evicted: the daemon keeps
    them (descriptors, cached attributes) until it has had nothing to do for LINGER."""
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        nodeids = await make_files(k, 3)
        await k.batch_forget([(n, 1) for n in nodeids])
        (await k.getattr(1)).ok()
        await trio.sleep(forget_backlog.LINGER * 0.9)
        assert s.client.forgets_pending == 3 and gate.forgotten == []
        assert all(n in s.itable.by_nodeid for n in nodeids)
        await trio.sleep(forget_backlog.LINGER * 1.2)       # (a full LINGER without requests)
        assert s.client.forgets_pending == 0
        assert sorted(i.nodeid for i in gate.forgotten) == sorted(nodeids)


@pytest.mark.parametrize("removal", ["unlink", "rename"])
async def test_forgets_after_a_removal_are_applied_once_the_device_is_quiet(
        autojump_clock, removal):
    """An unlinked file's blocks are freed at its forget: no lingering."""
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        (nodeid,) = await make_files(k, 1)
        if removal == "unlink":
            (await k.unlink(1, b"f0")).ok()
        else:
            (await k.create(1, b"g")).create()
            (await k.call(O.RENAME, abi.RENAME_IN.pack(1) + cstr(b"g") + cstr(b"f0"), 1)).ok()
        await k.forget(nodeid, 1)
        await trio.sleep(forget_backlog.QUIET * 10)
        assert s.client.forgets_pending == 0 and [i.nodeid for i in gate.forgotten] == [nodeid]


async def test_a_removal_ends_the_lingering_of_the_forgets_waiting(autojump_clock):
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        nodeids = await make_files(k, 3)
        await k.batch_forget([(n, 1) for n in nodeids[:2]])
        (await k.getattr(1)).ok()
        await trio.sleep(forget_backlog.LINGER / 4)
        assert s.client.forgets_pending == 2                # lingering
        (await k.unlink(1, b"f2")).ok()
        await k.forget(nodeids[2], 1)
        await trio.sleep(forget_backlog.QUIET * 10)         # well before LINGER is over
        assert s.client.forgets_pending == 0
        assert sorted(i.nodeid for i in gate.forgotten) == sorted(nodeids)


@pytest.mark.parametrize("removal", [False, True])
async def test_requests_that_keep_coming_hold_forgets_back_for_a_bounded_time(
        monkeypatch, autojump_clock, removal):
    """Traffic that never leaves the device quiet (a request every QUIET / 2) delays a
    forget by MAX_WAIT after a removal (posix frees an unlinked file's blocks at the
    forget) and by MAX_LINGER otherwise, not for as long as it lasts."""
    monkeypatch.setattr(forget_backlog, "MAX_LINGER", 0.2)
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        nodeids = await make_files(k, 2)
        if removal:
            (await k.unlink(1, b"f1")).ok()
        t0 = trio.current_time()
        send_now(k, k.message(O.FORGET, abi.FORGET_IN.pack(1), nodeids[removal]))
        (await k.getattr(1)).ok()           # read after the forget: it waits now
        assert s.client.forgets_pending == 1
        while s.client.forgets_pending:
            (await k.getattr(1)).ok()       # never quiet for QUIET
            await trio.sleep(forget_backlog.QUIET / 2)
            assert trio.current_time() - t0 < 2 * forget_backlog.MAX_LINGER
        held = trio.current_time() - t0
        bound = forget_backlog.MAX_WAIT if removal else forget_backlog.MAX_LINGER
        assert bound <= held < bound + 0.05
        assert [i.nodeid for i in gate.forgotten] == [nodeids[removal]]
