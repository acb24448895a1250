"""Which worker threads a request's blocking work runs on: a request-scoped choice made
from above.

performance/io-threads winds its fops between ``set_offload(limiter)`` and
``reset_offload(token)``; a translator that sends blocking system calls to worker
threads (storage/posix: reads of uncached data, large writes, fsync...) asks :func:`offload_limiter` and, when it returns a
limiter, runs those calls with ``trio.to_thread.run_sync(..., limiter=it)`` instead of
its own limiter.  Which calls block enough to leave the event loop stays the storage's
decision (a cached stat or pread inline costs a microsecond, a thread hop 50-150 us).
The choice lives in a context variable, so it follows the request's task (and tasks it
spawns) and nothing else.
"""
from __future__ import annotations

import contextvars
from typing import Any, Optional

_OFFLOAD: contextvars.ContextVar[Optional[Any]] = contextvars.ContextVar(
    "xlfs_offload", default=None)


def offload_limiter() -> Optional[Any]:
    """The trio.CapacityLimiter blocking calls of the current request should use, or None
    (use the translator's own limiter)."""
    return _OFFLOAD.get()


def set_offload(limiter: Any) -> contextvars.Token:
    """Mark the current request (its task and the tasks it spawns) "offload to
    ``limiter``"; pass the token to :func:`reset_offload` when the request is done."""
    return _OFFLOAD.set(limiter)


def reset_offload(token: contextvars.Token) -> None:
    _OFFLOAD.reset(token)
