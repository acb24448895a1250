"""Exactly one reply per request: how a session writes replies to /dev/fuse.

``Replies`` is a part of ``fuse_bridge.session.Session`` (a base class of it): the
session's ``reply``, ``reply_message`` and ``reply_error`` that handlers call through the
request (``req.session.reply``), the refusal of a request that never became a
``Request`` (``answer_error``), the writes themselves with ``--dump-fuse`` recording, and
what a failed write means (ENOENT: the request is gone; ENODEV: the session is over).

A reply up to ``JOIN_MAX`` bytes is joined to its out-header and written with one
``write``; a longer one, or a list of parts, goes out with ``writev``.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Any, Callable

from . import abi
from .interrupt import Request

log = logging.getLogger("xlfs.fuse")

_OUT_HEADER_PACK = abi.OUT_HEADER.pack
JOIN_MAX = 16384        # replies up to this size are joined to their header, not writev'd


class Replies:
    """The reply half of a session.  Uses the session's ``dump`` (the --dump-fuse
    recorder or None), ``opts``, ``errors`` (a count) and ``end``."""

    dump: Any
    errors: int
    opts: Any
    end: Callable[[str], None]

    def reply(self, req: Request, payload: Any = None) -> bool:
        """Send the one reply of ``req``: bytes, a list of parts, or None (no body).
        True when the kernel took it; False when ``req`` was answered already (an
        interrupt handler's EINTR) or the write failed (the request is gone): whatever
        the reply handed out must then be taken back by the caller."""
        if req.replied:
            return False
        # ``replied`` is set once the reply is written: a payload that cannot be encoded
        # or written (a handler bug) raises here and the request is still answered EIO.
        unique = req.unique
        cls = payload.__class__
        if cls is bytes and len(payload) <= JOIN_MAX:
            # One buffer: cheaper than writev's iovecs for the usual small reply.
            ok = self._write(req.fd, _OUT_HEADER_PACK(16 + len(payload), 0, unique)
                             + payload, unique)
        elif payload is None:
            ok = self._write(req.fd, _OUT_HEADER_PACK(16, 0, unique), unique)
        elif cls is list or cls is tuple:
            ok = self._writev(req.fd, [_OUT_HEADER_PACK(16 + sum(map(len, payload)), 0,
                                                        unique), *payload], unique)
        else:
            ok = self._writev(req.fd, [_OUT_HEADER_PACK(16 + len(payload), 0, unique),
                                       payload], unique)
        req.replied = True
        return ok

    def reply_message(self, req: Request, msg: bytes) -> bool:
        """Send the one reply of ``req`` as the whole message ``msg``, out-header included
        (``encode``'s ``*_reply``).  True and False as :meth:`reply`."""
        if req.replied:
            return False
        if msg.__class__ is not bytes:
            raise TypeError(f"a whole reply is bytes, not {type(msg).__name__}")
        ok = self._write(req.fd, msg, req.unique)
        req.replied = True
        return ok

    def _reply(self, req: Request, payload: Any, whole: bool) -> bool:
        """What a handler returned, as its reply: a whole message when the handler is
        marked so (encode.whole_reply), else a body."""
        if whole:
            return self.reply_message(req, payload)
        return self.reply(req, payload)

    def reply_error(self, req: Request, err: int) -> bool:
        if req.replied:
            return False
        req.replied = True
        if not 0 < err < 1000:
            err = errno.EIO
        self.errors += 1
        msg = _OUT_HEADER_PACK(16, -err, req.unique)    # self._write(...), inline: a
        if self.dump is not None:                       # negative LOOKUP comes with
            self._dump(b"W", msg)                       # every create
        try:
            os.write(req.fd, msg)
        except OSError as exc:
            self._write_failed(exc, req.unique)
        return True

    def answer_error(self, fd: int, unique: int, err: int, why: str = "") -> None:
        """Answer a request that never became a Request (refused by the checks)."""
        if why:
            log.error("%s (unique %d): answering %s", why, unique, errno.errorcode[err])
        self._write(fd, _OUT_HEADER_PACK(16, -err, unique), unique)

    def _write(self, fd: int, data: bytes, unique: int) -> bool:
        if self.dump is not None:
            self._dump(b"W", data)
        try:
            os.write(fd, data)
        except OSError as exc:
            self._write_failed(exc, unique)
            return False
        return True

    def _writev(self, fd: int, bufs: list, unique: int) -> bool:
        if self.dump is not None:
            self._dump(b"W", b"".join(bytes(b) for b in bufs))
        try:
            os.writev(fd, bufs)
        except OSError as exc:
            self._write_failed(exc, unique)
            return False
        return True

    def _dump(self, direction: bytes, message: Any) -> None:
        """--dump-fuse: a dump that cannot be written (disk full) stops; serving goes on."""
        try:
            self.dump.record(direction, message)
        except OSError as exc:
            log.error("--dump-fuse=%s: %s; no more messages are dumped",
                      self.opts.dump_fuse, exc)
            dump, self.dump = self.dump, None
            dump.close()

    def _write_failed(self, exc: OSError, unique: int) -> None:
        if exc.errno == errno.ENOENT:
            # The request is gone (interrupted and answered, or aborted): normal.
            if log.isEnabledFor(logging.DEBUG):
                log.debug("reply to unique %d: the request is no longer pending", unique)
        elif exc.errno == errno.ENODEV:
            self.end("the kernel ended the connection (unmounted)")
        else:
            log.error("reply to unique %d failed: %s", unique, exc)
