"""fuse_bridge.meta_host: the Host the bridge gives meta/meta, and meta loaded on top."""
from __future__ import annotations

import json

import trio

from fuse_bridge import abi
from fuse_bridge.cli import _LEVELS, VERSION, _bridge_state
from fuse_bridge.meta_host import META_VOLUME, BridgeHost, add_meta
from fuse_bridge.meta_host import attach as attach_host
from xlators.core.graph import Graph
from xlators.core.host import Host

from tests.protocol.kernel import MEMORY_VOL, cstr, memory_graph, serve

O = abi.Opcode


def attach(session):
    return attach_host(session, version=VERSION, levels=_LEVELS, state=_bridge_state)


def host_of(session) -> BridgeHost:
    return BridgeHost(session, version=VERSION, levels=_LEVELS, state=_bridge_state)


def test_add_meta_puts_meta_on_top_once(tmp_path):
    g = add_meta(Graph.from_text(MEMORY_VOL))
    assert g.top.name == META_VOLUME and g.top.type == "meta/meta"
    assert [c.name for c in g.top.children] == ["memory"]
    assert META_VOLUME in g.added_volumes      # not the file's: SIGHUP compares without it
    assert add_meta(g) is g                   # a graph with meta gets no second one


async def test_pending_requests_say_where_they_wait():
    graph = memory_graph("test/gate")
    gate = graph.xlators["gate"]
    async with serve(graph) as (k, s):
        host = attach(s)
        assert host.version == VERSION
        assert isinstance(host, Host) and graph.host is host and host in graph.listeners
        unique = await k.send(O.LOOKUP, cstr(b"slow"), 1)
        while not gate.waiting:
            await trio.sleep(0.01)
        (req,) = [r for r in host.pending_requests() if r.unique == unique]
        assert req.opcode == "LOOKUP" and req.nodeid == 1 and req.pid == k.pid
        assert req.where == ("gate",)
        # code objects carry their qualified name from Python 3.11 (PyPy 3.9: "wait")
        waited = "Event.wait" if hasattr(trio.Event.wait.__code__, "co_qualname") else "wait"
        assert waited in req.waiting_on and req.age > 0.0            # it waited
        assert not req.interrupted
        await k.send(O.INTERRUPT, abi.INTERRUPT_IN.pack(unique), 0, unique=unique | 1)
        await trio.sleep(0.05)
        (req,) = [r for r in host.pending_requests() if r.unique == unique]
        assert req.interrupted
        gate.gate_open.set()
        assert (await k.recv()).unique == unique
        assert host.pending_requests() == []


async def test_host_state_options_and_log_level():
    async with serve() as (k, s):
        host = host_of(s)
        state = host.state()
        assert {"inodes", "open-fds", "requests", "in-flight"} <= set(state)
        assert host.options()["attribute_timeout"] == s.opts.attribute_timeout
        await k.call(O.MKDIR, abi.MKDIR_IN.pack(0o755, 0) + cstr(b"d"), 1)
        e = (await k.lookup(1, b"d")).entry()
        assert host.entry_name(e.nodeid) == (1, b"d")
        assert host.entry_name(12345) is None
        import logging
        root = logging.getLogger()
        old = root.level
        try:
            host.set_log_level("debug")
            assert root.level == logging.DEBUG and host.log_level() == "DEBUG"
            host.set_log_level("NONE")
            assert host.log_level() == "NONE"
            try:
                host.set_log_level("LOUD")
            except ValueError as exc:
                assert "LOUD" in str(exc)
            else:
                raise AssertionError("an unknown level was accepted")
        finally:
            root.setLevel(old)


async def test_setting_trace_level_logs_every_request_from_then_on(caplog):
    """.meta/logging set to TRACE at run time: the session starts tracing (the daemon's
    use of fuse_bridge.trace_log.install)."""
    import logging
    from fuse_bridge.trace_log import is_traced
    root = logging.getLogger()
    old = root.level
    async with serve() as (k, s):
        host = host_of(s)
        try:
            assert not is_traced(s.dump)
            host.set_log_level("TRACE")
            assert is_traced(s.dump)
            (await k.getattr(1)).attr()
        finally:
            root.setLevel(old)
    lines = [r.getMessage() for r in caplog.records if r.name == "xlfs.fuse.trace"]
    assert any(line.startswith("R GETATTR ") for line in lines), lines
    assert any(line.startswith("W GETATTR ") for line in lines), lines


async def test_statedump_is_written_from_a_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("XLFS_DUMP_DIR", str(tmp_path))
    async with serve() as (k, s):
        path = await host_of(s).statedump()
    text = open(path).read()
    assert path.startswith(str(tmp_path)) and "[fuse]" in text and "inodes=" in text
    json.dumps(text)       # plain text
