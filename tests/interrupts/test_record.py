"""The interrupt record's state machine (seed 000; GlusterFS's fuse_interrupt_*), every
race order and both cleanup strategies, forced with trio's testing tools.

The two sides race for the record: the *fop* side (``interrupt_finish_fop`` when the fop
is done) and the *handler* side (``interrupt_finish_interrupt`` when the interrupt
handler is done).  Orders:

- no interrupt at all;
- the handler finishes first (HANDLED or SQUELCHED), then the fop;
- the handler starts, the fop finishes, then the handler finishes;
- the fop finishes before the interrupt arrives (the record is reaped: dropped).

Each with sync False ("the loser cleans up") and sync True ("the fop waits for the
handler and cleans up").  Checked every time: the replies on the wire (exactly one per
request), finish_fop's verdict, the state, who cleaned up, where ``data`` went.
"""
from __future__ import annotations

import errno
import logging

import pytest
import trio
import trio.testing

from fuse_bridge.interrupt import (HANDLED, NONE, SQUELCHED, WAITING_HANDLER, DataRef,
                                   InHeader, InterruptTable, Request, interrupt_finish_fop,
                                   interrupt_finish_interrupt, interrupt_record_insert,
                                   interrupt_record_new)

EINTR = -errno.EINTR
FLUSH = 25


class FakeSession:
    """The parts of Session the records use: the table, the nursery, one-reply replies."""

    def __init__(self, nursery) -> None:
        self.interrupts = InterruptTable(self)
        self.nursery = nursery
        self.sent: list[tuple[int, int]] = []

    def _send(self, req, err: int) -> bool:
        if req.replied:
            return False
        req.replied = True
        self.sent.append((req.unique, err))
        return True

    def reply(self, req, payload=None) -> bool:
        return self._send(req, 0)

    def reply_error(self, req, err: int) -> bool:
        return self._send(req, -err)

    def request(self, unique: int = 10) -> Request:
        req = Request(self, -1, unique, FLUSH, 5, 0, 0, 1234)
        self.interrupts.pending[unique] = req
        return req

    def done(self, req: Request, error: int = 0) -> None:
        """What _dispatch does after the handler: answer (unless answered), reap."""
        if error:
            self.reply_error(req, error)
        else:
            self.reply(req)
        del self.interrupts.pending[req.unique]
        req.finish()


class Handler:
    """An interrupt handler the test drives: finishes at once (``now``) or when told."""

    def __init__(self, state=HANDLED, sync=False, now=True) -> None:
        self.state, self.sync, self.now = state, sync, now
        self.calls = 0
        self.go = trio.Event()
        self.datap = DataRef()
        self.datap.value = "untouched"

    def __call__(self, record):
        self.calls += 1
        if self.now:
            interrupt_finish_interrupt(record, self.state, self.sync, self.datap)
            return None
        return self._later(record)

    async def _later(self, record):
        await self.go.wait()
        interrupt_finish_interrupt(record, self.state, self.sync, self.datap)


def setup(session, handler, unique=10):
    req = session.request(unique)
    rec = interrupt_record_new(req.header, handler)
    rec.data = {"payload": unique}
    interrupt_record_insert(rec)
    return req, rec


SYNC = pytest.mark.parametrize("sync", [False, True], ids=["loser-frees", "fop-waits"])


# -- no interrupt ----------------------------------------------------------------------

@SYNC
async def test_no_interrupt(sync):
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        h = Handler(sync=sync)
        req, rec = setup(s, h)
        assert rec.state is NONE and not rec.hit and s.interrupts.records == 1
        data = DataRef()
        assert await interrupt_finish_fop(req.frame, sync, data) is False
        s.done(req)
        assert s.sent == [(10, 0)]
        assert h.calls == 0 and rec.cleaned_by == "fop" and data.value == {"payload": 10}
        assert rec.data is None and s.interrupts.records == 0


# -- the handler finishes first ----------------------------------------------------------

@SYNC
@pytest.mark.parametrize("verdict", [HANDLED, SQUELCHED], ids=["handled", "squelched"])
async def test_handler_first(sync, verdict):
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        h = Handler(verdict, sync)
        req, rec = setup(s, h)
        s.interrupts.interrupt(10)
        assert rec.hit and rec.state is verdict and h.calls == 1
        assert s.sent == ([(10, EINTR)] if verdict is HANDLED else [])
        assert h.datap.value is None                 # the handler won: not its cleanup
        data = DataRef()
        handled = await interrupt_finish_fop(req.frame, sync, data)
        assert handled is (verdict is HANDLED)
        s.done(req)                                  # the fop's own answer
        assert s.sent == [(10, EINTR if verdict is HANDLED else 0)]   # exactly one
        assert rec.cleaned_by == "fop" and data.value == {"payload": 10}
        assert s.interrupts.records == 0


