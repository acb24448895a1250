"""INIT flags that depend on what the graph's storage can do (POSIX_ACL with DONT_MASK,
HANDLE_KILLPRIV_V2), and the kernel's per-request hints that reach translators: the
KILL_SUIDGID bits of OPEN, CREATE and WRITE (as ``frame.xdata[KILL_SUIDGID]``) and the
exec-open bit of OPEN's flags (``O_EXEC_OPEN``)."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from fuse_bridge import abi
from fuse_bridge.options import BridgeOptions
from xlators.core.graph import Graph
from xlators.core.registry import Registry
from xlators.core.types import KILL_SUIDGID, O_EXEC_OPEN
from xlators.storage.memory import Memory
from tests.protocol.kernel import ALL_FLAGS, ALL_FLAGS2, cstr, serve

I = abi.InitFlag
O = abi.Opcode
STORAGE_FLAGS = I.POSIX_ACL | I.DONT_MASK | I.HANDLE_KILLPRIV_V2


class Capable(Memory):
    """storage/memory declaring both storage capabilities, recording what each OPEN,
    CREATE and WRITE was told."""
    type = "test/capable-memory"
    posix_acl = True
    kills_privileges = True

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.seen: list[tuple[str, int, bool]] = []

    def _note(self, op: str, frame, flags: int) -> None:
        self.seen.append((op, flags, bool(frame.xdata.get(KILL_SUIDGID))))

    async def open(self, frame, inode, flags, fd):
        self._note("open", frame, flags)
        return await super().open(frame, inode, flags & ~O_EXEC_OPEN, fd)

    async def create(self, frame, loc, flags, mode, umask, fd):
        self._note("create", frame, flags)
        return await super().create(frame, loc, flags, mode, umask, fd)

    async def writev(self, frame, fd, data, offset, flags=None):
        self._note("write", frame, 0)
        return await super().writev(frame, fd, data, offset, flags)


def graph(leaf: str) -> Graph:
    r = Registry(load_entrypoints=False)
    r.register(Capable, "tests.protocol")
    g = Graph.from_text(f"volume s\n    type {leaf}\n    option size 1GB\nend-volume\n",
                        registry=r)
    g.init()
    g.activate()
    return g


@pytest.mark.parametrize("leaf,opts,want", [
    ("test/capable-memory", BridgeOptions(acl=True), STORAGE_FLAGS),
    ("test/capable-memory", BridgeOptions(), I.HANDLE_KILLPRIV_V2),   # ACLs: --acl only
    ("test/capable-memory", BridgeOptions(acl=True, default_permissions=False),
     I.HANDLE_KILLPRIV_V2),                 # ACLs are the kernel's check: it needs them
    ("storage/memory", BridgeOptions(), 0),  # memory declares neither
])
async def test_storage_flags_follow_the_graph(leaf, opts, want):
    async with serve(graph(leaf), opts, init=False) as (k, s):
        out = (await k.init(flags=ALL_FLAGS, flags2=ALL_FLAGS2)).init()
        got = abi.init_flags_join(out.flags, out.flags2) & STORAGE_FLAGS
        assert got == want


async def test_umask_reaches_the_storage_only_with_dont_mask():
    for leaf, umask in (("test/capable-memory", 0o077), ("storage/memory", 0)):
        async with serve(graph(leaf), BridgeOptions(acl=True), init=False) as (k, s):
            await k.init(flags=ALL_FLAGS, flags2=ALL_FLAGS2)
            e = (await k.mkdir(1, b"d", 0o777, umask=0o077)).entry()
            assert stat.S_IMODE(e.attr.mode) == 0o777 & ~umask


@pytest.mark.parametrize("acl", [False, True])
async def test_acl_xattrs_refused_without_acl(acl):
    """Without --acl the kernel would store system.posix_acl_* but never enforce them:
    the bridge refuses them before the graph; with --acl they reach the storage."""
    g = graph("test/capable-memory")
    reached = []

    async def getxattr(frame, inode, name):
        reached.append(name)
        raise OSError(errno.ENODATA, "no ACL")
    g.top.getxattr = getxattr
    async with serve(g, BridgeOptions(acl=acl), init=False) as (k, s):
        await k.init(flags=ALL_FLAGS, flags2=ALL_FLAGS2)
        name = b"system.posix_acl_access"
        r = await k.call(O.GETXATTR, abi.GETXATTR_IN.pack(0) + cstr(name), 1)
        assert r.errno == (errno.ENODATA if acl else errno.EOPNOTSUPP)
        assert reached == ([name] if acl else [])
        if not acl:
            r = await k.call(O.REMOVEXATTR, cstr(name), 1)
            assert r.errno == errno.EOPNOTSUPP


async def test_kill_suidgid_and_exec_hints_reach_the_translator():
    g = graph("test/capable-memory")
    leaf = g.top
    async with serve(g, init=False) as (k, s):
        await k.init(flags=ALL_FLAGS, flags2=ALL_FLAGS2)
        e, o = (await k.create(1, b"f")).create()
        (await k.write(e.nodeid, o.fh, b"x")).ok()
        (await k.write(e.nodeid, o.fh, b"y", write_flags=abi.WriteFlag.KILL_SUIDGID)).ok()
        (await k.release(e.nodeid, o.fh)).ok()
        kill = int(abi.OpenInFlag.KILL_SUIDGID)
        for flags, open_flags in ((os.O_RDWR | os.O_TRUNC, kill), (os.O_RDWR, 0),
                                  (os.O_RDONLY | O_EXEC_OPEN, 0)):
            r = await k.call(O.OPEN, abi.OPEN_IN.pack(flags, open_flags), e.nodeid)
            (await k.release(e.nodeid, r.open().fh)).ok()
        r = await k.call(O.CREATE, abi.CREATE_IN.pack(os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                                                      stat.S_IFREG | 0o644, 0o022, kill)
                         + cstr(b"f"), 1)
        (await k.release(e.nodeid, r.create()[1].fh)).ok()
    seen = [(op, flags & (O_EXEC_OPEN | os.O_TRUNC), killed) for op, flags, killed in leaf.seen]
    assert seen == [("create", 0, False), ("write", 0, False), ("write", 0, True),
                    ("open", os.O_TRUNC, True), ("open", 0, False),
                    ("open", O_EXEC_OPEN, False), ("create", os.O_TRUNC, True)]
