"""A session's routes: how it sees each row of the opcode table (``fuse_bridge.opcodes``).

A route holds the row's handler (which the session may wrap: fuse_bridge.mount_watch),
what ``Session.serve`` checks a request against at a glance (the shortest valid request,
whether it is answered) and whether the handler returns whole reply messages
(``encode.whole_reply``).
"""
from __future__ import annotations

from typing import Optional

from . import abi
from .opcodes import Handler, OpcodeRow

_HDR = abi.IN_HEADER.size
_NEVER = 1 << 62        # a request length no read returns


class Route:
    """A session's view of one opcode table row: its handler (which the session may wrap:
    fuse_bridge.mount_watch), the shortest valid request, whether it is answered, and
    whether its handler returns whole reply messages (``encode.whole_reply``)."""
    __slots__ = ("row", "handler", "min_len", "reply", "fast_len", "whole")

    def __init__(self, row: OpcodeRow) -> None:
        self.row = row
        self.handler: Optional[Handler] = None
        self.whole = False
        self.set_handler(row.handler)
        self.min_len = _HDR + (row.input.size if row.input is not None else 0)
        self.reply = row.reply
        # The shortest request dispatch serves without a closer look
        # (RequestChecks._admit): never, for the requests that are not answered.
        self.fast_len = self.min_len if row.reply else _NEVER

    def set_handler(self, handler: Optional[Handler]) -> None:
        self.handler = handler
        self.whole = bool(getattr(handler, "whole_reply", False))
