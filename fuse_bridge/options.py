"""Options of the FUSE bridge (GlusterFS's client flags), separate from the graph's.

``--xlator-option`` configures the graph; everything here configures the bridge.  Defaults
are GlusterFS's, except ``invalidate_limit``: GlusterFS's 0 means "unbounded", which grew a
queue to hundreds of gigabytes (GlusterFS issue #3553); xlfs bounds the notification queue
at 4096 by default and counts what it had to drop (see docs/deadlocks.md).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Union

DEFAULT_INVALIDATE_LIMIT = 4096


@dataclass
class BridgeOptions:
    attribute_timeout: float = 1.0
    entry_timeout: float = 1.0
    negative_timeout: float = 0.0
    direct_io_mode: Union[bool, str, None] = None   # None/"auto": per file (translator hint)
    use_readdirp: bool = True
    fopen_keep_cache: Optional[bool] = None
    kernel_writeback_cache: bool = False
    fuse_passthrough: str = "no"    # auto|yes|no (fuse_bridge.passthrough)
    lru_limit: int = 65536
    invalidate_limit: int = DEFAULT_INVALIDATE_LIMIT
    background_qlen: int = 64
    congestion_threshold: int = 48
    reader_thread_count: int = 1
    idle_readers: int = 4           # parked readers kept per channel; more exit
    dump_fuse: Optional[str] = None
    fuse_mountopts: str = ""
    flush_handle_interrupt: bool = False
    setlk_handle_interrupt: bool = False
    read_only: bool = False
    auto_invalidation: bool = True
    default_permissions: bool = True
    acl: bool = False               # POSIX ACLs (GlusterFS's --acl / -o acl)
    allow_other: bool = True
    max_write: int = 1 << 20
    fsname: str = "xlfs"
    subtype: str = "xlfs"

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def mount_options(self) -> list[str]:
        opts = []
        if self.default_permissions:
            opts.append("default_permissions")
        if self.allow_other:
            opts.append("allow_other")
        opts += [o for o in self.fuse_mountopts.split(",") if o]
        if self.read_only:
            opts.append("ro")            # last: a later "rw" must not undo --read-only
        return opts
