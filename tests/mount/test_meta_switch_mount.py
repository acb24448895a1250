"""The .meta directory across a graph switch on SIGHUP (skipped until the bridge has one:
fuse_bridge.graph_switch)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import fuse_bridge
from tests.mount.test_meta_mount import cat, xlfsctl
from tests.mountlib import Mounted, can_mount, wait_until

pytestmark = pytest.mark.mount

STACK = """volume posix
    type storage/posix
    option directory {brick}
end-volume

volume locks
    type features/locks
    subvolumes posix
end-volume
{extra}
volume stats
    type debug/io-stats
    subvolumes {below}
end-volume
"""
WRITE_BEHIND = """
volume wb
    type performance/write-behind
    subvolumes locks
end-volume
"""


@pytest.fixture(autouse=True)
def _need_switch():
    why = can_mount()
    if why:
        pytest.skip(why)
    if not (Path(fuse_bridge.__file__).parent / "graph_switch.py").exists():
        pytest.skip("this bridge has no graph switch")


def test_meta_shows_the_new_graph_after_a_switch(tmp_path: Path) -> None:
    vol = tmp_path / "stack.vol"
    brick = tmp_path / "brick"
    vol.write_text(STACK.format(brick=brick, extra="", below="locks"))
    with Mounted(vol, tmp_path) as m:
        meta = m.path(".meta")
        before = set(os.listdir(f"{meta}/graphs"))
        assert "wb" not in os.listdir(f"{meta}/graphs/active")
        version_ino = os.stat(f"{meta}/version").st_ino
        with open(f"{meta}/version") as held:
            vol.write_text(STACK.format(brick=brick, extra=WRITE_BEHIND, below="wb"))
            m.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "graph switched" in m.read_log(), 30, "the graph switch",
                       detail=m.read_log, interval=0.05)
            assert held.read().strip()                 # an open .meta file goes on
        assert set(os.listdir(f"{meta}/graphs")) != before      # another graph id
        assert cat(f"{meta}/graphs/active/wb/type") == b"performance/write-behind\n"
        assert os.stat(f"{meta}/version").st_ino == version_ino
        assert b"inodes=" in cat(f"{meta}/root/private")     # the host followed
        assert json.loads(cat(f"{meta}/frames"))["count"] >= 1
        r = xlfsctl("status", m.path())
        assert r.returncode == 0 and "wb (performance/write-behind): up" in r.stdout, \
            r.stdout + r.stderr
