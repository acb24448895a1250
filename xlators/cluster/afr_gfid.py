"""cluster/replicate's file identity: one gfid per file, the same on every child.

The children of a replica each number their files their own way (two posix bricks give
the same file two different inode numbers), but the kernel must see one number per file,
stable across reads from either child and across restarts.  So replicate gives every
file a gfid (16 random bytes, like GlusterFS's) stored in the ``trusted.xlfs.gfid``
extended attribute on every child, set when the file is created (or, for a file found
on a brick without one, when it is first looked up), and copied by self-heal.  The
inode number the kernel sees is derived from the gfid: its last 8 bytes, big-endian,
with the top bit cleared (the ``ino`` key of the graph's inode table).  The root
directory has the fixed gfid ``00..01`` and inode number 1.
"""
from __future__ import annotations

import uuid

GFID_XATTR = b"trusted.xlfs.gfid"
ROOT_GFID = bytes(15) + b"\x01"
ROOT_INO = 1
_INO_MASK = (1 << 63) - 1


def new_gfid() -> bytes:
    """A fresh random gfid (never the root's)."""
    while True:
        g = uuid.uuid4().bytes
        if ino_of(g) != ROOT_INO:
            return g


def ino_of(gfid: bytes) -> int:
    """The inode number the kernel sees for ``gfid`` (never 0)."""
    if gfid == ROOT_GFID:
        return ROOT_INO
    ino = int.from_bytes(gfid[8:16], "big") & _INO_MASK
    return ino if ino > ROOT_INO else ino + 2


def valid_gfid(value: bytes) -> bool:
    return len(value) == 16 and value != bytes(16)
