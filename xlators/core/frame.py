"""The call frame: who asked, and the request's cancel scope.

A frame is made once per kernel request (or per harness call) and passed, unchanged, down
the whole graph.  ``cancel_scope`` is the trio scope the request runs in: an interrupt
(or any translator) may cancel it and every awaiting translator below unwinds.  Under the
FUSE bridge a request gets its scope when it first waits (a request that never yields
cannot be cancelled, so the fast path skips the cost); until then it is None.
"""
from __future__ import annotations

from typing import Any, Callable, Optional


def _read_groups(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return ()


class Frame:
    """Who asked (``unique``, ``uid``, ``gid``, ``pid``), and what the request carries
    besides: ``lk_owner``, supplementary ``groups`` (read on first use), ``xdata``,
    ``umask``, ``opcode`` (what the caller calls the request: the FUSE opcode number
    under the bridge, whose requests are frames: ``fuse_bridge.interrupt.Request``), the
    request's ``cancel_scope`` and its interrupt hooks (``interrupt``).

    A frame is made for every request, so only the four fields every request has are
    stored by the constructor; the others are class defaults until a request sets them
    (they then live in the instance's ``__dict__``, created on that first store)."""
    __slots__ = ("unique", "uid", "gid", "pid", "__dict__")
    lk_owner: int = 0
    cancel_scope: Any = None
    # The request's interrupt hooks (the bridge's request; None in the harness): see
    # fuse_bridge.interrupt.  Translators use frame.on_interrupt().
    interrupt: Any = None
    opcode: Any = ""
    umask: int = 0
    _xdata: Optional[dict] = None
    _groups: Optional[tuple[int, ...]] = None

    def __init__(self, unique: int = 0, uid: int = 0, gid: int = 0, pid: int = 0,
                 lk_owner: int = 0, groups: Optional[tuple[int, ...]] = None,
                 cancel_scope: Any = None, opcode: Any = "") -> None:
        self.unique = unique
        self.uid = uid
        self.gid = gid
        self.pid = pid
        if lk_owner:
            self.lk_owner = lk_owner
        if groups is not None:
            self._groups = groups
        if cancel_scope is not None:
            self.cancel_scope = cancel_scope
        if opcode:
            self.opcode = opcode

    @property
    def xdata(self) -> dict:
        """Per-request extras, created on first use."""
        if self._xdata is None:
            self._xdata = {}
        return self._xdata

    @property
    def groups(self) -> tuple[int, ...]:
        """Supplementary groups of the caller, read from /proc on first use."""
        if self._groups is None:
            self._groups = _read_groups(self.pid) if self.pid else ()
        return self._groups

    @groups.setter
    def groups(self, value: tuple[int, ...]) -> None:
        self._groups = tuple(value)

    def on_interrupt(self, handler: Callable[[], Any]) -> bool:
        """Ask to be told when the kernel interrupts this request.

        ``handler()`` runs on the event loop when the interrupt arrives; by default the
        request's cancel scope is then cancelled as well.  Returns False when the frame
        is not interruptible (no bridge, or interrupts off): the caller then just waits.
        """
        if self.interrupt is None:
            return False
        return self.interrupt.add_handler(handler)

    def __repr__(self) -> str:
        return f"<Frame unique={self.unique} {self.opcode} uid={self.uid} pid={self.pid}>"


def system_frame() -> Frame:
    """A frame for work that no user asked for (forget, background flushes)."""
    return Frame(unique=0, uid=0, gid=0, pid=0, groups=())
