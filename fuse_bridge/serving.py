"""Serving one request: check it, step its handler, answer it exactly once.

``RequestServing`` is a part of ``fuse_bridge.session.Session`` (a base class of it):
``serve`` is what a reader (``fuse_bridge.readers``) calls for each request it read.  The
common request passes one combined test (a route, the header's length, no extensions, a
body at least the row's struct, a unique not in flight); anything else goes through
``RequestChecks._admit`` (``fuse_bridge.request_checks``).  The handler's coroutine is
stepped by the session's stepper (``readers.stepper``): when it finishes without waiting
the reply is written inline and ``serve`` returns None; when it waits, ``serve`` returns
the coroutine that finishes it (``_finish``) and the reader becomes that request's task.

Whatever a handler raises is answered: its errno (``OSError``, ``FopError``), EIO and one
log line for a malformed body (``request_checks.MALFORMED``), EIO and a logged traceback
for anything else (the loop never dies), EINTR when the request was interrupted.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any, Awaitable, Optional

import trio

from . import abi, selfaccess
from .interrupt import Request
from .readers import DONE, FAILED, Channel, new_stepper, resume, resume_stepper
from .replies import JOIN_MAX, Replies
from .request_checks import MALFORMED, RequestChecks
from .routes import Route

log = logging.getLogger("xlfs.fuse")

_IN_HEADER_UNPACK = abi.IN_HEADER.unpack_from
_OUT_HEADER_PACK = abi.OUT_HEADER.pack
_HDR = abi.IN_HEADER.size
_FOREIGN = selfaccess.FOREIGN
_opname = abi.opcode_name
_JOIN_MAX = JOIN_MAX
_MALFORMED = MALFORMED


class ServedRequest(Request):
    """The ``Request`` that ``serve`` makes for each request it serves: a ``Request``
    with no ``__init__`` of its own to run (``object.__init__``), since ``serve`` stores
    every field itself.  Calling a class whose ``__init__`` is object's is the cheapest
    way CPython 3.11 has to make an instance (``object.__new__(Request)`` goes through a
    generic wrapper call: ~300 instructions more, once per request)."""
    __slots__ = ()
    __init__ = object.__init__      # type: ignore[assignment]


class RequestServing(RequestChecks, Replies):
    """The request half of a session, on its replies (``fuse_bridge.replies``) and its
    checks (``fuse_bridge.request_checks``).  Uses the session's routes, ``pending``,
    client, stepper, dump and counters."""

    routes: dict[int, Route]
    pending: dict[int, Request]
    client: Any
    dump: Any
    requests: int
    exceptions: int
    _stepping: Optional[Request]
    _step: Any
    _box: list

    def serve(self, chan: Channel, buf: memoryview, n: int) -> Optional[Awaitable[None]]:
        """Serve the request in ``buf[:n]`` (a view of the reader's buffer): check it,
        step its handler, answer once.  None when it is done (the usual case: the handler
        did not wait); else it waits, and the reader awaits what this returns to finish
        it, after :meth:`wait_begins`."""
        if n < _HDR:
            log.error("malformed request: %d bytes, shorter than the %d-byte header", n, _HDR)
            return None
        length, opcode, unique, nodeid, uid, gid, pid, extlen = _IN_HEADER_UNPACK(buf)
        if self.dump is not None:
            self._dump(b"R", buf[:n])
        self.requests += 1
        route = self.routes.get(opcode)
        if (route is None or length != n or extlen or n < route.fast_len
                or unique in self.pending):
            end = self._admit(chan.fd, route, length, opcode, unique, n, extlen)
            if end < 0:
                return None
            assert route is not None
            if not route.reply:
                self._stepping = None
                step = self._no_reply(route, chan.fd, unique, opcode, nodeid, buf, end)
                try:
                    first = step.send(None)
                except StopIteration:
                    return None
                return resume(step, first)
        else:
            end = n
        if pid not in _FOREIGN:
            selfaccess.check(pid, opcode, unique, nodeid)
        # Request(self, chan.fd, unique, opcode, nodeid, uid, gid, pid), without the
        # call of its __init__ (a third of the cost of making it: once per request).
        req = ServedRequest()
        req.session = self
        req.fd = chan.fd
        req.unique = unique
        req.opcode = opcode
        req.nodeid = nodeid
        req.uid = uid
        req.gid = gid
        req.pid = pid
        req.replied = False
        req.record = None
        req.frame = req
        # The request enters ``pending`` (where INTERRUPT finds it) only if it waits
        # (wait_begins); until then no other request can run.
        self._stepping = req
        try:
            # Handlers are coroutine functions (fuse_bridge.opcodes), stepped by the
            # session's stepper: DONE or FAILED unless the handler waits.
            handler = route.handler         # an attribute, not a method: LOAD_ATTR
            trap = self._step.send(handler(self.client, req, buf[_HDR:end]))
        except BaseException as exc:        # before the handler's coroutine (a wrapper),
            if self._step.gi_frame is None:  # or a GeneratorExit out of it: the stepper
                self._step, self._box = new_stepper()   # is over, the next needs one
            self._done(req, exc)
            return None
        if trap is DONE:
            box = self._box
            payload = box[0]
            box[0] = None
            if not req.replied:
                if route.whole and payload.__class__ is bytes:
                    msg = payload               # the whole message (encode.whole_reply)
                elif payload.__class__ is bytes and len(payload) <= _JOIN_MAX:
                    # The usual small reply (reply()'s first case), inline.
                    msg = _OUT_HEADER_PACK(16 + len(payload), 0, unique) + payload
                elif payload is None and not route.whole:   # no body: UNLINK, FLUSH, ...
                    msg = _OUT_HEADER_PACK(16, 0, unique)
                else:
                    msg = None
                if msg is not None:
                    if self.dump is not None:
                        self._dump(b"W", msg)
                    try:
                        os.write(req.fd, msg)
                    except OSError as exc:
                        self._write_failed(exc, unique)
                    req.replied = True
                else:
                    try:
                        self._reply(req, payload, route.whole)
                    except BaseException as exc:
                        self._done(req, exc)
                        return None
            req.frame = None                # the cycle (req.frame is req); also: done
            if req.record is not None:
                req.finish()
            return None
        if trap is FAILED:
            box = self._box
            exc = box[0]
            box[0] = None
            self._done(req, exc)
            return None
        # The handler waits, and keeps this stepper until it is done.
        step, box = self._step, self._box
        self._step, self._box = new_stepper()
        return self._finish(req, step, box, trap, route.whole)

    async def dispatch(self, chan: Channel, buf: memoryview, n: int) -> None:
        """:meth:`serve` as one coroutine (tests, tools): the request, served whole."""
        rest = self.serve(chan, buf, n)
        if rest is not None:
            self.wait_begins()
            await rest

    async def _finish(self, req: Request, step: Any, box: list, trap: Any, whole: bool
                      ) -> None:
        """The rest of a request whose handler waits (serve stepped it once)."""
        try:
            payload = await resume_stepper(step, box, trap)
            if not req.replied:
                self._reply(req, payload, whole)
        except BaseException as exc:
            self._done(req, exc)
        else:
            self._done(req, None)

    def _done(self, req: Request, exc: Optional[BaseException]) -> None:
        """The request is over: answer what its handler raised (``exc``: its errno, EIO,
        or EINTR when it was interrupted), then forget the request.  Re-raises what is
        not the request's to absorb (trio.Cancelled: the reader's scope takes it)."""
        try:
            if exc is None:
                pass
            elif isinstance(exc, trio.Cancelled):
                if req.cancel_requested:     # interrupted: the reader's scope absorbs it
                    self.reply_error(req, errno.EINTR)
                raise exc
            elif isinstance(exc, OSError):   # FopError included
                self.reply_error(req, exc.errno or errno.EIO)
            elif isinstance(exc, _MALFORMED):
                log.error("%s (unique %d): malformed request: %s", _opname(req.opcode),
                          req.unique, exc)
                self.reply_error(req, errno.EIO)
            elif isinstance(exc, (Exception, GeneratorExit)):   # (the latter: a bug
                self.exceptions += 1                            # below, not a close)
                log.error("%s (unique %d, nodeid %d) raised; answering EIO",
                          _opname(req.opcode), req.unique, req.nodeid, exc_info=exc)
                self.reply_error(req, errno.EIO)
            else:
                raise exc
        finally:
            req.frame = None                # the cycle (req.frame is req); also: done
            if req.waited:
                del self.pending[req.unique]
            if req.record is not None:
                req.finish()

    def wait_begins(self) -> Optional[Request]:
        """The request being stepped suspends (its reader calls this, right after the
        step that suspended): it enters ``pending``, where INTERRUPT and the statedump
        find it.  None when the suspended step was not a request that is answered."""
        req, self._stepping = self._stepping, None
        if req is None or req.frame is None:     # none, or one that is done already
            return None
        req.waited = True
        req.waited_at = time.monotonic()         # its age in .meta/frames
        self.pending[req.unique] = req
        return req

    def in_flight(self) -> list[Request]:
        """The requests not answered yet: those that wait, and the one being stepped
        (the request that asks, when a request asks)."""
        reqs = list(self.pending.values())
        req = self._stepping
        if req is not None and req.frame is not None and not req.waited:
            reqs.append(req)
        return reqs
