"""Messages a translator sends up to the bridge with ``Translator.upcall()``.

The FUSE bridge turns them into kernel notifications (INVAL_INODE, INVAL_ENTRY, DELETE,
STORE) written by its notification thread; elsewhere they are ignored.  Sending never
blocks and never waits for the kernel: see docs/deadlocks.md.
"""
from __future__ import annotations

from typing import NamedTuple


class InvalidateInode(NamedTuple):
    """Drop cached attributes (and data in [offset, offset+length); length 0 = all,
    offset -1 = attributes only)."""
    inode: object
    offset: int = 0
    length: int = 0


class InvalidateEntry(NamedTuple):
    """Drop the cached dentry ``name`` in directory ``parent``."""
    parent: object
    name: bytes


class DeleteEntry(NamedTuple):
    """``name`` in ``parent`` (which was ``child``) is gone."""
    parent: object
    child: object
    name: bytes


class StoreData(NamedTuple):
    """Put ``data`` into the kernel's page cache of ``inode`` at ``offset``."""
    inode: object
    offset: int
    data: bytes
