"""debug/trace: a line per call and per result, named as in the fop table."""
from __future__ import annotations

import logging

import pytest
import trio

from xlators import FOPS, Frame, Translator
from xlators.debug import trace as trace_mod
from xlators.debug.trace import Trace
from xlators.testing import Harness, RecordingLeaf, check_passthrough


def make(options=None, leaf=None) -> Trace:
    leaf = leaf or RecordingLeaf()
    xl = Trace("trace", [leaf], options or {}, itable=leaf.itable)
    xl.init()
    return xl


def traced(**options: str) -> Harness:
    return Harness.stack("debug/trace", options={"debug/trace": {
        k.replace("_", "-"): v for k, v in options.items()}})


@pytest.fixture
def info(caplog):
    caplog.set_level(logging.INFO, logger="xlfs")
    return caplog


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "xlfs.debug/trace.trace"]


async def test_passes_everything_through_unchanged(info):
    assert await check_passthrough(Trace) == []          # every fop is wrapped
    leaf = RecordingLeaf()
    xl = make(leaf=leaf)
    for fop in FOPS:
        leaf.calls.clear()
        frame = Frame(unique=11)
        args = tuple(object() for _ in fop.params)
        assert await getattr(xl, fop.name)(frame, *args) is leaf.result
        (name, got_frame, got_args, _), = leaf.calls
        assert name == fop.name and got_frame is frame and got_args == args
    assert len(lines(info)) == 2 * len(FOPS)


async def test_call_and_result_lines_with_table_names(info):
    h = traced()
    fd = await h.create("/f")
    info.clear()
    fr = h.frame()
    await h.top.writev(fr, fd, b"abc", 0, 0)
    call, result = lines(info)
    assert call.startswith(f"{fr.unique}: writev(fd=<Fd ")
    assert "data=b'abc', offset=0, flags=0)" in call
    assert result == f"{fr.unique}: writev => 3"
    info.clear()
    await h.top.readv(h.frame(), fd, 3, 0)                # flags omitted: not shown
    call, result = lines(info)
    assert call.endswith("size=3, offset=0)") and result.endswith("readv => b'abc'")
    info.clear()
    await h.write(fd, bytes(5000))
    assert "data=<5000 bytes>" in lines(info)[0]


async def test_errors_are_logged_with_errno(info):
    h = traced()
    with pytest.raises(OSError):
        await h.lookup("/missing")
    assert lines(info)[-1].endswith("lookup => op_ret=-1 op_errno=2 (ENOENT)")
    assert "name=b'missing'" in lines(info)[-2]


async def test_include_and_exclude(info):
    h = traced(include_ops="lookup,WRITE")
    fd = await h.create("/f")
    await h.write(fd, b"x")
    await h.lookup("/f")
    assert {l.split(": ", 1)[1].split("(")[0].split(" ")[0] for l in lines(info)} == {
        "writev", "lookup"}
    info.clear()
    h = traced(exclude="lookup,getattr")
    await h.stat("/")
    await h.mkdir("/d")
    assert lines(info) and all("lookup" not in l and "getattr" not in l for l in lines(info))
    with pytest.raises(ValueError, match="only one"):
        make({"include-ops": "lookup", "exclude-ops": "flush"})
    xl = make({"include": "flush,lk,setlk", "exclude": ""})   # GlusterFS sample volfile
    assert xl._traced == {"flush", "lk"}
    with pytest.raises(ValueError, match="only one"):
        xl.reconfigure({"include": "flush", "exclude": "lk"})
    assert xl._traced == {"flush", "lk"} and xl.opts.include_ops == {"flush", "lk"}
    xl.reconfigure({"exclude-ops": "flush"})
    assert "flush" not in xl._traced and "lookup" in xl._traced


async def test_history_ring_buffer_in_dump(info):
    xl = make({"log-history": "on", "history-size": "3", "log-file": "no"})
    for i in range(5):
        await xl.access(Frame(unique=100 + i), object(), 4)
    assert lines(info) == []                               # log-file no: not logged
    hist = xl.history_lines()
    dump = xl.dump()
    assert dump["history-size"] == 3 and dump["history.2"] == hist[2]
    assert len(hist) == 3
    bare = [line.split(" ", 2)[2] for line in hist]        # after "YYYY-mm-dd HH:MM:SS "
    assert bare[0].startswith("103: access => ")
    assert bare[1].startswith("104: access(inode=<object") and bare[1].endswith(", mask=4)")
    assert bare[2].startswith("104: access => ")
    xl.reconfigure({"log-history": "on", "history-size": "10", "log-file": "no"})
    assert len(xl.history_lines()) == 3 and xl.history.maxlen == 10
    assert "history.0" not in make({"log-history": "off"}).dump()


async def test_log_file_path(tmp_path, info):
    path = tmp_path / "trace.log"
    xl = make({"log-file": str(path)})
    await xl.statfs(Frame(unique=8), object())
    text = path.read_text()
    assert "8: statfs(inode=<object" in text and "8: statfs => " in text
    assert len(lines(info)) == 2                           # and the logger too
    other = tmp_path / "other.log"
    xl.reconfigure({"log-file": str(other)})
    await xl.statfs(Frame(unique=9), object())
    assert "9: statfs" in other.read_text() and "9: statfs" not in path.read_text()
    xl.fini()
    assert xl._file is None


async def test_nothing_is_formatted_when_nobody_listens(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="xlfs")
    monkeypatch.setattr(trace_mod, "fmt", lambda v: pytest.fail("formatted"))
    xl = make()
    await xl.lookup(Frame(), object())


async def test_cancellation_is_traced(info):
    class Slow(Translator):
        type = "test/slow"

        async def flush(self, frame, fd):
            await trio.sleep(100)

    xl = make(leaf=Slow("slow"))
    with trio.move_on_after(0.01):
        await xl.flush(Frame(unique=6), object())
    assert lines(info)[-1] == "6: flush => Cancelled"


def test_a_listing_from_posix_is_summed_up_not_printed_entry_by_entry():
    """posix answers readdir with a DirBatch (a view of its snapshot), not a list: trace
    sums it up all the same."""
    from xlators.core.dir_batch import DirBatch, DirColumns
    cols = DirColumns([b"n%d" % i for i in range(40)], list(range(100, 140)), bytes([8]) * 40)
    assert trace_mod.fmt(DirBatch(cols, 0, 40)) == "<40 entries, last off=40>"
