"""FOPEN_NOFLUSH on the wire, with the fake kernel: OPEN and CREATE replies carry it
exactly when no translator of the graph needs FLUSH (``Translator.needs_flush``, lock
handling included), the kernel speaks 7.35 or later and no writeback cache was
negotiated (the kernel ignores the flag then); never on OPENDIR.  A graph switch to a
graph that needs FLUSH, or a reconfigure that makes a translator need it, gives exactly
the files opened with NOFLUSH one flush at their RELEASE."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import pytest

from fuse_bridge import abi
from fuse_bridge.graph_switch import switch_graph
from fuse_bridge.options import BridgeOptions
from fuse_bridge.passthrough import Passthrough
from tests.protocol.kernel import ALL_FLAGS, serve
from xlators.core.graph import Graph
from xlators.core.registry import Registry
from xlators.core.translator import Translator
from xlators.core.volfile import parse_volfile

I = abi.InitFlag
F = abi.FopenFlag


class FlushLog(Translator):
    """Passes everything on and records every flush and release it sees (needs FLUSH,
    as any translator that declares nothing)."""
    type = "test/flush-log"
    seen: list = []

    async def flush(self, frame: Any, fd: Any) -> None:
        FlushLog.seen.append(("flush", fd.inode.nodeid, frame.lk_owner))
        await self.child.flush(frame, fd)

    async def release(self, frame: Any, fd: Any) -> None:
        FlushLog.seen.append(("release", fd.inode.nodeid))
        await self.child.release(frame, fd)


def _registry() -> Registry:
    r = Registry()
    r.register(FlushLog, "tests.protocol.test_noflush")
    return r


Layer = Union[str, tuple[str, dict[str, str]]]


def stack(brick: Path, *layers: Layer) -> str:
    """posix, and ``layers`` over it: a type, or (type, options)."""
    text = f"volume posix\n    type storage/posix\n    option directory {brick}\nend-volume\n"
    below = "posix"
    for i, layer in enumerate(layers):
        t, options = (layer, {}) if isinstance(layer, str) else layer
        lines = "".join(f"    option {k} {v}\n" for k, v in options.items())
        text += f"\nvolume x{i}\n    type {t}\n{lines}    subvolumes {below}\nend-volume\n"
        below = f"x{i}"
    return text


def running(text: str) -> Graph:
    g = Graph(parse_volfile(text, "test.vol"), registry=_registry())
    g.init()
    g.activate()
    return g


async def opened_flags(brick: Path, *layers: Layer, options: Optional[BridgeOptions] = None,
                       **init_kw: Any) -> tuple[int, int, int]:
    """(CREATE's, OPEN's, OPENDIR's) open_flags on a fresh session over ``layers``."""
    async with serve(running(stack(brick, *layers)), options, **init_kw) as (k, s):
        e, created = (await k.create(1, b"f")).create()
        opened = (await k.open(e.nodeid, os.O_RDONLY)).open()
        d = (await k.opendir(1)).open()
        for fh in (created.fh, opened.fh):
            (await k.release(e.nodeid, fh)).ok()
        return created.open_flags, opened.open_flags, d.open_flags


@pytest.fixture
def brick(tmp_path: Path) -> Path:
    d = tmp_path / "brick"
    d.mkdir()
    return d


@pytest.mark.parametrize("layers", [(), ("performance/md-cache",),
                                    ("debug/io-stats", "performance/open-behind",
                                     "performance/io-cache", "performance/md-cache"),
                                    ("cluster/distribute",)],
                         ids=["posix", "md-cache", "caches+io-stats", "distribute"])
async def test_no_translator_needs_flush(brick: Path, layers) -> None:
    created, opened, opendir = await opened_flags(brick, *layers)
    assert created & F.NOFLUSH and opened & F.NOFLUSH
    assert not opendir & F.NOFLUSH                   # directories: no FLUSH anyway


@pytest.mark.parametrize("layer", ["features/locks", "performance/write-behind",
                                   "debug/trace", "debug/delay-gen",
                                   ("debug/error-gen", {"failure": "100", "enable": "flush"}),
                                   "test/flush-log"])
async def test_a_translator_that_needs_flush_keeps_it(brick: Path, layer: Layer) -> None:
    created, opened, _ = await opened_flags(brick, "performance/md-cache", layer)
    assert not created & F.NOFLUSH and not opened & F.NOFLUSH


@pytest.mark.parametrize("layer", [
    ("debug/trace", {"include-ops": "create,writev,release"}),
    ("debug/trace", {"exclude-ops": "flush"}),
    ("debug/trace", {"log-file": "no"}),
    "debug/error-gen",                                     # failure unset: fails nothing
    ("debug/error-gen", {"failure": "100", "enable": "unlink"}),
    ("debug/delay-gen", {"enable": "readv,writev"}),
    ("debug/delay-gen", {"delay-percentage": "0"}),
])
async def test_debug_translators_need_flush_only_when_their_options_say(
        brick: Path, layer: Layer) -> None:
    created, opened, _ = await opened_flags(brick, "performance/md-cache", layer)
    assert created & F.NOFLUSH and opened & F.NOFLUSH


async def test_locks_negotiated_keep_flush(brick: Path) -> None:
    """The kernel releases a closing owner's POSIX locks only through FLUSH."""
    async with serve(running(stack(brick, "features/locks"))) as (k, s):
        got = abi.init_flags_join(k.init_reply.flags, k.init_reply.flags2)
        assert got & I.POSIX_LOCKS
        _, o = (await k.create(1, b"f")).create()
        assert not o.open_flags & F.NOFLUSH
        assert s.client.dump()["flush"] == ("sent (needed by volume 'x0' (features/locks): "
                                            "handles locks)")


async def test_not_with_the_kernel_writeback_cache(brick: Path) -> None:
    """The kernel ignores NOFLUSH with its writeback cache (FLUSH writes the dirty pages
    back first): it is not given then, and is when the kernel did not grant the cache."""
    wb = BridgeOptions(kernel_writeback_cache=True)
    created, opened, _ = await opened_flags(brick, options=wb, flags=ALL_FLAGS)
    assert not created & F.NOFLUSH and not opened & F.NOFLUSH
    created, _, _ = await opened_flags(brick, options=wb,
                                       flags=ALL_FLAGS & ~int(I.WRITEBACK_CACHE))
    assert created & F.NOFLUSH


async def test_not_before_protocol_7_35(brick: Path) -> None:
    created, opened, _ = await opened_flags(brick, minor=34)
    assert not created & F.NOFLUSH and not opened & F.NOFLUSH
    created, _, _ = await opened_flags(brick, minor=35)
    assert created & F.NOFLUSH


async def test_statedump_says_why(brick: Path) -> None:
    async with serve(running(stack(brick, "performance/md-cache"))) as (k, s):
        assert s.client.dump()["flush"].startswith("skipped (FOPEN_NOFLUSH")
    async with serve(running(stack(brick, "performance/write-behind"))) as (k, s):
        assert s.client.dump()["flush"] == ("sent (needed by volume 'x0' "
                                            "(performance/write-behind): needs flush)")
    async with serve(running(stack(brick)), minor=30) as (k, s):
        assert s.client.dump()["flush"] == "sent (the kernel speaks 7.30, NOFLUSH is 7.35)"


async def test_passthrough_replies_keep_noflush(brick: Path, monkeypatch) -> None:
    """The kernel accepts NOFLUSH beside FOPEN_PASSTHROUGH (its FOPEN_PASSTHROUGH_MASK)."""
    monkeypatch.setattr(Passthrough, "backing_open", lambda pt, fd: 1)
    monkeypatch.setattr(Passthrough, "backing_close", lambda pt, backing_id: None)
    offer2 = int(I.PASSTHROUGH) >> 32
    created, opened, _ = await opened_flags(
        brick, "performance/md-cache", options=BridgeOptions(fuse_passthrough="yes"),
        flags=ALL_FLAGS, flags2=offer2)
    for flags in (created, opened):
        assert flags & F.PASSTHROUGH and flags & F.NOFLUSH, flags


async def test_switch_to_a_graph_that_needs_flush(brick: Path) -> None:
    """Files opened with NOFLUSH get one flush at their RELEASE on the new graph; files
    opened after the switch get FLUSH from the kernel (no second one at release)."""
    FlushLog.seen.clear()
    async with serve(running(stack(brick, "performance/md-cache"))) as (k, s):
        e, before = (await k.create(1, b"f")).create()
        assert before.open_flags & F.NOFLUSH
        d = (await k.opendir(1)).open()
        assert await switch_graph(s, parse_volfile(stack(brick, "test/flush-log"), "n.vol"),
                                  registry=_registry())
        assert s.client.flush_at_release() == 1            # the directory is not counted
        assert s.client.dump()["flush-at-release"] == 1
        after = (await k.open(e.nodeid)).open()
        assert not after.open_flags & F.NOFLUSH
        (await k.flush(e.nodeid, after.fh, lock_owner=7)).ok()   # the kernel's, at close
        (await k.release(e.nodeid, after.fh)).ok()
        assert FlushLog.seen == [("flush", e.nodeid, 7), ("release", e.nodeid)]
        FlushLog.seen.clear()
        (await k.release(e.nodeid, before.fh)).ok()
        assert FlushLog.seen == [("flush", e.nodeid, 0), ("release", e.nodeid)]
        assert "flush-at-release" not in s.client.dump()
        (await k.call(abi.Opcode.RELEASEDIR, abi.RELEASE_IN.pack(d.fh, 0, 0, 0), 1)).ok()


async def test_switches_back_and_forth_flush_exactly_the_noflush_opens(
        brick: Path) -> None:
    """No flush graph, FLUSH graph, back, FLUSH again: at the end, the file opened with
    NOFLUSH on the first graph gets one flush at its RELEASE; the one opened on the
    first FLUSH graph (the kernel flushes it at its closes) and the one opened after
    the last switch get none."""
    flushing = parse_volfile(stack(brick, "test/flush-log"), "n.vol")
    async with serve(running(stack(brick))) as (k, s):
        e, noflush = (await k.create(1, b"f")).create()
        assert await switch_graph(s, flushing, registry=_registry())
        flushed = (await k.open(e.nodeid)).open()
        assert noflush.open_flags & F.NOFLUSH and not flushed.open_flags & F.NOFLUSH
        assert await switch_graph(s, parse_volfile(stack(brick), "b.vol"),
                                  registry=_registry())
        assert s.client.flush_at_release() == 0
        assert await switch_graph(s, flushing, registry=_registry())
        after = (await k.open(e.nodeid)).open()
        assert not after.open_flags & F.NOFLUSH
        assert s.client.flush_at_release() == 1
        FlushLog.seen.clear()
        for fh in (after.fh, flushed.fh):
            (await k.release(e.nodeid, fh)).ok()
        assert FlushLog.seen == [("release", e.nodeid)] * 2
        FlushLog.seen.clear()
        (await k.release(e.nodeid, noflush.fh)).ok()
        assert FlushLog.seen == [("flush", e.nodeid, 0), ("release", e.nodeid)]


async def test_a_noflush_open_released_on_a_graph_without_flush_needs(brick: Path) -> None:
    """Switched to a graph that needs FLUSH and back before the file is released: the
    graph at RELEASE needs no flush, none is sent."""
    async with serve(running(stack(brick, "performance/md-cache"))) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        assert o.open_flags & F.NOFLUSH
        assert await switch_graph(s, parse_volfile(stack(brick, "test/flush-log"), "n.vol"),
                                  registry=_registry())
        assert await switch_graph(s, parse_volfile(stack(brick, "debug/io-stats"), "b.vol"),
                                  registry=_registry())
        (await k.release(e.nodeid, o.fh)).ok()
        stats = s.graph["x0"].stats
        assert stats("flush").count == 0 and stats("release").count == 1


async def test_reconfigure_that_makes_trace_trace_flush(brick: Path, tmp_path: Path) -> None:
    """SIGHUP with the same stack, trace now tracing flush: opens from then on get
    FLUSH, the file opened before gets one flush at its RELEASE; tracing flush no more
    gives NOFLUSH again.  (trace's history shows the flushes that reached the graph.)"""
    from fuse_bridge.graph_switch import reload
    path = tmp_path / "trace.vol"

    def volfile(ops: str) -> str:
        return stack(brick, ("debug/trace", {"include-ops": ops, "log-file": "no",
                                             "log-history": "on"}))

    def flushes(s: Any) -> list[str]:
        return [line for line in s.graph["x0"].history_lines() if ": flush(" in line]

    path.write_text(volfile("create,release"))
    async with serve(running(path.read_text())) as (k, s):
        e, before = (await k.create(1, b"f")).create()
        assert before.open_flags & F.NOFLUSH
        path.write_text(volfile("flush,release"))
        assert await reload(s, str(path)) == "reconfigured"
        assert s.client.dump()["flush"] == ("sent (needed by volume 'x0' (debug/trace): "
                                            "needs flush)")
        after = (await k.open(e.nodeid)).open()
        assert not after.open_flags & F.NOFLUSH
        assert s.client.flush_at_release() == 1
        (await k.flush(e.nodeid, after.fh, lock_owner=7)).ok()
        (await k.release(e.nodeid, after.fh)).ok()
        assert len(flushes(s)) == 1                         # the kernel's, none more
        (await k.release(e.nodeid, before.fh)).ok()
        assert len(flushes(s)) == 2 and s.client.flush_at_release() == 0
        path.write_text(volfile("create"))
        assert await reload(s, str(path)) == "reconfigured"
        again = (await k.open(e.nodeid)).open()
        assert again.open_flags & F.NOFLUSH
        (await k.release(e.nodeid, again.fh)).ok()


async def test_reconfigure_error_gen_to_fail_flush(brick: Path, tmp_path: Path) -> None:
    """error-gen told to fail flush by a reconfigure: the file opened with NOFLUSH
    before gets its flush at RELEASE, which fails (logged), and the release goes on."""
    from fuse_bridge.graph_switch import reload
    path = tmp_path / "errors.vol"
    path.write_text(stack(brick, ("debug/error-gen", {"failure": "100",
                                                      "enable": "unlink"})))
    async with serve(running(path.read_text())) as (k, s):
        e, before = (await k.create(1, b"f")).create()
        assert before.open_flags & F.NOFLUSH
        path.write_text(stack(brick, ("debug/error-gen", {"failure": "100",
                                                          "enable": "flush"})))
        assert await reload(s, str(path)) == "reconfigured"
        (await k.release(e.nodeid, before.fh)).ok()
        assert s.graph["x0"].injected == {"flush": 1}
        assert s.client.fds == {}


async def test_a_reconfigure_that_fails_part_way_still_decides_flush(
        brick: Path, tmp_path: Path) -> None:
    """error-gen (below) takes its new options, trace (above) then fails to open its new
    log file: the reload fails with a message naming the volume, and the bridge decides
    FLUSH from what the translators now say: error-gen fails flush, so opens get FLUSH
    and the file opened before gets its flush at RELEASE."""
    from fuse_bridge.graph_switch import reload
    path = tmp_path / "partial.vol"

    def volfile(enable: str, log_file: str) -> str:
        return stack(brick, ("debug/error-gen", {"failure": "100", "enable": enable}),
                     ("debug/trace", {"include-ops": "create", "log-file": log_file}))

    path.write_text(volfile("unlink", "no"))
    async with serve(running(path.read_text())) as (k, s):
        e, before = (await k.create(1, b"f")).create()
        assert before.open_flags & F.NOFLUSH
        path.write_text(volfile("flush", str(tmp_path / "missing" / "trace.log")))
        assert await reload(s, str(path)) == "failed"
        assert s.graph["x0"].needs_flush
        after = (await k.open(e.nodeid)).open()
        assert not after.open_flags & F.NOFLUSH
        assert s.client.flush_at_release() == 1
        (await k.release(e.nodeid, before.fh)).ok()
        assert s.graph["x0"].injected == {"flush": 1}
        (await k.release(e.nodeid, after.fh)).ok()


async def test_switch_back_to_a_graph_without_flush_needs(brick: Path) -> None:
    async with serve(running(stack(brick, "test/flush-log"))) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        assert not o.open_flags & F.NOFLUSH
        assert await switch_graph(s, parse_volfile(stack(brick), "n.vol"),
                                  registry=_registry())
        assert s.client.flush_at_release() == 0
        o2 = (await k.open(e.nodeid)).open()
        assert o2.open_flags & F.NOFLUSH
        for fh in (o.fh, o2.fh):
            (await k.release(e.nodeid, fh)).ok()


class FailingFlush(FlushLog):
    """Records like FlushLog; its flush fails (write-behind's recorded write error)."""
    type = "test/failing-flush"

    async def flush(self, frame: Any, fd: Any) -> None:
        FlushLog.seen.append(("flush", fd.inode.nodeid, frame.lk_owner))
        raise OSError(5, "recorded write error")


async def test_release_after_a_switch_releases_when_its_flush_fails(brick: Path) -> None:
    """The flush a RELEASE runs for a file opened with NOFLUSH fails: the release still
    reaches every translator (their descriptors and state of the file go)."""
    FlushLog.seen.clear()
    r = _registry()
    r.register(FailingFlush, "tests.protocol.test_noflush")
    async with serve(running(stack(brick))) as (k, s):
        e, before = (await k.create(1, b"f")).create()
        assert before.open_flags & F.NOFLUSH
        assert await switch_graph(s, parse_volfile(stack(brick, "test/failing-flush"),
                                                   "n.vol"), registry=r)
        (await k.release(e.nodeid, before.fh)).ok()
        assert FlushLog.seen == [("flush", e.nodeid, 0), ("release", e.nodeid)]
        assert s.client.flush_at_release() == 0


async def test_lock_translator_needs_no_flush_when_the_kernel_keeps_locks(
        brick: Path) -> None:
    """A mount that left locks to the kernel (no translator handled them at INIT) and
    then switched to a graph with features/locks: the kernel still keeps the locks,
    so nothing needs FLUSH and files opened on the new graph keep NOFLUSH."""
    async with serve(running(stack(brick))) as (k, s):
        assert not s.client.handles_locks
        assert await switch_graph(s, parse_volfile(stack(brick, "features/locks"),
                                                   "n.vol"), registry=_registry())
        e, o = (await k.create(1, b"f")).create()
        assert o.open_flags & F.NOFLUSH
        assert s.client.dump()["flush"].startswith("skipped")
        (await k.release(e.nodeid, o.fh)).ok()
    async with serve(running(stack(brick, "features/locks"))) as (k, s):
        assert s.client.handles_locks
        e, o = (await k.create(1, b"g")).create()
        assert not o.open_flags & F.NOFLUSH
        assert "handles locks" in s.client.dump()["flush"]
        (await k.release(e.nodeid, o.fh)).ok()
