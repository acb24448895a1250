"""FORGET and BATCH_FORGET are recorded and applied once the device is idle
(fuse_bridge.forget_backlog): a request sent right behind them is answered first, a
LOOKUP of an inode whose forget waits keeps that inode, and whatever needs exact counts
(statedump, DESTROY) applies them first."""
from __future__ import annotations

import pytest
import trio

from fuse_bridge import abi, forget_backlog
from fuse_bridge.abi import Opcode as O
from tests.protocol.kernel import cstr, memory_graph, serve


async def make_files(k, count: int) -> list[int]:
    nodeids = []
    for i in range(count):
        e, o = (await k.create(1, b"f%d" % i)).create()
        (await k.release(e.nodeid, o.fh)).ok()
        nodeids.append(e.nodeid)
    return nodeids


@pytest.fixture
def slow_applier(monkeypatch):
    """Forgets applied only after half a second without requests, so that a test can
    look at them waiting even when this machine is slow (1 ms is the real wait)."""
    monkeypatch.setattr(forget_backlog, "QUIET", 0.5)


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


async def test_requests_that_keep_coming_hold_a_forget_back_for_max_wait_at_most(
        monkeypatch):
    """Traffic that never leaves the device quiet (here: no 20 ms without a request)
    delays a forget by MAX_WAIT, not for as long as it lasts (posix frees an unlinked
    file's blocks at the forget)."""
    monkeypatch.setattr(forget_backlog, "QUIET", 0.02)
    monkeypatch.setattr(forget_backlog, "MAX_WAIT", 0.1)
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        (nodeid,) = await make_files(k, 1)
        send_now(k, k.message(O.FORGET, abi.FORGET_IN.pack(1), nodeid))
        (await k.getattr(1)).ok()           # read after the forget: it waits now
        assert s.client.forgets_pending == 1
        busy = 0
        with trio.fail_after(10):
            while s.client.forgets_pending:
                (await k.getattr(1)).ok()   # back to back: never quiet
                busy += 1
        assert busy >= 1 and [i.nodeid for i in gate.forgotten] == [nodeid]
