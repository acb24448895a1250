"""Reading one child's copy of a directory to its end, entry by entry: what self-heal
(the names to heal), distribute's rmdir (are only link files left?) and rebalance (the
entries to move) do below the cluster translator, outside any request's own listing.

    async with aclosing(dir_entries(child, frame, inode, plus=True)) as entries:
        async for de in entries:
            ...

``aclosing`` releases the directory as soon as the loop ends, a ``break`` included.
"""
from __future__ import annotations

import os
from typing import Any, AsyncIterator

from ..core.inode import Fd
from ..core.types import DirEntry

#: Entries asked for by one readdir(p) call.
BATCH = 1 << 16


async def dir_entries(child: Any, frame: Any, inode: Any, *,
                      plus: bool = False) -> AsyncIterator[DirEntry]:
    """Every entry of directory ``inode`` on ``child`` but "." and "..": opendir, then
    readdir (readdirp when ``plus``) in batches until one comes back empty, then
    releasedir."""
    fd = Fd(inode, os.O_RDONLY, is_dir=True)
    await child.opendir(frame, inode, fd)
    read = child.readdirp if plus else child.readdir
    try:
        offset = 0
        while True:
            batch = await read(frame, fd, offset, BATCH)
            if not batch:
                return
            for de in batch:
                offset = de.off
                if de.name not in (b".", b".."):
                    yield de
    finally:
        await child.releasedir(frame, fd)
