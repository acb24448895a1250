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
    __slots__ = ("unique", "uid", "gid", "pid", "lk_owner", "cancel_scope", "_xdata",
                 "_groups", "interrupt", "opcode", "umask")

    def __init__(self, unique: int = 0, uid: int = 0, gid: int = 0, pid: int = 0,
                 lk_owner: int = 0, groups: Optional[tuple[int, ...]] = None,
                 cancel_scope: Any = None, opcode: str = "") -> None:
        self.unique = unique
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.lk_owner = lk_owner
        self.cancel_scope = cancel_scope
        self._xdata: Optional[dict] = None
        self._groups = groups
        # The request's interrupt hooks (set by the bridge; None in the harness): see
        # fuse_bridge.interrupt.  Translators use frame.on_interrupt().
        self.interrupt: Any = None
        self.opcode = opcode
        self.umask = 0

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
