"""The FUSE passthrough capability of translators (Translator.passes_data_through,
passthrough_fd, passthrough_blocker): declared by each translator, never listed by name.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fuse_bridge.cli import bridge_options
from fuse_bridge.cli_args import UsageError, parse_args
from fuse_bridge.passthrough import PassthroughUnavailable, graph_check
from xlators.core.registry import default_registry
from xlators.testing import Harness


def posix(tmp_path: Path, *types: str, **posix_opts: str) -> Harness:
    return Harness.stack(*types, leaf="storage/posix",
                         options={"storage/posix": {"directory": str(tmp_path),
                                                    **posix_opts}})


@pytest.mark.parametrize("types", [(), ("features/locks",), ("debug/io-stats",),
                                   ("debug/io-stats", "features/locks"),
                                   ("performance/nl-cache",), ("performance/io-threads",),
                                   ("performance/md-cache", "performance/nl-cache",
                                    "performance/io-threads")])
async def test_transparent_stacks_hand_over_the_brick_file(tmp_path, types) -> None:
    h = posix(tmp_path, *types)
    assert h.top.passthrough_blocker() is None
    await h.write_file("/f", b"data")
    fd = await h.open("/f")
    brick_fd = h.top.passthrough_fd(fd)
    assert brick_fd is not None
    st, raw = os.fstat(brick_fd), os.stat(tmp_path / "f")
    assert (st.st_dev, st.st_ino) == (raw.st_dev, raw.st_ino)
    await h.close(fd)


@pytest.mark.parametrize("t", ["performance/write-behind", "performance/io-cache",
                               "performance/read-ahead", "performance/quick-read",
                               "debug/error-gen", "debug/trace", "debug/delay-gen",
                               "features/read-only"])
async def test_data_translators_block_it(tmp_path, t) -> None:
    if t not in default_registry():
        pytest.skip(f"{t} is not in this tree")
    h = posix(tmp_path, t, "features/locks")
    reason = h.top.passthrough_blocker()
    assert reason is not None and f"({t})" in reason
    with pytest.raises(PassthroughUnavailable, match="--fuse-passthrough=yes"):
        graph_check("yes", h.top)
    assert graph_check("no", h.top) is None
    (tmp_path / "f").write_bytes(b"x")
    fd = await h.open("/f", os.O_RDONLY)
    assert h.top.passthrough_fd(fd) is None
    await h.close(fd)


async def test_memory_storage_has_no_brick_file() -> None:
    h = Harness.stack("features/locks")
    assert h.top.passthrough_blocker() is not None
    await h.write_file("/f", b"x")
    fd = await h.open("/f")
    assert h.top.passthrough_fd(fd) is None
    await h.close(fd)


async def test_posix_o_direct_and_set_id_files_keep_data_in_the_graph(tmp_path) -> None:
    h = posix(tmp_path, "features/locks", **{"o-direct": "on"})
    assert "o-direct" in h.top.passthrough_blocker()
    await h.write_file("/f", b"x")
    fd = await h.open("/f")
    assert h.top.passthrough_fd(fd) is None
    await h.close(fd)
    (tmp_path / "b").mkdir()
    h2 = posix(tmp_path / "b")
    await h2.write_file("/s", b"x", mode=0o755)
    await h2.setattr("/s", mode=stat.S_ISUID | 0o755)
    fd = await h2.open("/s")
    assert h2.top.passthrough_fd(fd) is None      # the kernel would keep the set-id bit
    await h2.close(fd)


def test_command_line_and_mount_option() -> None:
    assert bridge_options(parse_args(["-f", "v.vol", "m"])).fuse_passthrough == "auto"
    for argv, want in ((["--fuse-passthrough=auto"], "auto"),
                       (["--fuse-passthrough", "yes"], "yes"),
                       (["--fuse-passthrough=off"], "no"),
                       (["-o", "fuse-passthrough=auto"], "auto"),
                       (["-o", "fuse_passthrough=on"], "yes")):
        args = parse_args(["-f", "v.vol", *argv, "m"])
        assert bridge_options(args).fuse_passthrough == want, argv
    with pytest.raises(UsageError, match="fuse-passthrough.*maybe"):
        parse_args(["-f", "v.vol", "--fuse-passthrough=maybe", "m"])


async def test_io_stats_says_passthrough_data_is_not_counted(tmp_path) -> None:
    """Default: io-stats lets the brick file through and its dumps say that READ/WRITE
    of those opens are not counted, with how many opens it handed to the kernel."""
    h = posix(tmp_path, "debug/io-stats")
    assert h.top.passthrough_blocker() is None
    await h.write_file("/f", b"data")
    for _ in range(2):
        fd = await h.open("/f")
        assert h.top.passthrough_fd(fd) is not None
        await h.close(fd)
    d = h.top.dump()
    assert d["passthrough_opens"] == 2
    assert d["passthrough_data"].startswith("not counted")
    assert "Passthrough data: not counted" in h.top.dump_text()
    assert "passthrough opens: 2" in h.top.dump_text()
    h.top.reset()
    assert h.top.dump()["passthrough_opens"] == 0


async def test_io_stats_count_passthrough_data_refuses_it(tmp_path) -> None:
    """count-passthrough-data on: io-stats must see every READ/WRITE; the graph cannot use
    passthrough (``yes`` names the option), no brick file is handed over; at run time it
    applies to the next open."""
    h = posix(tmp_path, "debug/io-stats", "features/locks")
    io = h.top
    io.reconfigure({"count-passthrough-data": "on"})
    reason = io.passthrough_blocker()
    assert reason is not None and "count-passthrough-data on" in reason
    assert "(debug/io-stats)" in reason
    with pytest.raises(PassthroughUnavailable, match="count-passthrough-data"):
        graph_check("yes", io)
    assert graph_check("auto", io) == reason
    await h.write_file("/f", b"data")
    fd = await h.open("/f")
    assert io.passthrough_fd(fd) is None
    assert await h.read(fd, 10) == b"data"
    await h.close(fd)
    d = io.dump()
    assert d["passthrough_opens"] == 0 and d["passthrough_data"].startswith("counted")
    assert d["readv.count"] == 1 and d["bytes_read"] == 4
    io.reconfigure({"count-passthrough-data": "off"})
    assert io.passthrough_blocker() is None
    fd = await h.open("/f")
    assert io.passthrough_fd(fd) is not None
    await h.close(fd)
