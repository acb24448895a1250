"""scripts/setup-lib.sh, shared by setup.sh and setup-pypy.sh: as a user other than root
it names the missing Debian packages and returns 1 (so setup.sh goes on and the tests
that need them skip); as root a failed apt-get stops the caller even behind ``|| true``.
apt-get is replaced by a stub on PATH, so nothing is installed."""
from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "scripts" / "setup-lib.sh"


def run(script: str, path_dir: Path, user: pwd.struct_passwd | None = None
        ) -> subprocess.CompletedProcess:
    cmd = ["bash", "-c", f". {LIB}; {script}"]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
               "--clear-groups"] + cmd
    env = {"PATH": f"{path_dir}:/usr/bin:/bin", "HOME": "/"}
    return subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True,
                          timeout=30)


@pytest.fixture
def failing_apt(tmp_path: Path) -> Path:
    stub = tmp_path / "apt-get"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/apt.log\nexit 100\n")
    stub.chmod(0o755)
    tmp_path.chmod(0o755)
    return tmp_path


def test_no_packages_is_nothing_to_do(failing_apt: Path):
    res = run("install_debian_packages setup && echo went-on", failing_apt)
    assert res.stdout.strip() == "went-on"
    assert not (failing_apt / "apt.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_not_root_names_the_missing_packages_and_goes_on(failing_apt: Path):
    user = pwd.getpwnam("nobody")
    res = run("install_debian_packages setup fuse3 attr || echo went-on", failing_apt, user)
    assert res.stdout.strip() == "went-on"
    assert res.stderr.strip() == ("setup: missing Debian packages: fuse3 attr "
                                  "(run as root, or apt-get install them)")
    assert not (failing_apt / "apt.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get path runs as root only")
def test_root_with_a_failing_apt_get_stops_the_caller(failing_apt: Path):
    res = run("install_debian_packages setup fuse3 || true; echo went-on", failing_apt)
    assert res.returncode == 1
    assert "went-on" not in res.stdout
    assert (failing_apt / "apt.log").read_text().splitlines() == ["update -qq"]
