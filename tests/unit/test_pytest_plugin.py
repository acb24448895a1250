"""xlfs's pytest plugin (xlators/pytest_plugin.py) in a separate pytest run, with
pytest-trio disabled: async tests and the xlfs_* fixtures work with no configuration."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = '''
import trio
from xlators import Translator
from xlators.core.frame import Frame

VOL = """
volume m
    type storage/memory
    option size 1MB
end-volume
volume l
    type features/locks
    subvolumes m
end-volume
"""

def test_frame(xlfs_frame):
    assert isinstance(xlfs_frame, Frame) and xlfs_frame.uid == 0

async def test_async_runs_under_trio():
    await trio.sleep(0)
    assert trio.lowlevel.current_task() is not None

async def test_stack_over_memory(xlfs_stack, xlfs_frame):
    h = xlfs_stack("features/locks")
    assert h.top.type == "features/locks" and h.top.children[0].type == "storage/memory"
    await h.write_file("/f", b"data")
    assert await h.read_file("/f") == b"data"
    assert (await h.top.statfs(xlfs_frame, h.root)) is not None

async def test_whole_graph(xlfs_graph):
    h = xlfs_graph(VOL, overrides=["m.size=2MB"])
    assert h.graph["m"].opts.size == 2 << 20
    await h.mkdir("/d")
    assert [e.name for e in await h.listdir("/")] == [b".", b"..", b"d"]

async def test_a_failing_async_test_fails():
    assert False, "must fail"
'''


def _load_plugin_args() -> list[str]:
    """Load the plugin by name only where its pytest11 entry point is not installed
    (an install older than the entry point): loading it twice is an error."""
    from xlators.core.hooks import entry_points
    installed = any(ep.value == "xlators.pytest_plugin" for ep in entry_points("pytest11"))
    return [] if installed else ["-p", "xlators.pytest_plugin"]


def run_pytest(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(SAMPLE))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:trio", *_load_plugin_args(), "-q",
                           "-o", "addopts=", *extra, str(tmp_path)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=120)


def test_async_tests_and_fixtures_without_pytest_trio(tmp_path):
    proc = run_pytest(tmp_path)
    out = proc.stdout + proc.stderr
    assert "4 passed" in out and "1 failed" in out, out
    assert "must fail" in out
    assert "not natively supported" not in out, out
