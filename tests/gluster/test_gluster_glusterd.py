"""storage/gfapi as users run it: a volume made by glusterd with the gluster CLI, reached
through volfile-server + volume; and the one-line errors of bad input at mount time (an
unreachable server, an unknown volume, a bad client volfile, libgfapi missing), each run
through the real ``xlfs`` command, daemonizing: one line on stderr, no mount, no process.

glusterd runs in a network namespace of the run's own (tests/gluster/glusterd.py); the xlfs
daemon is started inside that network namespace (``Glusterd.prefix``), in the test's mount
namespace, so the test sees its mount.  libgfapi missing is a mount namespace of the
test's own where an overlay hides the library's files (:func:`_without_libgfapi`)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.gluster.conftest import gfapi_volfile
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


def _processes_naming(text: str) -> list[str]:
    """The command lines of the live processes whose arguments contain ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(text in a for a in args):
            found.append(f"{entry}: {' '.join(args)}")
    return found


def _mount_fails(vol: Path, mnt: Path, prefix=()) -> str:
    """Run ``xlfs -f VOL MNT`` (daemonizing, as users do) on a volfile that must not mount:
    a non-zero exit, exactly one line on stderr, nothing mounted on ``mnt`` (in this mount
    namespace, and in the command's own when ``prefix`` makes one: it prints its mounts
    of ``mnt`` on stdout), no process left naming ``mnt``.  Returns the line."""
    mnt.mkdir()
    res = subprocess.run(list(prefix) + xlfs_command() + ["-f", str(vol), str(mnt)],
                         cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(mnt) not in res.stdout, res.stdout
    with open("/proc/self/mounts") as f:
        assert str(mnt) not in f.read()
    assert _processes_naming(str(mnt)) == []
    return lines[0]


def test_unknown_volume(glusterd, tmp_path):
    g, _, _ = glusterd
    vol = tmp_path / "xv.vol"
    vol.write_text(SERVER_VOLFILE.format(host=g.host, volume="nosuchvol",
                                         log=tmp_path / "l.log"))
    line = _mount_fails(vol, tmp_path / "mnt", g.prefix())
    assert line.startswith(f"xlfs: {vol}:1: volume 'xv' (storage/gfapi): init failed: ")
    assert f"cannot reach GlusterFS volume {g.host}:24007/nosuchvol" in line


def test_unreachable_server(tmp_path):
    """Nothing listens on the port: the daemon reports the error and exits."""
    from tests.gluster.bricks import free_port
    port = free_port()
    vol = tmp_path / "bad.vol"
    vol.write_text(SERVER_VOLFILE.replace("24007", str(port)).format(
        host="127.0.0.1", volume="v", log=tmp_path / "l.log"))
    line = _mount_fails(vol, tmp_path / "mnt")
    assert line.startswith(f"xlfs: {vol}:1: volume 'xv' (storage/gfapi): init failed: ")
    assert f"cannot reach GlusterFS volume 127.0.0.1:{port}/v" in line


@pytest.mark.parametrize("case", ["unparsable", "no-such-file"])
def test_bad_client_volfile(case, tmp_path):
    """``option volfile`` naming a GlusterFS client volfile its parser refuses (an unknown
    translator type), or no file at all."""
    client = tmp_path / "client.vol"
    if case == "unparsable":
        client.write_text("volume x\n    type protocol/nonsense\nend-volume\n")
        # the parser's own message (from libgfapi's log), not glfs_init's errno
        want = (f"GlusterFS client volfile {client} does not work: Volume 'x', line 2: "
                "type 'protocol/nonsense' is not valid or not found")
    else:
        want = f"client volfile {client}: no such file"
    vol = tmp_path / "gv.vol"
    vol.write_text(gfapi_volfile(client, tmp_path / "gfapi.log"))
    line = _mount_fails(vol, tmp_path / "mnt")
    assert line.startswith(f"xlfs: {vol}:1: volume 'gv' (storage/gfapi): init failed: ")
    assert want in line


def _libgfapi_files() -> list[Path]:
    """Every file the dynamic loader could take for libgfapi.so.0: the one its cache
    names and the library's other names beside it (all resolved, /lib being /usr/lib on
    a merged-/usr system)."""
    res = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PATH=os.environ.get("PATH", "")
                                  + ":/usr/sbin:/sbin"))
    cached = [line.rsplit("=>", 1)[1].strip() for line in res.stdout.splitlines()
              if line.strip().startswith("libgfapi.so.0 ")]
    dirs = {Path(p).resolve().parent for p in cached}
    return sorted(p for d in dirs for p in d.iterdir() if p.name.startswith("libgfapi.so"))


# In a mount namespace of its own (private: nothing mounted here is seen outside): an
# overlay over the library's directory whose upper layer holds whiteouts of its files, so
# there they do not exist, as on a machine without libgfapi0; then the command, then what
# that namespace has mounted on the mountpoint (on stdout).
_HIDE_AND_RUN = """lib=$1 upper=$2 work=$3 mnt=$4
shift 4
mount -t overlay -o "lowerdir=$lib,upperdir=$upper,workdir=$work" xlfs-test-no-libgfapi \
    "$lib" || exit 97
"$@"
rc=$?
grep -F " $mnt " /proc/self/mounts
exit $rc
"""


def _without_libgfapi(tmp_path: Path, mnt: Path) -> list[str]:
    """Command prefix running a command where libgfapi is not installed (see above)."""
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read().split():
            pytest.skip("no overlayfs in this kernel: the test hides libgfapi behind an "
                        "overlay's whiteouts")
    files = _libgfapi_files()
    if not files:
        pytest.skip("the loader's cache (ldconfig -p) names no libgfapi.so.0")
    dirs = {p.parent for p in files}
    assert len(dirs) == 1, files
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    for p in files:
        os.mknod(upper / p.name, 0o600 | 0o020000, os.makedev(0, 0))   # a whiteout
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", _HIDE_AND_RUN, "sh",
            str(dirs.pop()), str(upper), str(work), str(mnt)]


def test_libgfapi_missing(tmp_path):
    """The real ``xlfs`` on a machine where libgfapi is not installed (its files hidden in
    the command's own mount namespace): the line names the library, the Debian package
    and the apt-get command."""
    vol = tmp_path / "gv.vol"
    vol.write_text(gfapi_volfile(tmp_path / "client.vol", tmp_path / "gfapi.log"))
    mnt = tmp_path / "mnt"
    line = _mount_fails(vol, mnt, _without_libgfapi(tmp_path, mnt))
    assert line == (f"xlfs: {vol}:1: volume 'gv' (storage/gfapi): init failed: libgfapi "
                    "cannot be loaded (libgfapi.so.0: cannot open shared object file: No "
                    "such file or directory): install the Debian package libgfapi0 "
                    "(apt-get install libgfapi0)")
