"""Interrupts: GlusterFS's interrupt-record API, and cancellation through the graph.

The kernel sends FUSE_INTERRUPT (unique N|1, carrying N) after a process waiting on
request N got a signal.  What happens next is ours to choose (docs/interrupts.md):

- A *record* (GlusterFS's ``fuse_interrupt_record``) attached to a request says who
  handles its interrupt.  The API keeps GlusterFS's names and semantics::

      rec = interrupt_record_new(req.header, handler)      # state NONE, hit False
      rec.data = ...                                       # optional: for whoever cleans up
      interrupt_record_insert(rec)                         # before winding the fop
      try:
          ... wind the fop ...
      finally:
          handled = await interrupt_finish_fop(frame, sync, datap)   # fop side
      # handled: the interrupt was HANDLED, EINTR went out, our own answer is suppressed

      # handler side, from handler(rec) (at once, or later from a task it started):
      interrupt_finish_interrupt(rec, HANDLED or SQUELCHED, sync, datap)

  ``sync=False``: the loser of the race cleans up (and gets ``data`` through ``datap``).
  ``sync=True``: the fop side waits (in trio: nothing else is blocked) for the handler,
  and it always cleans up.  HANDLED answers the request EINTR at once; the fop's own
  later answer is suppressed.  Exactly one reply goes out in every order; the record is
  reaped on every exit path of the request, errors included (GlusterFS leaks it there).
- Translators register handlers with ``frame.on_interrupt(fn)``: on interrupt ``fn()``
  runs and the request's cancel scope is cancelled, so everything awaiting below unwinds
  and the caller gets EINTR.
- An interrupt nobody handles is logged (``INTERRUPT unique N (OP): no handler found``)
  and remembered: a handler registered later fires at once.  It is never answered ENOSYS
  (that turns interrupts off for the whole connection) nor EAGAIN (GlusterFS answers
  EAGAIN after 10 ms, which makes the kernel send it again: a loop).  An interrupt for a
  request already answered, or a second one for the same request, is dropped.
"""
from __future__ import annotations

import enum
import errno
import inspect
import logging
from typing import Any, Callable, NamedTuple, Optional

import trio

from xlators.core.frame import Frame

from .abi import opcode_name as _name

log = logging.getLogger("xlfs.fuse.interrupt")


class InterruptState(enum.Enum):
    NONE = "none"                        # nobody finished yet
    SQUELCHED = "squelched"              # the fop's own answer stands
    HANDLED = "handled"                  # EINTR went out from the handler
    WAITING_HANDLER = "waiting-handler"  # sync: the fop is done and waits for the handler


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


class _RequestHeader(InHeader):
    """``Request.header``: an InHeader that also knows its request (so that
    ``interrupt_record_insert(record)`` needs no session argument)."""

    request: Any


class DataRef:
    """``datap``: receives the record's ``data`` when this side does the cleanup (and
    None when it does not)."""
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


Handler = Callable[["InterruptRecord"], Any]


class InterruptRecord:
    __slots__ = ("header", "handler", "data", "hit", "state", "sync", "request",
                 "reaped", "cleaned_by", "handler_done", "orphaned", "_wake")

    def __init__(self, header: InHeader, handler: Handler) -> None:
        self.header = InHeader(*header[:6])
        self.handler = handler
        self.data: Any = None
        self.hit = False                      # the interrupt came and the handler ran
        self.state = NONE
        self.sync: Optional[bool] = None      # the strategy, once a side said it
        self.request: Any = getattr(header, "request", None)
        self.reaped = False                   # removed from the table (fop side done)
        self.cleaned_by: Optional[str] = None  # "fop" or "handler": who cleaned up
        self.handler_done = False             # interrupt_finish_interrupt was called
        self.orphaned = False                 # reaped on an error path: handler cleans up
        self._wake: Optional[trio.Event] = None   # sync: the fop waits on it

    def __repr__(self) -> str:
        return (f"<InterruptRecord unique={self.header.unique} hit={self.hit} "
                f"state={self.state.value}>")


