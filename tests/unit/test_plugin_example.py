"""The out-of-tree plugin example (examples/xlfs-rot13) installs and works with no other step.

Installs the example into this interpreter's environment with pip (from a copy, so the
source tree stays clean; re-running reinstalls it), then, in fresh processes:
- a volfile using ``type playground/rot-13`` over storage/memory builds through the default
  registry (the entry point is found by itself) and moves data through it;
- the example's own test suite passes.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "xlfs-rot13"


def _env() -> dict:
    env = dict(os.environ)
    # xlfs itself may not be installed in the environment: make the source tree importable.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTEST_ADDOPTS", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args, cwd, timeout=240):
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    probe = _run([sys.executable, "-m", "pip", "--version"], ROOT)
    if probe.returncode != 0:
        pytest.skip(f"pip is not available in this environment ({sys.executable} -m pip: "
                    f"{(probe.stderr or probe.stdout).strip()[:200]})")
    copy = tmp_path_factory.mktemp("rot13-src") / "xlfs-rot13"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache", "dist"))
    lock_path = Path(sys.prefix) / ".xlfs-rot13-install.lock"
    try:
        lock = open(lock_path, "w")
    except OSError:
        lock = None
    try:
        if lock is not None:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)   # two test runs must not pip at once
        # First with no network at all: the environment's own setuptools builds it (this
        # needs setuptools >= 70.1, or the "wheel" package beside an older one).  If that
        # is missing, let pip fetch the build backend into an isolated build environment.
        # --force-reinstall makes a re-run replace the installed copy: idempotent.
        base = [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q"]
        attempts = [base + ["--no-build-isolation", "--no-index", str(copy)],
                    base + [str(copy)]]
        failures = []
        for args in attempts:
            result = _run(args, copy)
            if result.returncode == 0:
                break
            failures.append(f"$ {' '.join(args)}\n{result.stdout}{result.stderr}")
        else:
            pytest.fail("pip could not install examples/xlfs-rot13:\n" + "\n".join(failures))
    finally:
        if lock is not None:
            lock.close()
    return copy


def test_installed_metadata_declares_the_entry_point(installed):
    script = textwrap.dedent("""
        from importlib.metadata import distribution
        dist = distribution("xlfs-xlator-rot13")
        eps = [ep for ep in dist.entry_points if ep.group == "xlfs"]
        print([(ep.name, ep.value) for ep in eps])
        print(dist.requires)
    """)
    out = _run([sys.executable, "-c", script], installed.parent)
    assert out.returncode == 0, out.stderr
    assert "('rot13', 'xlfs_rot13.plugin')" in out.stdout
    assert "xlfs" in out.stdout


def test_volfile_with_the_plugin_type_builds_through_the_default_registry(installed, tmp_path):
    volfile = tmp_path / "rot13.vol"
    volfile.write_text(textwrap.dedent("""
        volume brick
            type storage/memory
            option size 1MB
        end-volume

        volume rot13
            type playground/rot-13
            option decrypt-read on
            subvolumes brick
        end-volume
    """))
    script = textwrap.dedent(f"""
        import trio
        from xlators import Graph, default_registry
        from xlators.testing import Harness

        reg = default_registry()          # entry points loaded, nothing else done
        assert reg.origin("playground/rot-13") == "rot13", reg.origin("playground/rot-13")
        graph = Graph.from_file({str(volfile)!r})
        assert graph.top.type == "playground/rot-13"
        assert type(graph.top).__module__ == "xlfs_rot13.rot13", type(graph.top).__module__
        graph.init()
        graph.activate()

        async def main():
            h = Harness(graph)
            await h.write_file("/f", b"Hello")
            assert await h.read_file("/f") == b"Hello"
            fd = await h.open("/f")
            raw = await graph["brick"].readv(h.frame(), fd, 100, 0)
            await h.close(fd)
            assert raw == b"Uryyb", raw
            print("plugin ok:", type(graph.top).__module__)

        trio.run(main)
        graph.fini()
    """)
    # Run from an empty directory so that the installed copy, not a source tree, is used.
    out = _run([sys.executable, "-c", script], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "plugin ok: xlfs_rot13.rot13" in out.stdout

    check = _run([sys.executable, "-m", "xlators.ctl", "check", str(volfile)], tmp_path)
    assert check.returncode == 0, check.stderr
    assert "ok (2 volumes, top 'rot13')" in check.stdout
    listing = _run([sys.executable, "-m", "xlators.ctl", "xlators", "playground/rot-13"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "plugin:     rot13 (xlfs-xlator-rot13 0.1.0)" in listing.stdout
    assert "encrypt-write" in listing.stdout and "readv, writev" in listing.stdout


def _xlfs_pytest_plugin_args() -> list[str]:
    """``-p xlators.pytest_plugin`` when the installed xlfs predates its pytest11 entry
    point (an editable install made before it existed); nothing once it is there."""
    from importlib.metadata import entry_points
    eps = entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", ())
    if any(ep.value == "xlators.pytest_plugin" for ep in group):
        return []
    return ["-p", "xlators.pytest_plugin"]


def test_the_example_own_tests_pass(installed):
    out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                *_xlfs_pytest_plugin_args(), "tests"], installed)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]
