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
                                   ("debug/io-stats", "features/locks")])
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
    assert bridge_options(parse_args(["-f", "v.vol", "m"])).fuse_passthrough == "no"
    for argv, want in ((["--fuse-passthrough=auto"], "auto"),
                       (["--fuse-passthrough", "yes"], "yes"),
                       (["--fuse-passthrough=off"], "no"),
                       (["-o", "fuse-passthrough=auto"], "auto"),
                       (["-o", "fuse_passthrough=on"], "yes")):
        args = parse_args(["-f", "v.vol", *argv, "m"])
        assert bridge_options(args).fuse_passthrough == want, argv
    with pytest.raises(UsageError, match="fuse-passthrough.*maybe"):
        parse_args(["-f", "v.vol", "--fuse-passthrough=maybe", "m"])
