"""xlfs over storage/gfapi next to GlusterFS's own FUSE client on the same volume: files
written by either are read by the other, and a change through GlusterFS's client shows
through xlfs at once although xlfs's kernel caches are kept for 600 s (upcalls become
kernel invalidations)."""
from __future__ import annotations

import errno
import os
import time

import pytest

from tests.gluster.bricks import GlusterFuse
from tests.gluster.conftest import mount_gfapi
from tests.mountlib import can_mount

pytestmark = pytest.mark.mount
LONG = ("--attribute-timeout=600", "--entry-timeout=600")


@pytest.fixture(scope="module")
def pair(bricks, gluster_base):
    """(xlfs mount with long cache timeouts, GlusterFS FUSE mount) on the same volume."""
    why = can_mount()
    if why:
        pytest.skip(why)
    base = gluster_base / "interop"
    with mount_gfapi(base / "xlfs", bricks.client_volfile, *LONG) as xm:
        with GlusterFuse(base / "gmnt", base / "glusterfs.log",
                         volfile=bricks.client_volfile) as gm:
            yield xm, gm
    assert xm.proc.poll() is not None


def wait_for(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
            if got:
                return got
        except OSError:
            pass
        if time.monotonic() > deadline:
            return check()
        time.sleep(0.05)


def test_written_by_xlfs_read_by_glusterfs(pair):
    xm, gm = pair
    data = os.urandom(300_000)
    with open(xm.path("from-xlfs"), "wb") as f:
        f.write(data)
    with open(gm.mountpoint / "from-xlfs", "rb") as f:
        assert f.read() == data
    os.mkdir(xm.path("dir-x"))
    os.symlink("from-xlfs", xm.path("dir-x", "ln"))
    assert os.readlink(gm.mountpoint / "dir-x" / "ln") == "from-xlfs"


def test_written_by_glusterfs_read_by_xlfs(pair):
    xm, gm = pair
    data = os.urandom(200_000)
    (gm.mountpoint / "from-gluster").write_bytes(data)
    with open(xm.path("from-gluster"), "rb") as f:
        assert f.read() == data


def test_change_by_the_other_client_seen_at_once(pair):
    """With 600 s attribute and entry timeouts, only an invalidation makes xlfs's kernel
    see another client's change: the size, the data and a removal."""
    xm, gm = pair
    x, g = xm.path("shared"), gm.mountpoint / "shared"
    with open(x, "wb") as f:
        f.write(b"first version\n")
    with open(x, "rb") as f:
        assert f.read() == b"first version\n"          # now in xlfs's page cache
    assert os.stat(x).st_size == 14                      # attributes cached for 600 s
    time.sleep(0.5)
    assert os.stat(x).st_size == 14
    with open(g, "ab") as f:
        f.write(b"appended by glusterfs\n")
    assert wait_for(lambda: os.stat(x).st_size == 36), "size not invalidated"

    def content():
        with open(x, "rb") as f:
            return f.read() == b"first version\nappended by glusterfs\n"
    assert wait_for(content), "data not invalidated"
    os.unlink(g)

    def gone():
        try:
            os.stat(x)
        except FileNotFoundError:
            return True
        return False
    assert wait_for(gone), "removal not seen"
    with pytest.raises(OSError) as ei:
        open(x, "rb")
    assert ei.value.errno == errno.ENOENT


def test_locks_hold_across_clients(pair):
    """A POSIX lock taken through xlfs is the bricks' lock: GlusterFS's client sees it."""
    import fcntl
    import subprocess
    import sys
    xm, gm = pair
    with open(xm.path("locked"), "wb") as f:
        f.write(b"x" * 100)
    fd = os.open(xm.path("locked"), os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 50, 0)
        probe = ("import fcntl, os, sys\n"
                 "fd = os.open(sys.argv[1], os.O_RDWR)\n"
                 "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)\n"
                 "except OSError as e:\n    sys.exit(e.errno)\n")
        res = subprocess.run([sys.executable, "-c", probe, str(gm.mountpoint / "locked")],
                             timeout=60)
        assert res.returncode in (errno.EAGAIN, errno.EACCES)
        fcntl.lockf(fd, fcntl.LOCK_UN, 50, 0)
        res = subprocess.run([sys.executable, "-c", probe, str(gm.mountpoint / "locked")],
                             timeout=60)
        assert res.returncode == 0
    finally:
        os.close(fd)
