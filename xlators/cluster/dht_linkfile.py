"""cluster/distribute: link files, the pointers from a name's hashed child to its data.

A file whose data is not on the child its name hashes to (renamed into another hash range,
created while the hashed child was full, not yet moved by a rebalance) has a *link file* on
the hashed child: a symbolic link whose target is ``LINK_PREFIX`` followed by the decimal
index of the child holding the data.  A symlink (rather than GlusterFS's sticky, empty
regular file with an xattr) costs one create and no attribute write, and readdir can tell
it from a data file by its entry type alone (only DT_LNK entries need a readlink).  Such a
target is reserved: cluster/distribute refuses to create user symlinks with it.
"""
from __future__ import annotations

import stat
from typing import Any, Optional

LINK_PREFIX = b"\x01xlfs-dht-linkto\x01"
_SIZES = range(len(LINK_PREFIX) + 1, len(LINK_PREFIX) + 5)


def link_target(child: int) -> bytes:
    return LINK_PREFIX + b"%d" % child


def parse_target(target: bytes) -> Optional[int]:
    """The child index a link file points to, or None for any other symlink target."""
    if not target.startswith(LINK_PREFIX):
        return None
    rest = target[len(LINK_PREFIX):]
    return int(rest) if rest.isdigit() and len(rest) < 4 else None


def may_be_linkfile(attr: Any) -> bool:
    """Cheap pre-check on attributes: only these need a readlink to decide."""
    return stat.S_ISLNK(attr.mode) and attr.size in _SIZES
