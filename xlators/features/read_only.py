"""features/read-only: fail every modifying fop with EROFS.

Refused: every fop the fop table marks as modifying (setattr, mknod, mkdir, unlink,
rmdir, symlink, rename, link, create, writev, setxattr, removexattr, fallocate,
copy_file_range) and an open for writing or with O_TRUNC.  Everything else (lookups,
reads, opens for reading, locks, fsync, ...) passes through.  ``option read-only off``
turns it into a pass-through; ``reconfigure`` can switch it at run time.

    volume ro
        type features/read-only
        option read-only on
        subvolumes posix
    end-volume
"""
from __future__ import annotations

import errno
import os
from typing import Any

from ..core.errors import FopError
from ..core.fops import FOPS, Fop
from ..core.options import Option
from ..core.translator import Translator

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC


class ReadOnly(Translator):
    """features/read-only: fail every modifying fop with EROFS."""
    type = "features/read-only"
    children_range = (1, 1)
    needs_flush = False
    options = (
        Option.bool("read-only", default=True,
                    description="Refuse modifications with EROFS.  off: pass everything "
                                "through (switchable by reconfigure)."),
    )

    async def open(self, frame: Any, inode: Any, flags: int, fd: Any) -> None:
        if self.opts.read_only and flags & _WRITE_FLAGS:
            raise FopError(errno.EROFS)
        return await self.child.open(frame, inode, flags, fd)


def _refuse(fop: Fop):
    name = fop.name

    async def refused(self: ReadOnly, frame: Any, *args: Any, **kwargs: Any) -> Any:
        if self.opts.read_only:
            raise FopError(errno.EROFS)
        return await getattr(self.child, name)(frame, *args, **kwargs)
    refused.__name__ = refused.__qualname__ = name
    refused.__doc__ = f"{name}: EROFS when read-only is on, else wound to the child."
    return refused


for _fop in FOPS:
    if _fop.modifies:
        setattr(ReadOnly, _fop.name, _refuse(_fop))
del _fop
