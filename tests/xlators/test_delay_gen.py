"""debug/delay-gen: awaited delays, GlusterFS's options, cancellation."""
from __future__ import annotations

import inspect

import pytest
import trio
import trio.testing

from xlators import FOPS, Frame, OptionError
from xlators.debug.delay_gen import DelayGen
from xlators.testing import Harness, RecordingLeaf, check_passthrough


def make(options=None) -> tuple[DelayGen, RecordingLeaf]:
    leaf = RecordingLeaf()
    xl = DelayGen("delay", [leaf], options or {}, itable=leaf.itable)
    xl.init()
    return xl, leaf


async def test_every_fop_passes_through_unchanged():
    assert sorted(await check_passthrough(DelayGen)) == ["forget", "release", "releasedir"]
    xl, leaf = make({"delay-percentage": "100", "delay-duration": "0"})
    for fop in FOPS:
        leaf.calls.clear()
        frame = Frame(unique=7)
        args = tuple(object() for _ in fop.params)
        assert await getattr(xl, fop.name)(frame, *args) is leaf.result
        (name, got_frame, got_args, got_kw), = leaf.calls
        assert name == fop.name and got_frame is frame and got_args == args and not got_kw
    assert str(inspect.signature(DelayGen.setattr)) == "(self, frame, inode, changes, fd=None)"


def test_glusterfs_options_and_defaults():
    xl, _ = make()
    assert xl.opts.delay_percentage == 10.0
    assert xl.opts.delay_duration == 100000
    assert xl.opts.enable == {f.name for f in FOPS}
    xl, _ = make({"enable": "FLUSH, Write,ftruncate", "delay-percentage": "50%"})
    assert xl._enabled == {"flush", "writev", "setattr"}
    assert xl.opts.delay_percentage == 50.0
    with pytest.raises(OptionError, match="enable"):
        make({"enable": "flush,nosuchfop"})
    with pytest.raises(OptionError, match="delay-duration"):
        make({"delay-duration": "-1"})
    with pytest.raises(OptionError, match="delay-percentage"):
        make({"delay-percentage": "120"})


async def test_delays_only_enabled_fops(autojump_clock):
    xl, leaf = make({"delay-percentage": "100%", "delay-duration": "2000000",
                     "enable": "flush"})
    t0 = trio.current_time()
    await xl.flush(Frame(), object())
    assert trio.current_time() - t0 == pytest.approx(2.0)
    t0 = trio.current_time()
    await xl.getattr(Frame(), object())
    await xl.forget(Frame(), object())
    assert trio.current_time() == t0
    assert [c[0] for c in leaf.calls] == ["flush", "getattr", "forget"]
    assert xl.delayed == 1 and xl.dump()["delayed"] == 1


async def test_percentage_is_a_probability(autojump_clock):
    xl, leaf = make({"delay-percentage": "0", "delay-duration": "1000"})
    for _ in range(200):
        await xl.lookup(Frame(), object())
    assert xl.delayed == 0
    xl.reconfigure({"delay-percentage": "50", "delay-duration": "1000"})
    for _ in range(2000):
        await xl.lookup(Frame(), object())
    assert 800 < xl.delayed < 1200


async def test_cancelled_during_the_delay_never_reaches_the_child(autojump_clock):
    xl, leaf = make({"delay-percentage": "100", "delay-duration": str(100 * 10**6)})
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_after, scope, 1.0)
            await xl.writev(Frame(), object(), b"data", 0)
    assert scope.cancelled_caught
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert leaf.calls == []
    assert xl.cancelled == 1


async def test_the_frames_cancel_scope_ends_the_delay(autojump_clock):
    xl, leaf = make({"delay-percentage": "100", "delay-duration": str(60 * 10**6)})
    with trio.CancelScope() as scope:
        frame = Frame(unique=2, cancel_scope=scope)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_after, frame.cancel_scope, 0.5)
            await xl.flush(frame, object())
    assert leaf.calls == [] and trio.current_time() == pytest.approx(0.5)


async def test_the_delay_is_a_trio_wait_on_the_real_clock():
    """With trio's own clock too, the delay parks the task (the loop goes on) and a
    cancel ends it with nothing wound; no wall-clock time is asserted."""
    xl, leaf = make({"delay-percentage": "100", "delay-duration": str(100 * 10**6)})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(xl.flush, Frame(), object())
        await trio.testing.wait_all_tasks_blocked()   # the flush waits in trio
        assert leaf.calls == []
        nursery.cancel_scope.cancel()
    assert leaf.calls == []


async def test_registers_an_interrupt_handler_while_waiting(autojump_clock):
    class Hooks:
        def __init__(self):
            self.handlers = []

        def add_handler(self, handler):
            self.handlers.append(handler)
            return True

    xl, leaf = make({"delay-percentage": "100", "delay-duration": "1000",
                     "enable": "flush"})
    frame = Frame(unique=4)
    frame.interrupt = Hooks()
    await xl.flush(frame, object())
    assert len(frame.interrupt.handlers) == 1
    frame.interrupt.handlers[0]()                 # runs on the loop, must not raise
    await xl.lookup(frame, object())              # not delayed: no handler
    assert len(frame.interrupt.handlers) == 1


async def test_over_memory_through_the_harness(autojump_clock):
    h = Harness.stack("debug/delay-gen", options={"debug/delay-gen": {
        "delay-percentage": "100", "delay-duration": "3000000", "enable": "writev"}})
    fd = await h.create("/f")
    t0 = trio.current_time()
    await h.write(fd, b"abc")
    assert trio.current_time() - t0 == pytest.approx(3.0)
    assert await h.read(fd, 3) == b"abc"
    with trio.move_on_after(1):
        await h.write(fd, b"XYZ")
    assert await h.read(fd, 3) == b"abc"          # the cancelled write never happened
    await h.close(fd)


async def _cancel_after(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    scope.cancel()
