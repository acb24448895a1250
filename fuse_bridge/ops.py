"""Handlers of the session's own requests: INIT (the negotiation), DESTROY, FORGET,
BATCH_FORGET, INTERRUPT and SYNCFS.  The opcode table is fuse_bridge.opcodes."""
from __future__ import annotations

import errno
import logging

from . import abi, forget_backlog
from .client import FuseClient
from .interrupt import Request
from .passthrough import Passthrough

log = logging.getLogger("xlfs.fuse")
_I = abi.InitFlag
_FORGET_IN = abi.FORGET_IN.unpack_from

# What we ask for when the kernel offers it (more is added from options in init()).
_WANTED = (_I.ASYNC_READ | _I.ATOMIC_O_TRUNC | _I.BIG_WRITES | _I.HAS_IOCTL_DIR
           | _I.ASYNC_DIO | _I.PARALLEL_DIROPS | _I.MAX_PAGES | _I.CACHE_SYMLINKS
           | _I.SETXATTR_EXT | _I.INIT_EXT | _I.EXPORT_SUPPORT)


async def init(c: FuseClient, req: Request, body: memoryview) -> None:
    s = req.session
    major, minor, max_readahead, kflags, kflags2 = abi.decode_init_in(body)
    if major < abi.KERNEL_VERSION:
        log.error("INIT: kernel protocol %d.%d is too old", major, minor)
        raise OSError(71, "protocol error")  # EPROTO
    if major > abi.KERNEL_VERSION:
        # Tell the kernel our major; it sends INIT again with ours.
        s.reply(req, abi.INIT_OUT.pack(abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION,
                                       *([0] * 11))[:abi.FUSE_COMPAT_INIT_OUT_SIZE])
        return None
    if minor < abi.MIN_MINOR:
        log.error("INIT: kernel protocol 7.%d is older than 7.%d", minor, abi.MIN_MINOR)
        raise OSError(71, "protocol error")
    offered = abi.init_flags_join(kflags, kflags2)
    o = c.opts
    wanted = _WANTED
    if o.use_readdirp:
        wanted |= _I.DO_READDIRPLUS | _I.READDIRPLUS_AUTO
    if o.kernel_writeback_cache:
        wanted |= _I.WRITEBACK_CACHE
    if o.auto_invalidation:
        wanted |= _I.AUTO_INVAL_DATA
    if c.handles_locks:
        wanted |= _I.POSIX_LOCKS | _I.FLOCK_LOCKS
    wanted |= _storage_flags(c)
    pt = c.passthrough = Passthrough(s.devfd, o.fuse_passthrough)
    wanted = pt.negotiate(int(offered), int(wanted), c.graph, o.kernel_writeback_cache)
    if pt.failure:
        s.end(pt.failure)                 # the cli reports it and unmounts
        raise OSError(errno.EOPNOTSUPP, pt.failure)   # the kernel fails the mount
    flags = int(offered & wanted)
    pt.settle(flags)
    proto_minor = min(minor, abi.KERNEL_MINOR_VERSION)
    max_pages = 0
    max_write = c.max_write
    if flags & _I.MAX_PAGES:
        max_pages = max(1, min(max_write // abi.PAGE_SIZE, abi.MAX_PAGES_LIMIT))
        max_write = max_pages * abi.PAGE_SIZE
    else:
        max_write = min(max_write, abi.MAX_PAGES_DEFAULT * abi.PAGE_SIZE)
    c.negotiated(flags, proto_minor, max_write)
    f1, f2 = abi.init_flags_split(flags)
    out = abi.INIT_OUT.pack(abi.KERNEL_VERSION, proto_minor, max_readahead, f1,
                            o.background_qlen, o.congestion_threshold, max_write, 1,
                            max_pages, 0, f2, pt.max_stack_depth, 0)
    log.info("INIT: kernel 7.%d, speaking 7.%d; max_write %d; flags %s", minor,
             proto_minor, max_write, _flag_names(flags))
    s.reply(req, out[:abi.init_out_size(proto_minor)])
    s.init_complete()
    return None


def _storage_flags(c: FuseClient) -> int:
    """What every storage translator of the graph must do for these flags to be asked
    for: POSIX ACLs (with ``--acl``; ``posix_acl``: system.posix_acl_* xattrs that govern permissions, a
    directory's default ACL replacing the umask, which the server then applies:
    DONT_MASK; the kernel also needs default_permissions), and clearing set-id bits and
    security.capability on write, truncate and chown (``kills_privileges``)."""
    flags = 0
    if c.opts.acl and c.opts.default_permissions and c.graph.posix_acl():
        flags |= _I.POSIX_ACL | _I.DONT_MASK
    if c.graph.kills_privileges():
        flags |= _I.HANDLE_KILLPRIV_V2
    return flags


def _flag_names(flags: int) -> str:
    return ",".join(f.name for f in _I if f.value & flags and not f.value & (f.value - 1)
                    and f.name) or "none"


async def destroy(c: FuseClient, req: Request, body: memoryview) -> None:
    await c.apply_forgets()
    req.session.reply(req, None)
    req.session.end("DESTROY from the kernel")


async def forget(c: FuseClient, req: Request, body: memoryview) -> None:
    """Recorded, applied when the device is idle (fuse_bridge.forget_backlog)."""
    (n,) = _FORGET_IN(body)
    c.defer_forgets(iter(((req.nodeid, n),)), 1)
    if c.lru_limit and c.inodes_held > c.lru_limit \
            or c.forgets_pending > forget_backlog.HELD_MAX:     # (_bound_backlog's tests)
        await _bound_backlog(c)
    forget_backlog.deferred(req.session)


async def batch_forget(c: FuseClient, req: Request, body: memoryview) -> None:
    """Recorded (the entries' bytes, copied: the read buffer is reused), applied when
    the device is idle (fuse_bridge.forget_backlog)."""
    (count,) = abi.BATCH_FORGET_IN.unpack_from(body)
    off = abi.BATCH_FORGET_IN.size
    one = abi.FORGET_ONE
    if len(body) < off + count * one.size:
        raise ValueError(f"count {count} needs {off + count * one.size} bytes of body, "
                         f"it has {len(body)}")
    c.defer_forgets(one.iter_unpack(bytes(body[off:off + count * one.size])), count)
    await _bound_backlog(c)
    forget_backlog.deferred(req.session)


async def _bound_backlog(c: FuseClient) -> None:
    """At most HELD_MAX forgets wait, and none while the table is past the LRU limit
    (the LRU is evicting: the forgets it asked for free the descriptors it wants)."""
    if c.lru_limit and c.inodes_held > c.lru_limit:
        await c.apply_forgets()
    else:
        over = c.forgets_pending - forget_backlog.HELD_MAX
        if over > 0:
            await c.apply_forgets(over)


async def interrupt(c: FuseClient, req: Request, body: memoryview) -> None:
    (target,) = abi.INTERRUPT_IN.unpack_from(body)
    req.session.interrupts.interrupt(target)


async def syncfs(c: FuseClient, req: Request, body: memoryview) -> None:
    return None