def interrupt_record_new(header: InHeader, handler: Handler) -> InterruptRecord:
    """A new record for the request ``header`` (``req.header``): state NONE, not hit, no
    data.  ``handler(record)`` runs when the kernel interrupts the request; it must end
    (at once, or later) with :func:`interrupt_finish_interrupt`."""
    return InterruptRecord(header, handler)


def interrupt_record_insert(*args: Any) -> None:
    """``interrupt_record_insert(record)`` (or ``(session, record)``): make the record
    findable by FUSE_INTERRUPT.  Insert it before winding the fop."""
    if len(args) == 1:
        (record,) = args
        if record.request is None:
            raise LookupError("record has no request: make it from req.header, or pass "
                              "the session")
        session = record.request.session
    elif len(args) == 2:
        session, record = args
    else:
        raise TypeError("interrupt_record_insert(record) or (session, record)")
    session.interrupts.insert(record)


def _clean(record: InterruptRecord, datap: Optional[DataRef], side: str) -> None:
    """GlusterFS's record free: ``data`` goes to ``datap`` (or is dropped)."""
    if record.cleaned_by is not None:        # both sides claimed it: mixed strategies
        log.error("interrupt record for unique %d cleaned up twice (%s, then %s): "
                  "finish_fop and finish_interrupt must pass the same sync",
                  record.header.unique, record.cleaned_by, side)
        if datap is not None:
            datap.value = None
        return
    record.cleaned_by = side
    if datap is not None:
        datap.value = record.data
    record.data = None


def _not_mine(datap: Optional[DataRef]) -> None:
    if datap is not None:
        datap.value = None


async def interrupt_finish_fop(frame: Any, sync: bool,
                               datap: Optional[DataRef] = None) -> bool:
    """Fop side, when the fop is done (call it on every path, from ``finally``).

    Reaps the record.  Returns True when the interrupt was HANDLED: EINTR was sent, so
    the caller must not answer (the session would drop a second answer anyway)."""
    req = getattr(frame, "interrupt", None)
    record = req.record if req is not None else None
    if record is None or record.reaped:
        _not_mine(datap)                     # no record (or reaped already): nothing to do
        return False
    req.session.interrupts.remove(record)
    record.sync = sync
    if not record.hit:                       # no interrupt: ours to clean up
        _clean(record, datap, "fop")
        return False
    prior = record.state
    if prior is NONE:                        # the handler runs and has not finished
        if not sync:
            record.state = SQUELCHED         # we won: our answer stands, the handler
            _not_mine(datap)                 # (finishing later) cleans up
            return False
        record.state = WAITING_HANDLER
        wake = record._wake = trio.Event()
        # Shielded: the handler may have cancelled this very request.  It always
        # finishes (a failing or cancelled handler is finished SQUELCHED for it).
        with trio.CancelScope(shield=True):
            await wake.wait()
        _clean(record, datap, "fop")         # sync: the fop side always cleans up
        return False                         # the handler's verdict came too late
    if prior is WAITING_HANDLER:             # cannot happen: only we set it
        raise RuntimeError(f"interrupt_finish_fop twice for unique {record.header.unique}")
    _clean(record, datap, "fop")             # the handler finished first: we lost
    return prior is HANDLED


