"""fuse_bridge.readers.stepper: the session steps every handler through one long-lived
generator instead of ``coro.send`` (whose StopIteration costs an exception, a traceback
and a frame object per request).  Outcomes arrive in its box; a handler that waits takes
the stepper along and the session makes a new one; .meta/frames still finds where a
waiting request waits."""
from __future__ import annotations

import errno
import types

import pytest
import trio

from fuse_bridge import abi
from fuse_bridge.meta_host import BridgeHost
from fuse_bridge.readers import DONE, FAILED, new_stepper, resume_stepper
from tests.protocol.kernel import cstr, memory_graph, serve
from xlators.core.errors import FopError

O = abi.Opcode


async def _value(v):
    return v


async def _raise(exc):
    raise exc


@types.coroutine
def _trap(x):
    return (yield x)


async def _waits():
    got = await _trap("trap")
    return got * 2


def test_one_stepper_serves_handlers_one_after_another_and_survives_their_errors():
    step, box = new_stepper()
    assert step.send(_value(1)) is DONE and box[0] == 1
    assert step.send(_raise(FopError(errno.ENOENT))) is FAILED
    assert isinstance(box[0], FopError) and box[0].errno == errno.ENOENT
    assert step.send(_value(b"x")) is DONE and box[0] == b"x"
    assert step.send(12345) is FAILED and isinstance(box[0], TypeError)   # not awaitable
    assert step.send(_value(2)) is DONE and box[0] == 2


def test_a_waiting_handler_yields_its_trap_and_finishes_through_resume():
    step, box = new_stepper()
    assert step.send(_waits()) == "trap"
    rest = resume_stepper(step, box, "trap")
    assert rest.send(None) == "trap"            # yielded on to the event loop
    with pytest.raises(StopIteration) as done:
        rest.send(21)
    assert done.value.value == 42 and box[0] is None


def test_what_is_thrown_into_a_waiting_handler_comes_out_of_resume():
    step, box = new_stepper()
    assert step.send(_waits()) == "trap"
    rest = resume_stepper(step, box, "trap")
    rest.send(None)
    with pytest.raises(KeyError):
        rest.throw(KeyError("x"))
    assert box[0] is None


def test_a_stepper_closes():
    step, _ = new_stepper()
    step.send(_value(1))
    step.close()
    waiting, _ = new_stepper()
    assert waiting.send(_waits()) == "trap"
    waiting.close()                              # GeneratorExit passes through


async def test_a_waiting_request_is_found_where_it_waits_and_others_go_on():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        u = await k.send(O.LOOKUP, cstr(b"slow"), 1)
        with trio.fail_after(10):
            while not gate.waiting:
                await trio.sleep(0.01)
        before = s._step
        (await k.getattr(1)).attr()                   # a new stepper serves on
        assert (await k.lookup(1, b"nothing")).errno == errno.ENOENT
        host = BridgeHost(s, version="test", levels={}, state=lambda s: {})
        [waiting] = [p for p in host.pending_requests() if p.unique == u]
        assert "gate" in waiting.where, waiting
        assert s._step is before                      # the waiting one took the old one
        gate.gate_open.set()
        r = await k.recv()
        assert r.unique == u and r.errno == errno.ENOENT
        assert await k.silence(0.1)


async def test_a_generator_exit_out_of_a_handler_leaves_the_session_serving(monkeypatch):
    """A translator bug lets GeneratorExit out of a fop: that request fails, and the
    stepper it ended is replaced (else every later request would answer EIO)."""
    async with serve(memory_graph()) as (k, s):
        top = s.client.top
        real = top.getattr
        calls = []

        async def broken(frame, inode, fd=None):
            calls.append(inode)
            if len(calls) == 1:
                raise GeneratorExit
            return await real(frame, inode, fd)
        monkeypatch.setattr(top, "getattr", broken)
        assert (await k.getattr(1)).errno == errno.EIO
        (await k.getattr(1)).attr()                   # the next one is served
        assert len(calls) == 2
