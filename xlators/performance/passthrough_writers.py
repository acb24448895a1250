"""Seeing the writes FUSE passthrough hides: a mixin for translators that keep sizes or
times (md-cache, readdir-ahead).

With FUSE passthrough the kernel writes a file's brick descriptor itself, so no WRITE
passes the graph and a translator that keeps a file's size or times would serve them
stale.  The bridge asks each translator ``passthrough_fd(fd)`` before it registers a
brick file; this mixin takes the child's answer and, for an fd open for writing that
gets one, marks it in ``fd.ctx`` and calls ``_writer_opened(inode)``; its ``release``
calls ``_writer_released(inode)`` once the child has released it.  ``release`` returns
the child's coroutine as it is for every other fd (no coroutine of the translator's own
on that path).

    class MyCache(PassthroughWriters, Translator):
        passes_data_through = True
        def _writer_opened(self, inode): ...     # stop serving what it keeps of inode
        def _writer_released(self, inode): ...   # what it kept meanwhile is stale
"""
from __future__ import annotations

import os
from typing import Any, Optional

_WRITER = object()   # fd.ctx mark: an fd counted by _writer_opened


class PassthroughWriters:
    """Tracks the writable fds the kernel writes behind the translator's back."""

    def _writer_opened(self, inode: Any) -> None:
        raise NotImplementedError

    def _writer_released(self, inode: Any) -> None:
        raise NotImplementedError

    def passthrough_fd(self, fd: Any) -> Optional[int]:
        brick_fd = super().passthrough_fd(fd)          # type: ignore[misc]
        if brick_fd is not None and fd.flags & os.O_ACCMODE != os.O_RDONLY \
                and fd.ctx.get(self) is not _WRITER:
            fd.ctx[self] = _WRITER
            self._writer_opened(fd.inode)
        return brick_fd

    def release(self, frame: Any, fd: Any) -> Any:
        if fd.ctx.get(self) is _WRITER:
            return self._release_writer(frame, fd)
        return self.child.release(frame, fd)           # type: ignore[attr-defined]

    async def _release_writer(self, frame: Any, fd: Any) -> None:
        try:
            return await self.child.release(frame, fd)  # type: ignore[attr-defined]
        finally:
            if fd.ctx.pop(self, None) is _WRITER:
                self._writer_released(fd.inode)