# -- the handler starts, the fop finishes, then the handler finishes ----------------------

@pytest.mark.parametrize("verdict", [HANDLED, SQUELCHED], ids=["handled", "squelched"])
async def test_fop_first_loser_frees(verdict):
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        h = Handler(verdict, sync=False, now=False)
        req, rec = setup(s, h)
        s.interrupts.interrupt(10)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.hit and rec.state is NONE
        data = DataRef()
        data.value = "untouched"
        assert await interrupt_finish_fop(req.frame, False, data) is False   # at once
        assert rec.state is SQUELCHED and data.value is None   # we won: not ours to free
        s.done(req)
        assert s.sent == [(10, 0)]
        h.go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert rec.handler_done and s.sent == [(10, 0)]        # the late HANDLED is mute
        assert rec.cleaned_by == "handler" and h.datap.value == {"payload": 10}


@pytest.mark.parametrize("verdict", [HANDLED, SQUELCHED], ids=["handled", "squelched"])
async def test_fop_first_fop_waits(verdict):
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        h = Handler(verdict, sync=True, now=False)
        req, rec = setup(s, h)
        s.interrupts.interrupt(10)
        await trio.testing.wait_all_tasks_blocked()
        result = {}

        async def fop():
            data = DataRef()
            result["handled"] = await interrupt_finish_fop(req.frame, True, data)
            result["data"] = data.value
            s.done(req)
        nursery.start_soon(fop)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.state is WAITING_HANDLER and not result and s.sent == []   # it waits
        h.go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert rec.state is SQUELCHED                # the fop's answer stands
        assert result == {"handled": False, "data": {"payload": 10}}
        assert s.sent == [(10, 0)]
        assert rec.cleaned_by == "fop" and h.datap.value is None


async def test_fop_waits_even_inside_a_cancelled_scope():
    """sync: the handler may cancel the request itself; the fop still waits for it."""
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        req = s.request()
        go = trio.Event()

        async def handler_later(record):
            record.request.cancel()
            await go.wait()
            interrupt_finish_interrupt(record, HANDLED, True)
        rec = interrupt_record_new(req.header, handler_later)
        interrupt_record_insert(s, rec)             # the (session, record) form
        out = {}

        async def fop():
            with trio.CancelScope() as scope:
                req.frame.cancel_scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    out["handled"] = await interrupt_finish_fop(req.frame, True)
            out["cancelled"] = scope.cancelled_caught
        nursery.start_soon(fop)
        await trio.testing.wait_all_tasks_blocked()
        s.interrupts.interrupt(10)
        await trio.testing.wait_all_tasks_blocked()
        assert out == {} and rec.state is WAITING_HANDLER    # cancelled, still waiting
        go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert out == {"handled": False, "cancelled": True}
        assert rec.cleaned_by == "fop" and rec.state is SQUELCHED


# -- the fop finishes before the interrupt arrives ---------------------------------------

@SYNC
async def test_interrupt_after_the_fop(sync, caplog):
    caplog.set_level(logging.DEBUG, logger="xlfs")
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        h = Handler(sync=sync)
        req, rec = setup(s, h)
        assert await interrupt_finish_fop(req.frame, sync) is False
        s.interrupts.interrupt(10)                  # reaped, not yet answered: dropped
        s.done(req)
        s.interrupts.interrupt(10)                  # answered: dropped
        assert h.calls == 0 and s.sent == [(10, 0)] and s.interrupts.dropped == 2
        assert rec.cleaned_by == "fop"


# -- error paths: the record is reaped on every exit -------------------------------------

async def test_error_path_reaps_an_untouched_record():
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        req, rec = setup(s, Handler())
        s.done(req, errno.EIO)                      # no finish_fop: an early error
        assert s.sent == [(10, -errno.EIO)]
        assert rec.reaped and rec.cleaned_by == "fop" and s.interrupts.records == 0


@SYNC
async def test_error_path_while_the_handler_runs(sync):
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        h = Handler(HANDLED, sync=sync, now=False)
        req, rec = setup(s, h)
        s.interrupts.interrupt(10)
        await trio.testing.wait_all_tasks_blocked()
        s.done(req, errno.EIO)
        assert rec.reaped and rec.orphaned and rec.state is SQUELCHED
        h.go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert s.sent == [(10, -errno.EIO)]
        assert rec.cleaned_by == "handler" and h.datap.value == {"payload": 10}


# -- handlers that fail ------------------------------------------------------------------

