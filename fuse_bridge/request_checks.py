"""The checks a request that does not pass ``Session.serve``'s one combined test goes
through, one by one, and the requests that are never answered.

The rules (the kernel's, and seed 004, libfuse's loop):

- nothing but INIT is served before INIT, and a second INIT is refused (EIO);
- an unknown opcode is answered ENOSYS; a malformed request (short body, wrong length,
  extensions past the body, a unique already in flight) EIO and one log line;
- FORGET, BATCH_FORGET and INTERRUPT are never answered, malformed or not (a malformed one
  is one log line and is not acted on).

``RequestChecks`` is a part of ``fuse_bridge.session.Session`` (a base class of it).
"""
from __future__ import annotations

import errno
import logging
import struct
from typing import Any, Callable, Optional

from . import abi
from .interrupt import Request
from .opcodes import TABLE
from .routes import Route

log = logging.getLogger("xlfs.fuse")

_HDR = abi.IN_HEADER.size
_opname = abi.opcode_name
# What a request's body may raise when it is malformed (not a handler bug).
# OverflowError: a number the kernel never sends (an offset past 2**63 - 1, flags past an
# int) that a system call cannot take.
MALFORMED = (ValueError, IndexError, UnicodeError, struct.error, OverflowError)


class RequestChecks:
    """Admission of the uncommon request.  Uses the session's ``client``, ``pending``
    and ``answer_error`` (``fuse_bridge.replies``)."""

    client: Any
    pending: dict[int, Request]
    answer_error: Callable[..., None]

    def _admit(self, fd: int, route: Optional[Route], length: int, opcode: int, unique: int,
               n: int, extlen: int) -> int:
        """The checks the common request passes at a glance, one by one: the end of the
        body (extensions excluded) when the request may be served, else -1 (answered or,
        never answered, logged)."""
        row = route.row if route is not None else TABLE.get(opcode)
        if row is not None and not row.reply:
            if length != n:
                why = f"header says {length} bytes, read {n}"
            elif row.input is not None and n - _HDR < row.input.size:
                why = (f"body of {n - _HDR} bytes, shorter than its {row.input.size}-byte "
                       f"struct")
            elif not self.client.initialized:
                why = "before INIT"
            else:
                return n if route is not None else -1    # no handler: ignored
            log.error("malformed %s (unique %d): %s; ignored", _opname(opcode), unique, why)
            return -1
        if length != n:
            self.answer_error(fd, unique, errno.EIO, f"malformed {_opname(opcode)}: header "
                                                     f"says {length} bytes, read {n}")
            return -1
        if route is None:
            if not self.client.initialized:
                self.answer_error(fd, unique, errno.EIO, f"{_opname(opcode)} before INIT")
            elif opcode == abi.Opcode.INIT:
                self.answer_error(fd, unique, errno.EIO, "a second INIT")
            else:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s (unique %d): not implemented, ENOSYS", _opname(opcode),
                              unique)
                self.answer_error(fd, unique, errno.ENOSYS)
            return -1
        end = n - extlen * 8
        if end < route.min_len:
            self.answer_error(fd, unique, errno.EIO, f"malformed {_opname(opcode)}: body "
                                                     f"of {end - _HDR} bytes")
            return -1
        other = self.pending.get(unique)
        if other is not None:
            self.answer_error(fd, unique, errno.EIO,
                              f"malformed {_opname(opcode)}: unique {unique} is in flight "
                              f"already ({_opname(other.opcode)}, which goes on)")
            return -1
        return end

    async def _no_reply(self, route: Route, fd: int, unique: int, opcode: int, nodeid: int,
                        buf: memoryview, end: int) -> None:
        """FORGET, BATCH_FORGET, INTERRUPT: never answered.  A malformed one (wrong
        length, body shorter than its struct, a count past the body) is one log line and
        is not acted on."""
        req = Request(self, fd, unique, opcode, nodeid)
        try:
            await route.handler(self.client, req, buf[_HDR:end])
        except (ValueError, struct.error) as exc:
            log.error("malformed %s (unique %d): %s; ignored", _opname(opcode), unique, exc)
        except Exception:
            log.exception("%s (unique %d) failed", _opname(opcode), unique)
        finally:
            req.frame = None
