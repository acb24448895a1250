"""Which worker threads a request's blocking work runs on: a request-scoped choice made
from above.

performance/io-threads wraps the fops it winds in ``offloading(limiter)``; a translator
that sends blocking system calls to worker threads (storage/posix: reads of uncached
data, large writes, fsync...) asks :func:`offload_limiter` and, when it returns a
limiter, runs those calls with ``trio.to_thread.run_sync(..., limiter=it)`` instead of
its own limiter.  Which calls block enough to leave the event loop stays the storage's
decision (a cached stat or pread inline costs a microsecond, a thread hop 50-150 us).
The choice lives in a context variable, so it follows the request's task (and tasks it
spawns) and nothing else.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional

_OFFLOAD: contextvars.ContextVar[Optional[Any]] = contextvars.ContextVar(
    "xlfs_offload", default=None)


def offload_limiter() -> Optional[Any]:
    """The trio.CapacityLimiter blocking calls of the current request should use, or None
    (run them inline)."""
    return _OFFLOAD.get()


@contextlib.contextmanager
def offloading(limiter: Any) -> Iterator[None]:
    token = _OFFLOAD.set(limiter)
    try:
        yield
    finally:
        _OFFLOAD.reset(token)
