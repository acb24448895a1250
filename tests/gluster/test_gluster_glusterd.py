"""storage/gfapi as users run it: a volume made by glusterd with the gluster CLI, reached
through volfile-server + volume; and the one-line errors of bad input at mount time.

glusterd runs in a network namespace of the run's own (tests/gluster/glusterd.py); the xlfs
daemon is started inside that network namespace (``Glusterd.prefix``), in the test's mount
namespace, so the test sees its mount."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.mountlib import Mounted, ROOT, can_mount, xlfs_command

pytestmark = pytest.mark.mount

SERVER_VOLFILE = """\
volume xv
    type storage/gfapi
    option volfile-server {host}
    option volfile-server-port 24007
    option volfile-server-transport tcp
    option "volume" {volume}
    option log-file {log}
end-volume
"""


def test_mount_of_a_glusterd_volume(glusterd, tmp_path):
    why = can_mount()
    if why:
        pytest.skip(why)
    g, volume, dirs = glusterd
    vol = tmp_path / "xv.vol"
    vol.write_text(SERVER_VOLFILE.format(host=g.host, volume=volume,
                                         log=tmp_path / "gfapi.log"))
    with Mounted(vol, tmp_path / "m", limit=300.0, prefix=g.prefix()) as m:
        data = os.urandom(100_000)
        os.mkdir(m.path("d"))
        with open(m.path("d", "f"), "wb") as f:
            f.write(data)
        with open(m.path("d", "f"), "rb") as f:
            assert f.read() == data
        assert sorted(os.listdir(m.path("d"))) == ["f"]
    for brick in dirs:
        assert (brick / "d" / "f").read_bytes() == data


def _mount_fails(vol, mnt, prefix=()) -> str:
    """Run the daemon (daemonizing, as users do) on a volfile that must not mount;
    returns its one line of error."""
    mnt.mkdir()
    res = subprocess.run(list(prefix) + xlfs_command() + ["-f", str(vol), str(mnt)],
                         cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    with open("/proc/self/mounts") as f:
        assert str(mnt) not in f.read()
    return lines[0]


def test_unknown_volume(glusterd, tmp_path):
    g, _, _ = glusterd
    vol = tmp_path / "xv.vol"
    vol.write_text(SERVER_VOLFILE.format(host=g.host, volume="nosuchvol",
                                         log=tmp_path / "l.log"))
    line = _mount_fails(vol, tmp_path / "mnt", g.prefix())
    assert f"{vol}:1" in line
    assert f"cannot reach GlusterFS volume {g.host}:24007/nosuchvol" in line


def test_bad_input_fails_the_mount_with_one_line(tmp_path):
    """The daemon reports the error and exits; nothing is mounted."""
    from tests.gluster.bricks import free_port
    vol = tmp_path / "bad.vol"
    vol.write_text(SERVER_VOLFILE.replace("24007", str(free_port())).format(
        host="127.0.0.1", volume="v", log=tmp_path / "l.log"))
    assert "cannot reach GlusterFS volume 127.0.0.1" in _mount_fails(vol, tmp_path / "mnt")
