"""Counting the FUSE requests the kernel sends to one connection, by opcode, with the
kernel's ``fuse:fuse_request_send`` tracepoint (Linux 6.15 and later).

    with FuseTrace(connection) as trace:
        os.fstat(fd)
    trace.counts()                         # {"GETATTR": 1}

Any daemon (xlfs, GlusterFS, bindfs) is counted alike: the count is what the kernel sent,
not what a daemon says it served.  The trace runs in a private tracing instance (its own
buffer, filtered on the connection), so it does not disturb anyone else's tracing; the
instance is removed on exit.  Needs root and tracefs; when tracefs is not mounted at
/sys/kernel/tracing, ``tracing_root()`` mounts it there and ``release_tracefs()``
unmounts it again.  ``unavailable()`` says why counting cannot work here.

``events(text)`` parses such a trace (with ``ends=True``: sends and replies) into
TraceEvent records, and ``replies(text)`` pairs each reply with its request.
"""
from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from typing import Dict, Iterator, NamedTuple, Optional

TRACEFS = "/sys/kernel/tracing"
EVENT = "events/fuse/fuse_request_send"
END_EVENT = "events/fuse/fuse_request_end"
_OPCODE_RE = re.compile(r"opcode \d+ \(FUSE_(\w+)\)")
_ENTRIES_RE = re.compile(r"entries-in-buffer/entries-written: (\d+)/(\d+)")
_EVENT_RE = re.compile(r"fuse_request_(send|end): connection \d+ req (\d+) "
                       r"(?:opcode (\d+) \(\w+\) len (\d+)|len (\d+) error -?\d+)")
_mounted_by_us = False


def _event_dir(root: str) -> str:
    return os.path.join(root, EVENT)


def tracing_root() -> Optional[str]:
    """The tracefs directory (mounting it when it is not, as root), or None."""
    global _mounted_by_us
    if os.path.isdir(_event_dir(TRACEFS)):
        return TRACEFS
    if os.geteuid() != 0 or not os.path.isdir(TRACEFS) or os.listdir(TRACEFS):
        return None
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS],
                       capture_output=True, timeout=10)
    if r.returncode != 0:
        return None
    _mounted_by_us = True
    return TRACEFS if os.path.isdir(_event_dir(TRACEFS)) else None


def release_tracefs() -> None:
    """Unmount tracefs if ``tracing_root()`` mounted it."""
    global _mounted_by_us
    if _mounted_by_us:
        subprocess.run(["umount", TRACEFS], capture_output=True, timeout=10)
        _mounted_by_us = False


def unavailable() -> Optional[str]:
    """None when requests can be counted here, else why not."""
    if os.geteuid() != 0:
        return "counting FUSE requests needs root (tracefs)"
    root = tracing_root()
    if root is None:
        return f"no tracefs with the fuse:fuse_request_send event at {TRACEFS}"
    if not os.path.isdir(os.path.join(root, "instances")):
        return "tracefs has no instances directory"
    return None


class FuseTrace:
    """A private tracing instance recording fuse_request_send of one connection."""

    def __init__(self, connection: int, events: int = 50000, ends: bool = False) -> None:
        root = tracing_root()
        if root is None:
            raise RuntimeError(unavailable() or "no tracefs")
        self.connection = connection
        # with ``ends``, fuse_request_end too: each request's reply (``text``)
        self.events = (EVENT, END_EVENT) if ends else (EVENT,)
        # per CPU; an event takes about 40 bytes: room for ``events`` on any one CPU
        self.buffer_kb = max(256, events * 48 // 1024)
        self.dir = os.path.join(root, "instances", f"xlfs-bench-{os.getpid()}-{connection}")
        self._text = ""

    def _write(self, rel: str, value: str) -> None:
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(value)

    def __enter__(self) -> "FuseTrace":
        os.mkdir(self.dir)
        try:
            self._write("buffer_size_kb", str(self.buffer_kb * len(self.events)))
            for event in self.events:
                self._write(f"{event}/filter", f"connection == {self.connection}")
                self._write(f"{event}/enable", "1")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for event in self.events:
                self._write(f"{event}/enable", "0")
            with open(os.path.join(self.dir, "trace")) as f:
                self._text = f.read()
        finally:
            self.close()

    def close(self) -> None:
        try:
            os.rmdir(self.dir)          # removing the instance frees its buffer
        except FileNotFoundError:
            pass

    @property
    def text(self) -> str:
        """The trace as tracefs printed it (one line per event)."""
        return self._text

    def counts(self) -> Dict[str, int]:
        """Requests sent while the trace ran, by opcode name (LOOKUP, GETATTR, ...)."""
        return dict(Counter(_OPCODE_RE.findall(self._text)))

    def lost(self) -> bool:
        """The buffer overflowed (counts would be short)."""
        m = _ENTRIES_RE.search(self._text)
        return m is not None and m.group(1) != m.group(2)


class TraceEvent(NamedTuple):
    """One fuse_request_send or fuse_request_end line of a trace."""
    kind: str                  # "send" or "end"
    unique: int                # the request's id, the same in its send and its end
    opcode: Optional[int]      # the request's opcode (a send's; None for an end)
    time: float                # seconds, the trace's clock
    length: int                # bytes of the request (send) or the reply (end), header included


class Reply(NamedTuple):
    """A request and its reply, matched by their unique id."""
    opcode: int
    sent: float                # seconds, the trace's clock
    ended: float
    length: int                # bytes of the reply, its 16-byte header included


def events(text: str) -> Iterator[TraceEvent]:
    """The send and end events of a trace's text, in the order printed; other lines
    (comments, other events) are passed over."""
    for line in text.splitlines():
        m = _EVENT_RE.search(line)
        if not m:
            continue
        stamp = float(line[:m.start()].split()[-1].rstrip(":"))
        if m.group(1) == "send":
            yield TraceEvent("send", int(m.group(2)), int(m.group(3)), stamp, int(m.group(4)))
        else:
            yield TraceEvent("end", int(m.group(2)), None, stamp, int(m.group(5)))


def replies(text: str) -> Iterator[Reply]:
    """Each reply of a trace with its request, in the order of the replies; a request
    without a reply in the trace, or a reply whose request is not in it, is left out."""
    sent: Dict[int, TraceEvent] = {}
    for ev in events(text):
        if ev.kind == "send":
            sent[ev.unique] = ev
        elif ev.unique in sent:
            req = sent.pop(ev.unique)
            yield Reply(req.opcode, req.time, ev.time, ev.length)
