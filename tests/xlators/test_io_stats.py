"""debug/io-stats: counts, bytes, errors, latency, dumps."""
from __future__ import annotations

import errno
import json
import logging
import math

import pytest
import trio
import trio.testing

from xlators import FOPS, Event, Frame
from xlators.core.inode import Inode
from xlators.debug import io_stats as io_stats_mod
from xlators.debug.io_stats import IoStats
from xlators.testing import Harness, RecordingLeaf, check_passthrough


def stack(**options: str) -> Harness:
    return Harness.stack("debug/io-stats", options={"debug/io-stats": {
        k.replace("_", "-"): v for k, v in options.items()}})


@pytest.fixture
def fake_ns(monkeypatch):
    """perf_counter_ns advancing 5 µs per call: every fop takes exactly 5 µs."""
    state = {"t": 0}

    def fake() -> int:
        state["t"] += 5000
        return state["t"]
    monkeypatch.setattr(io_stats_mod, "perf_counter_ns", fake)
    return state


async def test_passes_everything_through_unchanged():
    assert await check_passthrough(IoStats) == []          # every fop is wrapped
    leaf = RecordingLeaf()
    xl = IoStats("io", [leaf], {"latency-measurement": "on"}, itable=leaf.itable)
    for fop in FOPS:
        leaf.calls.clear()
        frame = Frame(unique=3)
        args = tuple(Inode(5, 5) if p == "inode" else object() for p in fop.params)
        assert await getattr(xl, fop.name)(frame, *args) is leaf.result
        (name, got_frame, got_args, _), = leaf.calls
        assert name == fop.name and got_frame is frame and got_args == args
    # forget_needs_context: io-stats keeps nothing per inode, forget passes it by uncounted
    assert all(xl.stats(f.name).count == (f.name != "forget") for f in FOPS)


async def test_counts_bytes_and_errors():
    h = stack()
    fd = await h.create("/f")
    for i in range(3):
        await h.write(fd, b"x" * 100, i * 100)
    assert await h.read(fd, 1000) == b"x" * 300
    await h.read(fd, 10, 5000)                              # 0 bytes at EOF
    for _ in range(2):
        with pytest.raises(OSError):
            await h.lookup("/missing")
    xl: IoStats = h.top
    assert xl.stats("writev").count == 3 and xl.stats("readv").count == 2
    assert xl.stats("create").count == 1
    assert xl.bytes_written == 300 and xl.bytes_read == 300
    assert xl.write_sizes == {7: 3}                        # 100 bytes: the 64-128 bucket
    look = xl.stats("lookup")
    assert look.count == 2 and look.errors == 2 and look.errnos == {errno.ENOENT: 2}
    assert look.lat_n == 0                                 # latency-measurement off
    d = xl.dump()
    assert d["writev.count"] == 3 and d["bytes_written"] == 300
    assert d["lookup.errnos"] == "ENOENT:2" and d["write_sizes"] == "64-128b:3"
    assert "writev.latency_avg_us" not in d


async def test_latency_min_avg_max_and_histogram(fake_ns):
    h = stack(latency_measurement="on")
    fd = await h.create("/f")
    await h.write(fd, b"abc")
    await h.write(fd, b"abc")
    s = h.top.stats("writev")
    assert s.lat_n == 2 and s.lat_min == s.lat_max == 5000 and s.lat_total == 10000
    assert sum(s.hist) == 2 and s.hist[(5).bit_length()] == 2       # the 4-8 µs bucket
    d = h.top.dump()
    assert d["writev.latency_avg_us"] == 5.0 and d["writev.histogram_us"] == "4-8:2"
    j = json.loads(h.top.dump_json())
    assert j["fops"]["writev"]["latency_us"]["max"] == 5.0
    assert j["fops"]["writev"]["histogram_us"] == {"4-8": 2}
    text = h.top.dump_text()
    assert "WRITEV" in text and "CREATE" in text and "Data Written: 6 bytes" in text
    assert "5.00 us" in text


async def test_latencies_past_the_last_bucket_are_shown_in_it(monkeypatch):
    """The request path files a latency in its own log2 bucket (up to 54 for any 64-bit
    nanosecond count); the dumps show 48 buckets, the last one holding everything
    above, with min and max exact."""
    steps = iter([0, 2 ** 50 * 1000, 0, 2 ** 47 * 1000, 0, 3000])
    monkeypatch.setattr(io_stats_mod, "perf_counter_ns", lambda: next(steps))
    h = stack(latency_measurement="on")
    h.top.reset()
    xl: IoStats = h.top
    for _ in range(3):
        await xl.getattr(Frame(), h.itable.root)
    s = xl.stats("getattr")
    assert s.lat_n == 3 and s.lat_min == 3000 and s.lat_max == 2 ** 50 * 1000
    top = f"{1 << 46}-{1 << 47}"
    assert xl.dump()["getattr.histogram_us"] == f"2-4:1,{top}:2"
    assert json.loads(xl.dump_json())["fops"]["getattr"]["histogram_us"] == {"2-4": 1,
                                                                            top: 2}


async def test_count_fop_hits_off_and_reset():
    h = stack(count_fop_hits="off")
    await h.write_file("/f", b"12345")
    assert h.top.stats("writev").count == 0 and h.top.bytes_written == 5
    h.top.reconfigure({"count-fop-hits": "on", "latency-measurement": "on"})
    await h.stat("/f")
    getattr_stats = h.top.stats("getattr")            # the root's and the file's
    assert getattr_stats.count == 2 and getattr_stats.lat_n == 2
    h.top.reset()
    assert h.top.stats("getattr").count == 0 and h.top.bytes_written == 0
    assert json.loads(h.top.dump_json())["fops"] == {}


