"""md-cache's per-inode record and its choice of cached xattr names.

An :class:`MdState` lives in an inode's context slot of md-cache.  ``inval_gen`` is the
value of md-cache's generation counter when the inode was last invalidated: a reply to a
fop that was wound before that moment may carry the old state and is not cached (the
race GlusterFS guards against with its generation numbers).

The cached :class:`~xlators.core.types.Attr` is the reply's own object, served as it is:
attributes travel through the graph as values nobody changes in place (a translator that
adjusts one, as write-behind does with a size, copies it first).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Optional

from ..core.types import Attr

ACL_XATTRS = (b"system.posix_acl_access", b"system.posix_acl_default")
SELINUX_XATTRS = (b"security.selinux",)
CAPABILITY = b"security.capability"
CAPABILITY_XATTRS = (CAPABILITY,)
IMA_XATTRS = (b"security.ima",)
SWIFT_XATTRS = (b"user.swift.metadata",)
SAMBA_XATTRS = (b"user.DOSATTRIB", b"security.NTACL", b"org.netatalk.Metadata",
                b"org.netatalk.ResourceFork", b"user.DosStream.*")

#: A cached "no such attribute" (ENODATA) answer.
ABSENT = None


class MdState:
    """What md-cache knows about one inode."""
    __slots__ = ("attr", "attr_time", "xattrs", "xattr_time", "inval_gen", "names",
                 "absent", "data_version", "passthrough_writers")

    def __init__(self, attr: Optional[Attr] = None, attr_time: float = 0.0) -> None:
        self.attr = attr
        self.attr_time = attr_time
        self.xattrs: dict[bytes, Optional[bytes]] = {}
        self.xattr_time = 0.0
        self.inval_gen = 0
        # for a directory: name -> (ino, time cached) of entries seen in replies
        self.names: dict[bytes, tuple[int, float]] = {}
        # for a directory: (name, time) of the last name a lookup found missing.  Only
        # said to unlink/rmdir/rename (no inode of md-cache's can be displaced by it),
        # never served: negative lookups are nl-cache's.
        self.absent: Optional[tuple[bytes, float]] = None
        # (mtime, ctime, size) at the last open: what the kernel's page cache was filled
        # from.  Kept across invalidations (it describes the kernel, not this cache).
        self.data_version: Optional[tuple[int, int, int]] = None
        # open fds whose writes the kernel does itself (FUSE passthrough): while there is
        # one, size and times change without a fop, so nothing cached is served but an
        # absent security.capability (which no write can make).
        self.passthrough_writers = 0

    def drop(self, gen: int, names: bool = False) -> None:
        """Forget attributes and xattrs (and, with ``names``, a directory's entries) as
        of generation ``gen``."""
        self.attr = None
        if self.xattrs:
            self.xattrs.clear()
        if names:
            self.names.clear()
            self.absent = None
        self.inval_gen = gen

    def dump(self) -> dict[str, Any]:
        return {"attr": self.attr is not None, "xattrs": len(self.xattrs),
                "names": len(self.names)}


class XattrSelection:
    """Which xattr names md-cache caches, from its options."""

    def __init__(self, opts: Any) -> None:
        exact: set[bytes] = set()
        patterns: list[bytes] = []
        groups = ((opts.cache_posix_acl, ACL_XATTRS), (opts.cache_selinux, SELINUX_XATTRS),
                  (opts.cache_capability_xattrs, CAPABILITY_XATTRS),
                  (opts.cache_ima_xattrs, IMA_XATTRS),
                  (opts.cache_swift_metadata, SWIFT_XATTRS),
                  (opts.cache_samba_metadata, SAMBA_XATTRS))
        names = [n for on, group in groups if on for n in group]
        names += [w.strip().encode() for w in opts.xattr_cache_list.split(",") if w.strip()]
        for n in names:
            (patterns.append(n) if b"*" in n else exact.add(n))
        self.exact = frozenset(exact)
        self.patterns = tuple(patterns)

    def __contains__(self, name: bytes) -> bool:
        if name in self.exact:
            return True
        return bool(self.patterns) and any(fnmatch.fnmatchcase(name, p)
                                           for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.exact or self.patterns)
