"""storage/posix and O_NOATIME (what a noatime mount asks for on every open): honoured
for everyone, in open, create of an existing file and opendir, so reads leave the brick's
atime alone.  The open as a caller who does not own the file cannot have it (EPERM): it is
opened without, then O_NOATIME is set with the daemon's rights."""
from __future__ import annotations

import os

import pytest

from xlators import Fd, Loc
from xlators.testing import Harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")

OLD = 1_000_000_000 * 10**9          # older than any mtime: even relatime would update


@pytest.fixture(params=["inline", "threads"])
def env(tmp_path, request):
    brick = tmp_path / "brick"
    brick.mkdir()
    options = {"directory": str(brick), "reserve": "0"}
    if request.param == "threads":
        options["io-threads"] = "on"
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": options})
    yield h, h.top, brick
    h.fini()


def age(path) -> None:
    os.utime(path, ns=(OLD, os.stat(path).st_mtime_ns))


async def test_reads_of_a_noatime_open_leave_atime(env):
    h, xl, brick = env
    await h.write_file("/f", b"data")
    age(brick / "f")
    (brick / "f").chmod(0o644)
    for frame in (h.frame(), h.frame(0, 0), h.frame(1000, 1000)):
        fd = await h.open("/f", os.O_RDONLY | os.O_NOATIME, frame=frame)
        assert fd.ctx[xl].flags & os.O_NOATIME
        assert await h.read(fd, 4) == b"data"
        await h.close(fd)
    assert (brick / "f").stat().st_atime_ns == OLD
    fd = await h.open("/f", os.O_RDONLY)
    assert await h.read(fd, 4) == b"data"
    await h.close(fd)
    assert (brick / "f").stat().st_atime_ns > OLD


async def test_create_of_someone_elses_file_keeps_noatime(env):
    h, xl, brick = env
    await h.write_file("/f", b"data")
    (brick / "f").chmod(0o666)               # root's file, writable by anyone
    user = h.frame(1000, 1000)
    fd = Fd(h.root, os.O_RDWR | os.O_NOATIME, user.pid)
    entry = await xl.create(user, Loc(h.root, b"f"), os.O_RDWR | os.O_CREAT | os.O_NOATIME,
                            0o100644, 0o022, fd)
    assert entry.inode.ino == (brick / "f").stat().st_ino
    assert fd.ctx[xl].flags & os.O_NOATIME
    await xl.release(h.frame(), fd)


async def test_opendir_with_noatime(env):
    h, xl, brick = env
    await h.mkdir("/d", mode=0o755)
    (brick / "d" / "x").write_text("")
    age(brick / "d")
    d = await h.lookup("/d")
    for frame in (h.frame(), h.frame(1000, 1000)):     # the owner, then someone else
        fd = Fd(d.inode, os.O_RDONLY | os.O_NOATIME, frame.pid, is_dir=True)
        await xl.opendir(frame, d.inode, fd)
        names = [e.name for e in await xl.readdir(frame, fd, 0, 4096)]
        assert b"x" in names
        await xl.releasedir(h.frame(), fd)
        assert (brick / "d").stat().st_atime_ns == OLD
