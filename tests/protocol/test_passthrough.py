"""FUSE passthrough on the wire (fuse_bridge/passthrough.py), with the fake kernel.

INIT: PASSTHROUGH and max_stack_depth only when asked for, offered and allowed by the
graph; never together with WRITEBACK_CACHE.  OPEN/CREATE: FOPEN_PASSTHROUGH and one
backing id per inode, unregistered at the last RELEASE; the kernel's io-mode rule (never
cached and passthrough opens of one inode at once); fallback when the kernel refuses.
The device ioctls are replaced by a recorder where the fake device cannot answer them.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fuse_bridge import abi
from fuse_bridge.options import BridgeOptions
from fuse_bridge.passthrough import MAX_STACK_DEPTH, Passthrough
from tests.protocol.kernel import ALL_FLAGS, serve
from xlators.core.graph import Graph

I = abi.InitFlag
F = abi.FopenFlag
OFFER2 = int(I.PASSTHROUGH) >> 32          # the flags2 bit of PASSTHROUGH


def posix_graph(brick: Path, *over: str) -> Graph:
    text = f"volume posix\n    type storage/posix\n    option directory {brick}\nend-volume\n"
    below = "posix"
    for i, t in enumerate(over):
        name = f"x{i}"
        text += f"\nvolume {name}\n    type {t}\n    subvolumes {below}\nend-volume\n"
        below = name
    g = Graph.from_text(text)
    g.init()
    g.activate()
    return g


def flags_of(init_out: abi.InitOut) -> int:
    return abi.init_flags_join(init_out.flags, init_out.flags2)


class Backings:
    """Records the BACKING_OPEN/CLOSE ioctls a session makes (the fake device has none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[int] = []
        self.closed: list[int] = []
        self.refuse = False
        rec = self

        def backing_open(pt: Passthrough, brick_fd: int) -> int:
            os.fstat(brick_fd)                     # a live descriptor of the brick file
            if rec.refuse:
                raise OSError(errno.ELOOP, "Too many levels of symbolic links")
            rec.opened.append(brick_fd)
            return len(rec.opened)

        def backing_close(pt: Passthrough, backing_id: int) -> None:
            rec.closed.append(backing_id)

        monkeypatch.setattr(Passthrough, "backing_open", backing_open)
        monkeypatch.setattr(Passthrough, "backing_close", backing_close)


def opts(mode: str, **kw) -> BridgeOptions:
    return BridgeOptions(fuse_passthrough=mode, **kw)


async def test_not_offered_falls_back(tmp_path: Path) -> None:
    """A kernel without FUSE_PASSTHROUGH: auto mounts without it and opens are cached."""
    async with serve(posix_graph(tmp_path, "features/locks"), opts("auto")) as (k, s):
        out = k.init_reply
        assert not flags_of(out) & I.PASSTHROUGH and out.max_stack_depth == 0
        state = s.dump_state()              # why, for .meta/root/private and xlfsctl
        assert state["passthrough.enabled"] is False
        assert "the kernel does not offer FUSE_PASSTHROUGH" in state["passthrough.declined"]
        e, o = (await k.create(1, b"f")).create()
        assert not o.open_flags & F.PASSTHROUGH and o.backing_id == 0
        (await k.write(e.nodeid, o.fh, b"data")).ok()
        assert (await k.read(e.nodeid, o.fh, 4)).ok().body == b"data"
        (await k.release(e.nodeid, o.fh)).ok()


async def test_yes_without_the_kernel_fails_init(tmp_path: Path) -> None:
    async with serve(posix_graph(tmp_path), opts("yes"), init=False) as (k, s):
        r = await k.init()
        assert r.errno == errno.EOPNOTSUPP
        await s.ended.wait()
        assert "--fuse-passthrough=yes: the kernel does not offer" in s.client.passthrough.failure


async def test_offered_and_allowed(tmp_path: Path, monkeypatch) -> None:
    rec = Backings(monkeypatch)
    graph = posix_graph(tmp_path, "features/locks", "debug/io-stats")
    async with serve(graph, opts("auto"), flags=ALL_FLAGS, flags2=OFFER2) as (k, s):
        out = k.init_reply
        assert flags_of(out) & I.PASSTHROUGH and out.max_stack_depth == MAX_STACK_DEPTH
        state = s.dump_state()
        assert state["passthrough.enabled"] is True
        assert state["passthrough.declined"] is None
        e, o = (await k.create(1, b"f")).create()
        assert o.open_flags & F.PASSTHROUGH and o.backing_id == 1
        o2 = (await k.open(e.nodeid, os.O_RDONLY)).open()
        assert o2.open_flags & F.PASSTHROUGH and o2.backing_id == 1   # one per inode
        assert len(rec.opened) == 1
        (await k.release(e.nodeid, o.fh)).ok()
        assert rec.closed == []
        (await k.release(e.nodeid, o2.fh)).ok()
        assert rec.closed == [1]                   # the last release unregisters it
        o3 = (await k.open(e.nodeid)).open()
        assert o3.backing_id == 2 and len(rec.opened) == 2
        (await k.release(e.nodeid, o3.fh)).ok()
        assert rec.closed == [1, 2]


async def test_passthrough_reply_drops_flags_the_kernel_refuses_with_it(
        tmp_path: Path, monkeypatch) -> None:
    """md-cache asks for KEEP_CACHE on a re-open of an unchanged file; the kernel fails a
    passthrough open carrying it (EIO on a real mount), so the reply leaves it out."""
    Backings(monkeypatch)
    graph = posix_graph(tmp_path, "features/locks", "performance/md-cache")
    async with serve(graph, opts("yes"), flags=ALL_FLAGS, flags2=OFFER2) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        o2 = (await k.open(e.nodeid, os.O_RDONLY)).open()
        o3 = (await k.open(e.nodeid, os.O_RDONLY)).open()   # unchanged: keep_cache hint
        for out in (o, o2, o3):
            assert out.open_flags & F.PASSTHROUGH, out
            assert not out.open_flags & (F.KEEP_CACHE | F.CACHE_DIR), out
        for out in (o, o2, o3):
            (await k.release(e.nodeid, out.fh)).ok()
    async with serve(posix_graph(tmp_path, "performance/md-cache"), opts("no"),
                     flags=ALL_FLAGS, flags2=OFFER2) as (k, s):
        e = (await k.lookup(1, b"f")).entry()
        for _ in range(2):
            o = (await k.open(e.nodeid, os.O_RDONLY)).open()
            (await k.release(e.nodeid, o.fh)).ok()
        assert o.open_flags & F.KEEP_CACHE             # the hint itself is still given


async def test_noatime_opens_stay_in_the_graph(tmp_path: Path, monkeypatch) -> None:
    """The kernel opens the backing file with the caller's flags, never the noatime
    mount's O_NOATIME: such opens are served through the graph (reads keep the brick's
    atime); an inode already in passthrough keeps it (the kernel's io-mode rule)."""
    rec = Backings(monkeypatch)
    async with serve(posix_graph(tmp_path), opts("yes"), flags=ALL_FLAGS,
                     flags2=OFFER2) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        (await k.release(e.nodeid, o.fh)).ok()
        o1 = (await k.open(e.nodeid, os.O_RDONLY | os.O_NOATIME)).open()
        assert not o1.open_flags & F.PASSTHROUGH and o1.backing_id == 0
        (await k.release(e.nodeid, o1.fh)).ok()
        o2 = (await k.open(e.nodeid, os.O_RDONLY)).open()
        assert o2.open_flags & F.PASSTHROUGH
        o3 = (await k.open(e.nodeid, os.O_RDONLY | os.O_NOATIME)).open()
        assert o3.open_flags & F.PASSTHROUGH and o3.backing_id == o2.backing_id
        for out in (o2, o3):
            (await k.release(e.nodeid, out.fh)).ok()
        assert s.client.passthrough.stats["noatime_cached"] == 1
        assert len(rec.opened) == 2


async def test_writeback_cache_is_not_asked_with_it(tmp_path: Path, monkeypatch) -> None:
    """The kernel does not use both: ``yes`` drops an asked-for writeback cache, ``auto``
    keeps it and does without passthrough, ``no`` keeps it."""
    Backings(monkeypatch)
    o = opts("yes", kernel_writeback_cache=True)
    async with serve(posix_graph(tmp_path), o, flags=ALL_FLAGS, flags2=OFFER2) as (k, s):
        got = flags_of(k.init_reply)
        assert got & I.PASSTHROUGH and not got & I.WRITEBACK_CACHE
    for mode in ("auto", "no"):
        async with serve(posix_graph(tmp_path), opts(mode, kernel_writeback_cache=True),
                         flags=ALL_FLAGS, flags2=OFFER2) as (k, s):
            got = flags_of(k.init_reply)
            assert got & I.WRITEBACK_CACHE and not got & I.PASSTHROUGH, mode
            assert k.init_reply.max_stack_depth == 0
            assert ("--fuse-passthrough=no" if mode == "no" else "--kernel-writeback-cache") \
                in s.dump_state()["passthrough.declined"], mode
    async with serve(posix_graph(tmp_path), opts("auto"), flags=ALL_FLAGS,
                     flags2=OFFER2) as (k, s):
        assert flags_of(k.init_reply) & I.PASSTHROUGH


@pytest.mark.parametrize("mode", ["no", "auto"])
async def test_not_asked_when_off_or_blocked(tmp_path: Path, monkeypatch, mode) -> None:
    """``no``, or a stack with a translator that must see data (write-behind): no
    PASSTHROUGH at INIT, no backing registered, READ reaches the graph."""
    rec = Backings(monkeypatch)
    over = ("performance/write-behind",) if mode == "auto" else ()
    async with serve(posix_graph(tmp_path, *over), opts(mode), flags=ALL_FLAGS,
                     flags2=OFFER2) as (k, s):
        assert not flags_of(k.init_reply) & I.PASSTHROUGH
        assert k.init_reply.max_stack_depth == 0
        declined = s.dump_state()["passthrough.declined"]
        assert declined == ("--fuse-passthrough=no" if mode == "no" else
                            "volume 'x0' (performance/write-behind) may change or must "
                            "see file data"), declined
        e, o = (await k.create(1, b"f")).create()
        assert not o.open_flags & F.PASSTHROUGH and o.backing_id == 0
        (await k.release(e.nodeid, o.fh)).ok()
    assert rec.opened == []


async def test_refused_registration_serves_through_the_graph(tmp_path: Path,
                                                             monkeypatch) -> None:
    """The kernel refuses the brick file (e.g. a stacked brick filesystem): that file is
    opened cached, and stays so while cached opens exist (the kernel's io modes)."""
    rec = Backings(monkeypatch)
    rec.refuse = True
    async with serve(posix_graph(tmp_path), opts("yes"), flags=ALL_FLAGS,
                     flags2=OFFER2) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        assert not o.open_flags & F.PASSTHROUGH
        (await k.write(e.nodeid, o.fh, b"through the graph")).ok()
        rec.refuse = False
        o2 = (await k.open(e.nodeid)).open()
        assert not o2.open_flags & F.PASSTHROUGH, "cached and passthrough at once"
        assert rec.opened == []
        (await k.release(e.nodeid, o.fh)).ok()
        (await k.release(e.nodeid, o2.fh)).ok()
        o3 = (await k.open(e.nodeid)).open()          # no cached open left
        assert o3.open_flags & F.PASSTHROUGH and o3.backing_id == 1
        (await k.release(e.nodeid, o3.fh)).ok()
    assert (tmp_path / "f").read_bytes() == b"through the graph"


async def test_real_ioctl_on_a_non_fuse_device_falls_back(tmp_path: Path) -> None:
    """The unpatched ioctl against the fake device (a socket) fails: per-file fallback."""
    async with serve(posix_graph(tmp_path), opts("auto"), flags=ALL_FLAGS,
                     flags2=OFFER2) as (k, s):
        assert flags_of(k.init_reply) & I.PASSTHROUGH
        e, o = (await k.create(1, b"f")).create()
        assert not o.open_flags & F.PASSTHROUGH and o.backing_id == 0
        (await k.write(e.nodeid, o.fh, b"abc")).ok()
        assert (await k.read(e.nodeid, o.fh, 3)).ok().body == b"abc"
        (await k.release(e.nodeid, o.fh)).ok()
        assert s.client.passthrough.stats["refused"] == 1


async def test_direct_io_open_without_a_backing_has_no_io_mode(tmp_path: Path,
                                                               monkeypatch) -> None:
    """--direct-io-mode=yes: FOPEN_DIRECT_IO overrides passthrough for read and write in
    the kernel, so nothing is registered."""
    rec = Backings(monkeypatch)
    async with serve(posix_graph(tmp_path), opts("auto", direct_io_mode=True),
                     flags=ALL_FLAGS, flags2=OFFER2) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        assert o.open_flags & F.DIRECT_IO and not o.open_flags & F.PASSTHROUGH
        (await k.release(e.nodeid, o.fh)).ok()
    assert rec.opened == []


async def test_inode_in_passthrough_stays_so_until_its_last_close(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """When the graph stops handing over a file (a graph switch) while the inode is open
    in passthrough, new opens still use its backing: the kernel fails a cached open of
    such an inode with EIO.  After the last close the graph's answer holds."""
    rec = Backings(monkeypatch)
    graph = posix_graph(tmp_path)
    async with serve(graph, opts("auto"), flags=ALL_FLAGS, flags2=OFFER2) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        assert o.open_flags & F.PASSTHROUGH
        monkeypatch.setattr(type(graph.top), "passthrough_fd", lambda self, fd: None)
        o2 = (await k.open(e.nodeid)).open()
        assert o2.open_flags & F.PASSTHROUGH and o2.backing_id == o.backing_id
        (await k.release(e.nodeid, o.fh)).ok()
        (await k.release(e.nodeid, o2.fh)).ok()
        assert rec.closed == [o.backing_id]
        o3 = (await k.open(e.nodeid)).open()
        assert not o3.open_flags & F.PASSTHROUGH and o3.backing_id == 0
        (await k.release(e.nodeid, o3.fh)).ok()