async def test_cancelled_calls_are_timed_not_counted_as_errors(fake_ns):
    class Slow(RecordingLeaf):
        async def flush(self, frame, fd):
            await trio.sleep(100)

    leaf = Slow()
    xl = IoStats("io", [leaf], {"latency-measurement": "on"}, itable=leaf.itable)
    with trio.move_on_after(0.01):
        await xl.flush(Frame(), object())
    s = xl.stats("flush")
    assert s.count == 1 and s.errors == 0 and s.lat_n == 1


@pytest.mark.parametrize("latency", ["on", "off"])
async def test_failures_by_errno_in_both_modes(fake_ns, latency):
    """An OSError counts under its errno (EIO when it has none), any other exception
    under EIO, and each is timed when latency is measured; the exception goes on up."""
    raised = [FileNotFoundError(errno.ENOENT, "x"), OSError("no errno"),
              ValueError("a bug below"), OSError(errno.ENODATA, "y")]

    class Failing(RecordingLeaf):
        async def getxattr(self, frame, inode, name):
            raise raised.pop(0)

    leaf = Failing()
    xl = IoStats("io", [leaf], {"latency-measurement": latency}, itable=leaf.itable)
    caught = []
    for _ in range(4):
        with pytest.raises(Exception) as info:
            await xl.getxattr(Frame(), Inode(5, 5), "user.x")
        caught.append(type(info.value))
    assert caught == [FileNotFoundError, OSError, ValueError, OSError]
    s = xl.stats("getxattr")
    assert s.count == 4 and s.errors == 4
    assert s.errnos == {errno.ENOENT: 1, errno.EIO: 2, errno.ENODATA: 1}
    assert s.lat_n == (4 if latency == "on" else 0)


class Dumps:
    """``xl.dump_now`` wrapped, so the test follows the periodic dump step by step:
    ``started()`` gives trio's time when the next dump began and whether ``path``
    existed then (waiting at most 60 s of the mock clock: the loop's own timer, nothing
    else, decides that), ``finished()`` waits until it is written (by a worker thread;
    no timer of the test's races it).  The file is looked at only in the loop's task
    before the dump's thread starts, or after ``finished()``: once ``started()`` has
    returned, the thread may already have written it (``thread_timing`` "worker-first")."""

    def __init__(self, xl: IoStats, monkeypatch, path) -> None:
        self._start_send, self._starts = trio.open_memory_channel(math.inf)
        self._end_send, self._ends = trio.open_memory_channel(math.inf)
        real = xl.dump_now

        async def dump_now() -> None:
            self._start_send.send_nowait((trio.current_time(), path.exists()))
            await real()
            self._end_send.send_nowait(None)
        monkeypatch.setattr(xl, "dump_now", dump_now)

    async def started(self) -> tuple[float, bool]:
        with trio.fail_after(60):
            return await self._starts.receive()

    async def finished(self) -> None:
        await self._ends.receive()

    def begun(self) -> int:
        """How many dumps began that ``started()`` has not taken."""
        return self._starts.statistics().current_buffer_used


async def test_periodic_dump_to_a_file(tmp_path, autojump_clock, monkeypatch, thread_timing):
    path = tmp_path / "stats.json"
    h = stack(ios_dump_interval="10s", ios_dump_file=str(path))
    await h.write_file("/f", b"abc")                       # started without a nursery: ok
    assert h.top._dumper is None
    dumps = Dumps(h.top, monkeypatch, path)
    async with trio.open_nursery() as nursery:
        h.attach_nursery(nursery)
        up = trio.current_time()
        h.top.notify(Event.CHILD_UP, None, h.top.child)    # the graph is up
        # one interval after, not before; the dump is the first to write the file
        assert await dumps.started() == (up + 10, False)
        await dumps.finished()
        data = json.loads(path.read_text())
        assert data["bytes_written"] == 3 and data["fops"]["writev"]["count"] == 1
        changed = trio.current_time()
        h.top.reconfigure({"ios-dump-interval": "10s", "ios-dump-file": str(path),
                           "ios-dump-format": "text"})
        assert await dumps.started() == (changed + 10, True)
        await dumps.finished()
        assert "Data Written: 3 bytes" in path.read_text()
        h.fini()                                           # stops the dumper
        await trio.testing.wait_all_tasks_blocked()
        assert h.top._dumper is None
        await trio.sleep(100)
        assert dumps.begun() == 0                          # no dump came any more


async def test_periodic_dump_to_the_log(caplog, autojump_clock):
    caplog.set_level(logging.INFO, logger="xlfs")
    h = stack(ios_dump_interval="1m", ios_dump_format="text")
    async with trio.open_nursery() as nursery:
        h.attach_nursery(nursery)
        h.top.notify(Event.CHILD_UP, None, h.top.child)
        h.top.notify(Event.CHILD_UP, None, h.top.child)    # only one dumper
        await trio.sleep(61)
        assert caplog.text.count("io-stats of io-stats") == 1
        h.top.reconfigure({"ios-dump-interval": "0"})      # off: the loop ends
        await trio.sleep(120)
        assert caplog.text.count("io-stats of io-stats") == 1


def test_options():
    xl = IoStats("io", [RecordingLeaf()], {})
    assert xl.opts.latency_measurement is False and xl.opts.count_fop_hits is True
    assert xl.opts.ios_dump_interval == 0 and xl.opts.ios_dump_format == "json"
    with pytest.raises(ValueError, match="ios-dump-format"):
        IoStats("io", [RecordingLeaf()], {"ios-dump-format": "xml"})
