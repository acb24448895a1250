"""Errors that travel up a translator graph.

A fop fails by raising :class:`FopError` with an errno.  An ``OSError`` escaping a
translator means exactly the same thing (its ``errno`` is used), so storage code can let
``os`` calls raise.  Any other exception is a bug: the bridge answers ``EIO`` and logs it.
"""
from __future__ import annotations

import errno as _errno
import os


#: os.strerror's text by errno: decoding it through the locale is most of what making a
#: FopError costs (a cache's negative answers raise one per request)
_MESSAGES: dict[int, str] = {}


def _strerror(err: int) -> str:
    text = os.strerror(err)
    if 0 < err < 4096:                  # errnos: a handful of values
        _MESSAGES[err] = text
    return text


class FopError(OSError):
    """A fop failed with ``errno``; ``FopError(errno.ENOENT)``."""

    def __init__(self, err: int, message: str | None = None) -> None:
        super().__init__(err, message or _MESSAGES.get(err) or _strerror(err))

    def __reduce__(self):  # pragma: no cover - pickling support for worker processes
        return (FopError, (self.errno, self.strerror))


def errno_of(exc: BaseException) -> int:
    """The errno a fop failure means: OSError's errno, EIO for anything else."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return _errno.EIO


def errno_from_name(name: str) -> int:
    """``"ENOENT"`` -> 2; raises ValueError naming the bad word."""
    value = getattr(_errno, name.strip().upper(), None)
    if not isinstance(value, int) or not name.strip().upper().startswith("E"):
        raise ValueError(f"{name!r} is not an errno name (like ENOENT, EIO, ENOSPC)")
    return value
