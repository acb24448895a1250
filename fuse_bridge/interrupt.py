"""Interrupts: GlusterFS's interrupt-record API, and cancellation through the graph.

The kernel sends FUSE_INTERRUPT (unique N|1, carrying N) after a process waiting on
request N got a signal.  What happens next is ours to choose (docs/interrupts.md):

- A *record* (GlusterFS's ``fuse_interrupt_record``) attached to a request says who
  handles its interrupt.  The API keeps GlusterFS's names and semantics::

      rec = interrupt_record_new(req.header, handler)      # state NONE, hit False
      interrupt_record_insert(session, rec)                # before winding the fop
      ... wind the fop ...
      if await interrupt_finish_fop(frame, sync):          # fop side, when it is done
          return                                           # HANDLED: EINTR already sent
      # handler side, from handler(rec) (at once or later):
      interrupt_finish_interrupt(rec, HANDLED or SQUELCHED, sync, datap)

  ``sync=False``: the loser of the race cleans up (gets ``data`` through ``datap``).
  ``sync=True``: the fop waits (in trio, blocking nothing else) for the handler, and
  cleans up.  HANDLED answers the request EINTR at once; the fop's own later answer is
  suppressed.  Exactly one reply goes out in every order; the record is reaped on every
  exit path of the request, errors included.
- Translators register handlers with ``frame.on_interrupt(fn)``: on interrupt ``fn()``
  runs and the request's cancel scope is cancelled, so everything awaiting below unwinds
  and the caller gets EINTR.
- An interrupt nobody handles is logged (``INTERRUPT ... no handler found``) and
  remembered: a handler registered later fires at once.  It is never answered ENOSYS
  (that turns interrupts off for the whole connection) nor EAGAIN in a loop.
"""
from __future__ import annotations

import enum
import errno
import logging
from typing import Any, Callable, NamedTuple, Optional

import trio

log = logging.getLogger("xlfs.fuse.interrupt")


class InterruptState(enum.Enum):
    NONE = "none"
    SQUELCHED = "squelched"
    HANDLED = "handled"
    WAITING_HANDLER = "waiting-handler"


NONE = InterruptState.NONE
SQUELCHED = InterruptState.SQUELCHED
HANDLED = InterruptState.HANDLED
WAITING_HANDLER = InterruptState.WAITING_HANDLER


class InHeader(NamedTuple):
    """The fields of a request's in-header a record keeps (GlusterFS copies the header)."""
    unique: int
    opcode: int
    nodeid: int
    uid: int
    gid: int
    pid: int


class DataRef:
    """``datap``: receives the record's ``data`` when this side does the cleanup."""
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


Handler = Callable[["InterruptRecord"], Any]


class InterruptRecord:
    __slots__ = ("header", "handler", "data", "hit", "state", "sync", "_done", "request",
                 "finished")

    def __init__(self, header: InHeader, handler: Handler) -> None:
        self.header = header
        self.handler = handler
        self.data: Any = None
        self.hit = False
        self.state = NONE
        self.sync: Optional[bool] = None
        self._done: Optional[trio.Event] = None   # set when the handler finished (sync)
        self.request: Any = None
        self.finished = False                     # reaped (removed from the table)

    def __repr__(self) -> str:
        return (f"<InterruptRecord unique={self.header.unique} hit={self.hit} "
                f"state={self.state.value}>")


def interrupt_record_new(header: InHeader, handler: Handler) -> InterruptRecord:
    """A new record for the request ``header``: state NONE, not hit, no data."""
    return InterruptRecord(header, handler)


def interrupt_record_insert(session: Any, record: InterruptRecord) -> None:
    """Make the record findable by FUSE_INTERRUPT.  Insert it before winding the fop."""
    session.interrupts.insert(record)


def _hand_over(record: InterruptRecord, datap: Optional[DataRef]) -> None:
    if datap is not None:
        datap.value = record.data
    record.data = None


async def interrupt_finish_fop(frame: Any, sync: bool,
                               datap: Optional[DataRef] = None) -> bool:
    """Fop side: the fop is done.  Removes the record; True when the interrupt was
    HANDLED (EINTR was sent: the caller must not reply)."""
    req = frame.interrupt
    record = req.record if req is not None else None
    if record is None:
        return False
    req.session.interrupts.remove(record)
    record.sync = sync
    if not record.hit:
        _hand_over(record, datap)
        return False
    if record.state is NONE:             # the handler runs and has not finished
        if sync:
            record.state = WAITING_HANDLER
            record._done = record._done or trio.Event()
            with trio.CancelScope(shield=True):
                await record._done.wait()
            _hand_over(record, datap)    # sync: the fop side always cleans up
            return record.state is HANDLED
        record.state = SQUELCHED         # we won: the handler, finishing later, cleans up
        return False
    handled = record.state is HANDLED    # the handler finished first
    if not sync:
        _hand_over(record, datap)        # it finished first, so we are the loser: clean up
    else:
        _hand_over(record, datap)
    return handled


