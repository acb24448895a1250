"""cluster/replicate over two storage/posix bricks: gfids on disk, stable inode numbers,
existing bricks, locks on both children in order, heal between real directories."""
import errno
import fcntl
import os

import pytest

from xlators.cluster.afr_gfid import GFID_XATTR, ino_of
from xlators.core.errors import FopError
from xlators.core.inode import Fd
from xlators.core.types import LK_GET, LK_SET, Lock
from xlators.testing import Harness

from tests.xlators.afr_util import fail, recover


def mirror(tmp_path, **options):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(exist_ok=True)
    b.mkdir(exist_ok=True)
    opts = "".join(f"    option {k.replace('_', '-')} {v}\n" for k, v in options.items())
    text = f"""
volume m0
    type storage/posix
    option directory {a}
end-volume
volume e0
    type debug/error-gen
    subvolumes m0
end-volume
volume m1
    type storage/posix
    option directory {b}
end-volume
volume e1
    type debug/error-gen
    subvolumes m1
end-volume
volume r
    type cluster/replicate
{opts}    subvolumes e0 e1
end-volume
"""
    return Harness.from_volfile(text), a, b


async def test_gfid_on_both_bricks_and_one_inode_number(tmp_path):
    h, a, b = mirror(tmp_path)
    await h.write_file("/f", b"data")
    ga, gb = os.getxattr(a / "f", GFID_XATTR), os.getxattr(b / "f", GFID_XATTR)
    assert ga == gb and len(ga) == 16
    st = await h.stat("/f")
    assert st.ino == ino_of(ga)
    assert os.stat(a / "f").st_ino != os.stat(b / "f").st_ino or True
    listed = {e.name: e.ino for e in await h.listdir("/")}
    assert listed[b"f"] == st.ino


async def test_an_existing_directory_is_mirrored(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "sub").mkdir()
    (a / "sub" / "old").write_bytes(b"before xlfs" * 1000)
    os.symlink("sub/old", a / "ln")
    h, a, b = mirror(tmp_path)
    assert await h.read_file("/sub/old") == b"before xlfs" * 1000
    await h.graph["r"].heal_pass()
    assert (b / "sub" / "old").read_bytes() == b"before xlfs" * 1000
    assert os.readlink(b / "ln") == "sub/old"
    assert os.getxattr(a / "sub" / "old", GFID_XATTR) == os.getxattr(b / "sub" / "old",
                                                                       GFID_XATTR)


async def test_heal_between_posix_bricks(tmp_path):
    h, a, b = mirror(tmp_path)
    await h.write_file("/f", b"x" * 100000)
    fail(h, 0)
    fd = await h.open("/f")
    await h.write(fd, b"y" * 5000, 50000)
    await h.close(fd)
    await h.mkdir("/new")
    await h.write_file("/new/g", b"made while a was down")
    recover(h, 0)
    r = h.graph["r"]
    await r.probe_now()
    assert await r.heal_pass() == 0
    assert (a / "f").read_bytes() == (b / "f").read_bytes() == \
        b"x" * 50000 + b"y" * 5000 + b"x" * 45000
    assert (a / "new" / "g").read_bytes() == b"made while a was down"


async def _open(h, path, owner):
    fd = await h.open(path, os.O_RDWR)
    fd.lk_owner = owner
    return fd


async def test_locks_are_taken_on_every_child_and_undone_on_refusal(tmp_path):
    h, a, b = mirror(tmp_path)
    await h.write_file("/f", b"0123456789")
    fd1 = await _open(h, "/f", 1)
    fd2 = await _open(h, "/f", 2)
    wr = Lock(fcntl.F_WRLCK, 0, 9, pid=1, owner=1)
    await h.top.lk(h.frame(lk_owner=1), fd1, LK_SET, wr)
    with pytest.raises(FopError) as ei:
        await h.top.lk(h.frame(lk_owner=2), fd2, LK_SET, wr._replace(pid=2, owner=2))
    assert ei.value.errno == errno.EAGAIN
    got = await h.top.lk(h.frame(lk_owner=2), fd2, LK_GET, wr._replace(pid=2, owner=2))
    assert got.type == fcntl.F_WRLCK
    await h.top.lk(h.frame(lk_owner=1), fd1, LK_SET, wr._replace(type=fcntl.F_UNLCK))
    # owner 3 holds a lock on the second brick only: owner 2's lock is refused there,
    # and the lock it took on the first brick is released again
    m1 = h.graph["m1"]
    direct = Harness(m1)
    e = await direct.lookup("/f")
    dfd = Fd(e.inode, os.O_RDWR, 3)
    await m1.open(direct.frame(), e.inode, os.O_RDWR, dfd)
    await m1.lk(direct.frame(lk_owner=3), dfd, LK_SET, wr._replace(pid=3, owner=3))
    with pytest.raises(FopError) as ei:
        await h.top.lk(h.frame(lk_owner=2), fd2, LK_SET, wr._replace(pid=2, owner=2))
    assert ei.value.errno == errno.EAGAIN
    m0 = h.graph["m0"]
    direct0 = Harness(m0)
    e0 = await direct0.lookup("/f")
    dfd0 = Fd(e0.inode, os.O_RDWR, 4)
    await m0.open(direct0.frame(), e0.inode, os.O_RDWR, dfd0)
    free = await m0.lk(direct0.frame(lk_owner=4), dfd0, LK_GET, wr._replace(pid=4, owner=4))
    assert free.type == fcntl.F_UNLCK, "the first brick's lock was not undone"
    await m0.release(direct0.frame(), dfd0)
    await m1.release(direct.frame(), dfd)
    for fd in (fd1, fd2):
        await h.close(fd)


async def test_a_name_only_the_second_brick_has_is_found(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "only-b").write_bytes(b"second brick")
    h, a, b = mirror(tmp_path)
    await h.mkdir("/made")
    assert await h.read_file("/only-b") == b"second brick"
    await h.graph["r"].heal_pass()
    assert (a / "only-b").read_bytes() == b"second brick"