async def test_handler_that_raises_is_squelched(caplog):
    def bad(record):
        raise RuntimeError("boom")
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        req, rec = setup(s, bad)
        s.interrupts.interrupt(10)
        assert rec.state is SQUELCHED and rec.handler_done
        with trio.fail_after(1):
            assert await interrupt_finish_fop(req.frame, True) is False    # no wait
        s.done(req)
        assert s.sent == [(10, 0)]
    assert "interrupt handler failed" in caplog.text


@pytest.mark.parametrize("how", ["raises", "cancelled", "forgets"])
async def test_async_handler_failing_wakes_the_waiting_fop(how):
    async with trio.open_nursery() as outer:
        s = FakeSession(None)
        go = trio.Event()

        async def handler(record):
            await go.wait()
            if how == "raises":
                raise RuntimeError("boom")
            if how == "cancelled":
                await trio.sleep_forever()
            # "forgets": ends without calling interrupt_finish_interrupt
        async with trio.open_nursery() as handlers:
            s.nursery = handlers
            req, rec = setup(s, handler)
            s.interrupts.interrupt(10)
            out = {}

            async def fop():
                out["handled"] = await interrupt_finish_fop(req.frame, True)
            outer.start_soon(fop)
            await trio.testing.wait_all_tasks_blocked()
            assert rec.state is WAITING_HANDLER
            go.set()
            await trio.testing.wait_all_tasks_blocked()
            if how == "cancelled":
                handlers.cancel_scope.cancel()     # e.g. the session ends
        await trio.testing.wait_all_tasks_blocked()
        assert out == {"handled": False} and rec.state is SQUELCHED
        assert rec.cleaned_by == "fop"


# -- misuse --------------------------------------------------------------------------------

async def test_misuse_is_refused_or_logged(caplog):
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        req, rec = setup(s, Handler())
        with pytest.raises(ValueError):
            interrupt_finish_interrupt(rec, NONE, False)
        with pytest.raises(ValueError):
            interrupt_record_insert(interrupt_record_new(req.header, Handler()))
        with pytest.raises(LookupError):
            interrupt_record_insert(s, interrupt_record_new(InHeader(99, 1, 1, 0, 0, 0),
                                                            Handler()))
        s.interrupts.interrupt(10)
        interrupt_finish_interrupt(rec, HANDLED, False)           # a second time
        assert "twice" in caplog.text and s.sent == [(10, EINTR)]


async def test_mixed_strategies_never_clean_up_twice(caplog):
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        h = Handler(HANDLED, sync=False, now=False)   # the handler says loser-frees ...
        req, rec = setup(s, h)
        s.interrupts.interrupt(10)
        await trio.testing.wait_all_tasks_blocked()

        async def fop():                              # ... the fop says fop-waits
            await interrupt_finish_fop(req.frame, True)
        nursery.start_soon(fop)
        await trio.testing.wait_all_tasks_blocked()
        h.go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert "disagree on sync" in caplog.text
        assert "cleaned up twice" in caplog.text and rec.cleaned_by == "handler"


async def test_header_is_a_copy():
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        req = s.request(42)
        rec = interrupt_record_new(req.header, Handler())
        assert rec.header == InHeader(42, FLUSH, 5, 0, 0, 1234)
        assert type(rec.header) is InHeader and rec.request is req


# -- translators' handlers (frame.on_interrupt) -------------------------------------------

async def test_translator_handlers_and_late_registration(caplog):
    caplog.set_level(logging.DEBUG, logger="xlfs")
    async with trio.open_nursery() as nursery:
        s = FakeSession(nursery)
        req = s.request()
        calls = []
        assert req.frame.on_interrupt(lambda: calls.append("early"))
        s.interrupts.interrupt(10)
        assert calls == ["early"] and req.cancel_requested
        assert req.frame.on_interrupt(lambda: calls.append("late"))   # fires at once
        assert calls == ["early", "late"]
        s.interrupts.interrupt(10)                                     # second: dropped
        assert calls == ["early", "late"] and s.interrupts.dropped == 1

        req2 = s.request(12)
        s.interrupts.interrupt(12)                                     # nobody listens
        assert req2.interrupted and not req2.cancel_requested
        assert "INTERRUPT unique 12 (FLUSH): no handler found" in caplog.text
        req2.interruptible = False
        assert req2.frame.on_interrupt(lambda: calls.append("refused")) is False
        assert calls == ["early", "late"]


async def test_the_same_handler_is_registered_once():
    """A translator retrying a call (storage/gfapi's SETLKW tries) registers its handler
    on every try: the request keeps it once."""
    async with trio.open_nursery() as nursery:
        req = FakeSession(nursery).request()
        calls = []

        def handler():
            calls.append(1)
        for _ in range(50):
            assert req.add_handler(handler) is True
        assert req.add_handler(lambda: calls.append(2)) is True
        assert len(req.handlers) == 2