def interrupt_finish_interrupt(record: InterruptRecord, state: InterruptState, sync: bool,
                               datap: Optional[DataRef] = None) -> None:
    """Handler side: ``state`` is HANDLED (answer EINTR now) or SQUELCHED (let the fop
    answer).  The loser of the race cleans up when ``sync`` is False."""
    if state not in (HANDLED, SQUELCHED):
        raise ValueError("interrupt_finish_interrupt takes HANDLED or SQUELCHED")
    record.sync = sync
    prior = record.state
    if prior is NONE:
        record.state = state
        if state is HANDLED and record.request is not None:
            req = record.request
            req.session.reply_error(req, errno.EINTR)
        if not sync and record.finished:
            _hand_over(record, datap)
    elif prior is WAITING_HANDLER:
        record.state = SQUELCHED         # the fop is done and waits: its answer stands
    else:                                # SQUELCHED: the fop won and went on
        if not sync:
            _hand_over(record, datap)
    if record._done is not None:
        record._done.set()
    elif sync:
        record._done = trio.Event()
        record._done.set()


class Request:
    """One kernel request in flight: where to answer, and its interrupt hooks."""
    __slots__ = ("session", "fd", "unique", "opcode", "nodeid", "frame", "replied",
                 "record", "handlers", "interrupted", "interruptible", "cancel_requested")

    def __init__(self, session: Any, fd: int, unique: int, opcode: int, nodeid: int,
                 frame: Any) -> None:
        self.session = session
        self.fd = fd
        self.unique = unique
        self.opcode = opcode
        self.nodeid = nodeid
        self.frame = frame
        self.replied = False
        self.record: Optional[InterruptRecord] = None
        self.handlers: Optional[list] = None
        self.interrupted = False
        self.interruptible = True
        self.cancel_requested = False

    @property
    def header(self) -> InHeader:
        f = self.frame
        return InHeader(self.unique, self.opcode, self.nodeid, f.uid, f.gid, f.pid)

    def add_handler(self, handler: Callable[[], Any]) -> bool:
        """``frame.on_interrupt``: run ``handler`` and cancel the request on interrupt."""
        if not self.interruptible:
            return False
        if self.interrupted:             # the interrupt came before the handler
            _run(handler)
            self.cancel()
            return True
        if self.handlers is None:
            self.handlers = []
        self.handlers.append(handler)
        return True

    def cancel(self) -> None:
        """Cancel the request's scope: everything awaiting below unwinds, EINTR goes out.
        (A request gets its scope when it first waits; before that nothing can run.)"""
        self.cancel_requested = True
        scope = self.frame.cancel_scope if self.frame is not None else None
        if scope is not None:
            scope.cancel()

    def finish(self) -> None:
        """Reap the record on every exit path (GlusterFS leaks it on errors)."""
        if self.record is not None and not self.record.finished:
            self.session.interrupts.remove(self.record)


def _run(handler: Callable[[], Any]) -> None:
    try:
        handler()
    except Exception:
        log.exception("interrupt handler %r failed", handler)


class InterruptTable:
    """Requests in flight by unique, and their records."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.pending: dict[int, Request] = {}
        self.records = 0
        self.received = 0
        self.unhandled = 0

    def insert(self, record: InterruptRecord) -> None:
        req = self.pending.get(record.header.unique)
        if req is None:
            raise LookupError(f"no request {record.header.unique} in flight")
        record.request = req
        req.record = record
        self.records += 1

    def remove(self, record: InterruptRecord) -> None:
        if not record.finished:
            record.finished = True
            self.records -= 1

    def interrupt(self, target: int) -> None:
        """FUSE_INTERRUPT for request ``target``."""
        self.received += 1
        req = self.pending.get(target)
        if req is None or req.replied:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("INTERRUPT for unique %d: already answered; dropped", target)
            return
        record = req.record
        if record is not None and not record.finished and not record.hit:
            record.hit = True
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s unique %d: interrupt handler triggered", _name(req.opcode),
                          target)
            result = record.handler(record)
            if hasattr(result, "__await__"):
                self.session.nursery.start_soon(_await, result)
            return
        if req.handlers:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s unique %d: interrupt: cancelling through the graph",
                          _name(req.opcode), target)
            req.interrupted = True
            handlers, req.handlers = req.handlers, None
            for h in handlers:
                _run(h)
            req.cancel()
            return
        if req.interrupted:
            return
        req.interrupted = True
        self.unhandled += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("INTERRUPT unique %d (%s): no handler found", target,
                      _name(req.opcode))

    def dump(self) -> dict:
        return {"in-flight": len(self.pending), "records": self.records,
                "interrupts-received": self.received, "interrupts-unhandled": self.unhandled}


async def _await(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("interrupt handler failed")


def _name(opcode: int) -> str:
    from . import abi
    try:
        return abi.Opcode(opcode).name
    except ValueError:
        return str(opcode)
