"""What a new translator author does, in a clean virtualenv: ``pip install`` xlfs (this
checkout), the example plugin and pytest -- no extra, no pytest-trio -- then plain
``pytest`` in the plugin's directory.  The plugin's async tests must run (xlfs's pytest11
plugin) and the xlfs_* fixtures must exist.

Marked ``venv``: it needs the package index pip is configured with (skipped when pip
cannot reach it) and reuses pip's
cache, so a re-run installs from cached wheels in well under a minute.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.venv
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "xlfs-rot13"
SOURCE_ONLY = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                     "__pycache__", ".pytest_cache")


def _index_reachable() -> bool:
    """Whether pip, as configured on this machine, answers from its package index."""
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pytest"],
                           capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _run(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "VIRTUAL_ENV", "PIP_NO_CACHE_DIR")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run([str(a) for a in args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=timeout)


EXTRA_TEST = '''
import trio

async def test_fixtures_from_the_installed_xlfs(xlfs_stack, xlfs_graph, xlfs_frame):
    h = xlfs_stack("playground/rot-13")
    await h.write_file("/f", b"Hello")
    assert await h.read_file("/f") == b"Hello"
    g = xlfs_graph("volume b\\n type storage/memory\\n option size 1MB\\nend-volume\\n"
                   "volume r\\n type playground/rot-13\\n subvolumes b\\nend-volume\\n")
    assert g.top.type == "playground/rot-13" and xlfs_frame.uid == 0
    await trio.sleep(0)
'''


def test_a_plugin_project_tests_with_plain_pytest_in_a_clean_venv(tmp_path):
    if not _index_reachable():
        pytest.skip("pip cannot reach its package index: cannot build a clean virtualenv")
    src = tmp_path / "xlfs"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("xlators", "fuse_bridge"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=SOURCE_ONLY)
    plugin = tmp_path / "xlfs-rot13"
    shutil.copytree(EXAMPLE, plugin, ignore=SOURCE_ONLY)
    (plugin / "tests" / "test_fixtures.py").write_text(textwrap.dedent(EXTRA_TEST))

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = _run([base, "-m", "venv", venv], tmp_path)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    pip = _run([py, "-m", "pip", "install", "-q", src, plugin, "pytest"], tmp_path)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    have = _run([py, "-m", "pip", "list", "--format=freeze"], tmp_path).stdout.lower()
    assert "pytest-trio" not in have and "xlfs==" in have, have

    out = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider"], plugin)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "not natively supported" not in text and "skipped" not in text, text[-3000:]
    assert " passed" in text, text[-2000:]