def interrupt_finish_interrupt(record: InterruptRecord, state: InterruptState, sync: bool,
                               datap: Optional[DataRef] = None) -> None:
    """Handler side: ``state`` is HANDLED (answer EINTR now; the fop's later answer is
    suppressed) or SQUELCHED (let the fop answer).  Cleans up when it lost the race and
    ``sync`` is False."""
    if state is not HANDLED and state is not SQUELCHED:
        raise ValueError("interrupt_finish_interrupt takes HANDLED or SQUELCHED")
    if record.handler_done:
        log.error("interrupt_finish_interrupt twice for unique %d", record.header.unique)
        _not_mine(datap)
        return
    record.handler_done = True
    unique = record.header.unique
    prior = record.state
    if prior is NONE:                        # we won
        record.state = state
    elif prior is WAITING_HANDLER:           # the fop is done and waits: its answer stands
        record.state = SQUELCHED
        if record._wake is not None:
            record._wake.set()
    if not (prior is NONE or (sync and prior is WAITING_HANDLER)
            or (not sync and prior is SQUELCHED) or record.orphaned):
        log.error("interrupt record for unique %d: fop and handler disagree on sync "
                  "(state %s, handler sync=%s)", unique, prior.value, sync)
    if prior is NONE and state is HANDLED:
        req = record.request
        if req is not None and req.session.reply_error(req, errno.EINTR):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s unique %d: answered EINTR from the interrupt handler",
                          _name(record.header.opcode), unique)
    if prior is not NONE and (not sync or record.orphaned):
        _clean(record, datap, "handler")     # we lost, and no contract says the fop frees
    else:
        _not_mine(datap)


def _handler_failed(record: InterruptRecord) -> None:
    """A handler raised, or ended (or was cancelled) without finishing: finish it
    SQUELCHED so that the fop answers and a waiting fop is not left waiting."""
    if not record.handler_done:
        sync = record.sync if record.sync is not None else False
        interrupt_finish_interrupt(record, SQUELCHED, sync)


