"""storage/gfapi's data fops through libgfapi's *_async calls (gfapi_async), on real
bricks: results and errors come back through the callback, a cancelled call answers at
once and its late answer is dropped, a missing symbol falls back to the worker threads."""
from __future__ import annotations

import errno
import os
import signal

import pytest
import trio
import trio.testing

from tests.gluster.conftest import gfapi_volfile
from xlators.core.graph import Graph
from xlators.core.inode import Fd

DATA_CALLS = {"glfs_pread_async", "glfs_pwrite_async", "glfs_fsync_async",
              "glfs_fdatasync_async", "glfs_discard_async"}


def brick_files(bricks, rel: str) -> list:
    return [b.directory / rel for b in bricks.bricks]


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` stopped (a SIGSTOP takes effect per thread, later)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state not in "tT":
            return False
    return True


async def freeze(bricks) -> None:
    for b in bricks.bricks:
        os.kill(b.proc.pid, signal.SIGSTOP)
    with trio.fail_after(30):
        while not all(_stopped(b.proc.pid) for b in bricks.bricks):
            await trio.sleep(0.01)


async def test_data_fops_go_through_the_async_calls(h, bricks):
    gf = h.top
    assert set(gf._async) == DATA_CALLS          # a client volfile: async-io auto is on
    before = gf._async_calls.calls
    fd = await h.create("/async")
    data = os.urandom(300_000)
    assert await h.write(fd, data, 0) == len(data)
    assert await h.read(fd, 131072, 4096) == data[4096:4096 + 131072]
    assert await h.read(fd, 10_000, len(data) - 100) == data[-100:]     # short at EOF
    assert await h.read(fd, 10, len(data) + 5) == b""
    await h.top.fsync(h.frame(), fd, 0)
    await h.top.fsync(h.frame(), fd, 1)
    await h.top.fallocate(h.frame(), fd, 0x01 | 0x02, 0, 8192)          # punch: discard
    want = b"\0" * 8192 + data[8192:]
    assert await h.read(fd, len(data), 0) == want
    assert gf._async_calls.calls - before == 8
    assert gf._async_calls.in_flight == 0
    await h.close(fd)
    for p in brick_files(bricks, "async"):
        assert p.read_bytes() == want


async def test_errors_come_back_through_the_callback(h):
    fd = await h.create("/async-wronly")
    await h.write(fd, b"x" * 100, 0)
    wronly = Fd(fd.inode)
    await h.top.open(h.frame(), fd.inode, os.O_WRONLY, wronly)
    calls = h.top._async_calls.calls
    with pytest.raises(OSError) as ei:
        await h.read(wronly, 10, 0)
    assert ei.value.errno == errno.EBADF
    assert h.top._async_calls.calls == calls + 1       # it was the async read
    await h.close(wronly)
    await h.close(fd)


async def test_the_loop_thread_winds_as_the_caller(h, monkeypatch):
    """libgfapi takes the identity from the winding thread: the loop sets the
    caller's before each *_async call."""
    from xlators.storage import gfapi_binding
    seen = []
    real = gfapi_binding.set_credentials

    def record(uid, gid, groups):
        seen.append(((uid, gid, groups), __import__("threading").get_ident()))
        real(uid, gid, groups)
    monkeypatch.setattr(gfapi_binding, "set_credentials", record)
    fd = await h.create("/async-creds", 0o666)
    seen.clear()
    user = h.frame(uid=1000, gid=1000, groups=(1000, 2000))
    await h.top.writev(user, fd, b"abc", 0)
    assert seen == [((1000, 1000, (1000, 2000)), __import__("threading").get_ident())]
    assert gfapi_binding._thread_creds.value == (1000, 1000, (1000, 2000))
    await h.close(fd)


async def test_a_missing_async_symbol_falls_back_to_the_workers(h, monkeypatch):
    from xlators.storage import gfapi_binding as b
    # the binding loads without an *_async symbol the library lacks
    monkeypatch.setitem(b.ASYNC_PROTOTYPES, "glfs_not_in_this_library_async",
                        b.ASYNC_PROTOTYPES["glfs_fsync_async"])
    assert "glfs_not_in_this_library_async" not in b._load().async_calls
    # this library without glfs_pread_async: reads go to the worker threads
    gf = h.top
    fd = await h.create("/async-fallback")
    monkeypatch.delitem(b.lib.async_calls, "glfs_pread_async")
    gf._choose_async()
    try:
        assert "glfs_pread_async" not in gf._async
        calls = gf._async_calls.calls
        await h.write(fd, b"fallback", 0)
        assert gf._async_calls.calls == calls + 1          # the write: async
        assert await h.read(fd, 100, 0) == b"fallback"
        assert gf._async_calls.calls == calls + 1          # the read: a worker
    finally:
        monkeypatch.undo()
        gf._choose_async()
    assert "glfs_pread_async" in gf._async
    await h.close(fd)


def test_async_io_option_decides_per_form():
    from xlators.storage import gfapi_binding
    from xlators.storage.gfapi import Gfapi

    def chosen(**opts):
        gf = Gfapi("gv", options=opts)
        gf._b = gfapi_binding
        gf._choose_async()
        return set(gf._async)
    assert chosen(volfile="/x.vol") == set(gfapi_binding.lib.async_calls)
    assert chosen(volfile="/x.vol", **{"async-io": "off"}) == set()
    # glusterd may send a new graph: the first call after it migrates the open files
    # on the calling thread, so auto keeps the loop out of it
    assert chosen(**{"volfile-server": "h", "volume": "v"}) == set()
    assert chosen(**{"volfile-server": "h", "volume": "v", "async-io": "on"}) == \
        set(gfapi_binding.lib.async_calls)


def test_a_callback_after_its_run_ended_or_unknown_is_harmless():
    from xlators.storage import gfapi_async

    async def register():
        call = gfapi_async._Call(bytearray(10), None)
        gfapi_async._calls[10**12] = call
        return call
    call = trio.run(register)
    gfapi_async.CALLBACK(None, 7, None, None, 10**12)     # the run is over
    assert 10**12 not in gfapi_async._calls and not call.done
    gfapi_async.CALLBACK(None, 7, None, None, 10**12 + 1)   # never registered
    gfapi_async.CALLBACK(None, -1, None, None, None)


async def test_cancelled_async_read_answers_at_once_late_answer_dropped(tmp_path):
    """Both bricks frozen (SIGSTOP): an async read waits; cancelled (what an interrupt
    does), it returns at once; its buffer stays with libgfapi's call; closing the file
    waits for the answer (libgfapi would drop it for a closed glfs_fd); the bricks back,
    the late answer comes and is dropped, and the file reads right."""
    from tests.gluster.bricks import Bricks
    from xlators.storage import gfapi_async
    from xlators.testing import Harness
    with Bricks(tmp_path / "b", 2, "late", ping_timeout=30) as bricks:
        g = Graph.from_text(gfapi_volfile(bricks.client_volfile, tmp_path / "c.log"))
        g.init()
        g.activate()
        frozen = False
        try:
            h = Harness(g)
            gf = h.top
            fd = await h.create("/f")
            await h.write(fd, b"data" * 1000, 0)
            of = fd.ctx[gf]
            frozen = True
            await freeze(bricks)
            abandoned = gf._async_calls.abandoned
            with trio.move_on_after(0.5) as scope:
                await h.read(fd, 4096, 0)
            assert scope.cancelled_caught
            assert gf._async_calls.abandoned == abandoned + 1
            assert of.in_flight == 1
            kept = [c.keep for c in gfapi_async._calls.values() if c.abandoned]
            assert len(kept) == 1 and len(kept[0]) == 4096     # the buffer lives on
            closed = trio.Event()
            async with trio.open_nursery() as nursery:
                async def close():
                    await h.close(fd)
                    closed.set()
                nursery.start_soon(close)
                await trio.testing.wait_all_tasks_blocked()
                assert not closed.is_set() and of.drained is not None
                for b in bricks.bricks:
                    os.kill(b.proc.pid, signal.SIGCONT)
                frozen = False
                with trio.fail_after(60):
                    await closed.wait()
            assert of.in_flight == 0
            assert not any(c.abandoned for c in gfapi_async._calls.values())
            assert await h.read_file("/f") == b"data" * 1000
        finally:
            if frozen:
                for b in bricks.bricks:
                    os.kill(b.proc.pid, signal.SIGCONT)
            g.fini()
