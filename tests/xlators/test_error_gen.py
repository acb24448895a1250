"""debug/error-gen: GlusterFS's failure modes, deterministic when asked."""
from __future__ import annotations

import errno
import logging

import pytest

from xlators import FOP_BY_NAME, FOPS, Frame, OptionError
from xlators.debug.error_gen import ErrorGen
from xlators.testing import Harness, RecordingLeaf, check_passthrough


def make(options=None) -> tuple[ErrorGen, RecordingLeaf]:
    leaf = RecordingLeaf()
    xl = ErrorGen("errors", [leaf], options or {}, itable=leaf.itable)
    xl.init()
    return xl, leaf


async def call(xl: ErrorGen, name: str):
    args = [object() for _ in FOP_BY_NAME[name].params]
    return await getattr(xl, name)(Frame(), *args)


async def outcome(xl: ErrorGen, name: str) -> int:
    """0 when the call went through, else its errno."""
    try:
        await call(xl, name)
    except OSError as exc:
        return exc.errno
    return 0


async def test_unset_failure_never_fails_and_passes_everything_through():
    assert sorted(await check_passthrough(ErrorGen)) == ["forget", "release", "releasedir"]
    xl, leaf = make({"error-no": "EIO"})
    for fop in FOPS:
        leaf.calls.clear()
        frame = Frame(unique=9)
        args = tuple(object() for _ in fop.params)
        assert await getattr(xl, fop.name)(frame, *args) is leaf.result
        (name, got_frame, got_args, _), = leaf.calls
        assert name == fop.name and got_frame is frame and got_args == args


async def test_deterministic_mode_for_tests():
    xl, leaf = make({"failure": "100", "error-no": "EIO", "enable": "writev"})
    for _ in range(50):
        assert await outcome(xl, "writev") == errno.EIO
        assert await outcome(xl, "readv") == 0
    assert [c[0] for c in leaf.calls] == ["readv"] * 50
    assert xl.dump()["injected.writev"] == 50 and xl.injected == {"writev": 50}


async def test_over_memory_writes_fail_reads_work():
    h = Harness.stack("debug/error-gen", options={"debug/error-gen": {
        "failure": "100%", "error-no": "ENOSPC", "error-fops": "write"}})
    fd = await h.create("/f")
    with pytest.raises(OSError) as info:
        await h.write(fd, b"data")
    assert info.value.errno == errno.ENOSPC
    assert await h.read(fd, 10) == b""
    await h.close(fd)


async def test_unset_error_no_picks_a_plausible_errno_per_fop():
    xl, _ = make({"failure": "100", "random-seed": "3"})
    for name in ("lookup", "writev", "rename", "setxattr", "fallocate"):
        seen = {await outcome(xl, name) for _ in range(60)}
        assert seen <= set(FOP_BY_NAME[name].errnos) and len(seen) > 1


async def test_callbacks_never_fail():
    xl, leaf = make({"failure": "100", "error-no": "EIO"})
    for name in ("forget", "release", "releasedir"):
        assert await outcome(xl, name) == 0
    assert await outcome(xl, "flush") == errno.EIO


async def test_probability_mode_is_random_with_the_given_rate():
    xl, _ = make({"failure": "30%", "error-no": "EIO", "random-seed": "1"})
    results = [await outcome(xl, "getattr") for _ in range(5000)]
    rate = results.count(errno.EIO) / len(results)
    assert 0.27 < rate < 0.33
    again, _ = make({"failure": "30%", "error-no": "EIO", "random-seed": "1"})
    assert [await outcome(again, "getattr") for _ in range(5000)] == results  # repeatable


async def test_random_failure_on_is_glusterfs_counting_mode():
    xl, _ = make({"failure": "25", "error-no": "EBUSY", "random-failure": "on",
                  "random-seed": "7"})
    results = [await outcome(xl, "lookup") for _ in range(3000)]
    fails = [i for i, r in enumerate(results) if r]
    assert fails[0] == 3                              # every 100/25 = 4th call first
    gaps = {b - a for a, b in zip(fails, fails[1:])}
    assert min(gaps) >= 3 and max(gaps) <= 44 and len(gaps) > 5
    assert all(results[i] == errno.EBUSY for i in fails)


async def test_short_write():
    h = Harness.stack("debug/error-gen", options={"debug/error-gen": {
        "failure": "100", "error-no": "GF_ERROR_SHORT_WRITE"}})
    below = Harness(h.top.child)
    fd = await below.create("/f")
    assert await h.write(fd, b"0123456789") == 5
    assert await below.read(fd, 100) == b"01234"
    with pytest.raises(OSError) as info:
        await h.top.fsync(h.frame(), fd, False)
    assert info.value.errno == errno.EIO              # short write means EIO elsewhere
    # keyword data, as a caller may pass it
    assert await h.top.writev(h.frame(), fd, data=b"abcd", offset=0) == 2


async def test_fop_names_and_error_names(caplog):
    xl, _ = make({"failure": "100", "enable": "STAT,ftruncate,xattrop,Write"})
    assert xl._enabled == {"getattr", "setattr", "writev"}   # xattrop: not a fop here
    assert "xattrop" in caplog.text
    xl, _ = make({"failure": "100", "error-no": "enoent"})
    assert await outcome(xl, "lookup") == errno.ENOENT
    with pytest.raises(OptionError, match="error-no"):
        make({"error-no": "EFOO"})
    with pytest.raises(OptionError, match="failure"):
        make({"failure": "abc"})


async def test_reconfigure_and_logging(caplog):
    xl, _ = make({"failure": "100", "error-no": "EIO"})
    caplog.set_level(logging.DEBUG, logger="xlfs")
    assert await outcome(xl, "lookup") == errno.EIO
    assert "lookup: unwind(-1, EIO)" in caplog.text
    xl.reconfigure({"failure": "0", "error-no": "EIO"})
    assert await outcome(xl, "lookup") == 0
    xl.reconfigure({"failure": "100", "error-no": "EPERM", "enable": "unlink"})
    assert await outcome(xl, "lookup") == 0
    assert await outcome(xl, "unlink") == errno.EPERM