class Request(Frame):
    """One kernel request in flight: the frame its fops are wound with (``req.frame`` is
    the request itself), where to answer, and its interrupt hooks.

    One object per request, made by the session for every request: the constructor
    stores only what every request has; the interrupt state (``record``, ``handlers``,
    ``interrupted``, ...) keeps its class defaults until an interrupt, a record or a
    handler sets it (the first such store makes the instance's ``__dict__``).  ``record``
    is a slot (None until a record is inserted): the session reads it for every request,
    and a class default read through an instance is a slow attribute lookup in CPython
    3.11 (not specialized)."""
    __slots__ = ("session", "fd", "opcode", "nodeid", "frame", "replied", "record")
    handlers: Optional[list] = None
    interrupted = False           # an interrupt came (remembered for late handlers)
    interruptible = True          # False: translators' handlers are refused
    cancel_requested = False
    waited = False                # it suspended once: it is in the session's pending
    waited_at = 0.0               # time.monotonic() when it first waited (.meta)

    def __init__(self, session: Any, fd: int, unique: int, opcode: int, nodeid: int,
                 uid: int = 0, gid: int = 0, pid: int = 0) -> None:
        # Session.dispatch makes requests without calling this: a field added here must
        # be set there too.
        self.session = session
        self.fd = fd
        self.unique = unique
        self.opcode = opcode
        self.nodeid = nodeid
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.replied = False
        self.record: Optional[InterruptRecord] = None
        # The frame of the request's fops: the request itself.  A slot, not a property
        # (handlers read it on every request); the session breaks the cycle when the
        # request is done (a translator that kept the frame still has it).
        self.frame: Optional[Request] = self

    @property
    def interrupt(self) -> "Request":          # Frame's: the request's interrupt hooks
        return self

    def on_interrupt(self, handler: Callable[[], Any]) -> bool:
        """``frame.on_interrupt`` (xlators.core.frame.Frame)."""
        return self.add_handler(handler)

    @property
    def header(self) -> InHeader:
        h = _RequestHeader(self.unique, self.opcode, self.nodeid, self.uid, self.gid,
                           self.pid)
        h.request = self
        return h

    def add_handler(self, handler: Callable[[], Any]) -> bool:
        """``frame.on_interrupt``: run ``handler`` and cancel the request on interrupt.
        A handler already registered is not added again (a translator that retries a
        call, as storage/gfapi's SETLKW does, asks on every try)."""
        if not self.interruptible or self.replied:
            return False
        if self.interrupted:             # the interrupt came before the handler
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s unique %d: handler registered after the interrupt: "
                          "cancelling now", _name(self.opcode), self.unique)
            _run(handler)
            self.cancel()
            return True
        handlers = self.handlers
        if handlers is None:
            self.handlers = [handler]
        elif handler not in handlers:
            handlers.append(handler)
        return True

    def cancel(self) -> None:
        """Cancel the request's scope: everything awaiting below unwinds, EINTR goes out.
        (A request gets its scope when it first waits; before that nothing can run.)"""
        self.cancel_requested = True
        scope = self.cancel_scope
        if scope is not None:
            scope.cancel()

    def finish(self) -> None:
        """Reap the record on every exit path (GlusterFS leaks it on errors).  Called by
        the session after the reply; a no-op when interrupt_finish_fop ran."""
        record = self.record
        if record is None or record.reaped:
            return
        self.session.interrupts.remove(record)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s unique %d: interrupt record reaped on an exit path",
                      _name(self.opcode), self.unique)
        if record.hit and record.state is NONE:
            record.state = SQUELCHED          # the handler, finishing later, cleans up
            record.orphaned = True
        else:
            _clean(record, None, "fop")


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
        self.dropped = 0

    def insert(self, record: InterruptRecord) -> None:
        unique = record.header.unique
        req = self.pending.get(unique)
        if req is None:
            # Not waiting (yet): the request being stepped, which enters pending when
            # it waits (Session.wait_begins).
            req = record.request
            if req is None or req.unique != unique:
                req = getattr(self.session, "_stepping", None)
            if req is None or req.unique != unique or req.frame is None:
                raise LookupError(f"no request {unique} in flight")
        if req.record is not None and not req.record.reaped:
            raise ValueError(f"request {unique} has an interrupt record already")
        record.request = req
        record.reaped = False
        req.record = record
        self.records += 1

    def remove(self, record: InterruptRecord) -> None:
        if not record.reaped:
            record.reaped = True
            self.records -= 1

    def interrupt(self, target: int) -> None:
        """FUSE_INTERRUPT for request ``target``.  Never answered."""
        self.received += 1
        debug = log.isEnabledFor(logging.DEBUG)
        req = self.pending.get(target)
        if req is None or req.replied:
            self.dropped += 1
            if debug:
                log.debug("INTERRUPT unique %d: already answered; dropped", target)
            return
        name = _name(req.opcode)
        record = req.record
        if record is not None:
            if record.hit or record.reaped:
                self.dropped += 1
                if debug:
                    log.debug("INTERRUPT unique %d (%s): %s; dropped", target, name,
                              "handler already triggered" if record.hit else
                              "the fop is done, its answer on the way")
                return
            record.hit = True
            if debug:
                log.debug("%s unique %d: interrupt handler triggered", name, target)
            self._run_record_handler(record)
            return
        if req.handlers:
            if debug:
                log.debug("%s unique %d: interrupt: cancelling through the graph", name,
                          target)
            req.interrupted = True
            handlers, req.handlers = req.handlers, None
            for h in handlers:
                _run(h)
            req.cancel()
            return
        if req.interrupted:
            self.dropped += 1
            if debug:
                log.debug("INTERRUPT unique %d (%s): interrupted already; dropped",
                          target, name)
            return
        req.interrupted = True
        self.unhandled += 1
        if debug:
            log.debug("INTERRUPT unique %d (%s): no handler found", target, name)

    def _run_record_handler(self, record: InterruptRecord) -> None:
        try:
            result = record.handler(record)
        except Exception:
            log.exception("%s unique %d: interrupt handler failed",
                          _name(record.header.opcode), record.header.unique)
            _handler_failed(record)
            return
        if inspect.isawaitable(result):
            self.session.nursery.start_soon(_await_handler, record, result)

    def dump(self) -> dict:
        return {"in-flight": len(self.pending), "records": self.records,
                "interrupts-received": self.received,
                "interrupts-unhandled": self.unhandled, "interrupts-dropped": self.dropped}


async def _await_handler(record: InterruptRecord, awaitable: Any) -> None:
    """Run an async handler; if it fails or ends without finishing, finish it SQUELCHED."""
    try:
        await awaitable
    except Exception:
        log.exception("%s unique %d: interrupt handler failed",
                      _name(record.header.opcode), record.header.unique)
    finally:
        _handler_failed(record)
