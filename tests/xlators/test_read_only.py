"""features/read-only: EROFS for every modification, pass-through for the rest."""
from __future__ import annotations

import errno
import os

import pytest

from xlators import FOPS, Frame, Loc
from xlators.features.read_only import ReadOnly
from xlators.testing import Harness, RecordingLeaf, check_passthrough


async def fails(err: int, coro) -> None:
    with pytest.raises(OSError) as info:
        await coro
    assert info.value.errno == err


async def populated() -> tuple[Harness, Harness]:
    """read-only over memory, and a harness on the memory leaf to set things up."""
    h = Harness.stack("features/read-only")
    below = Harness(h.top.child)
    await below.mkdir("/d")
    await below.write_file("/d/f", b"content")
    return h, below


async def test_passthrough_of_everything_else():
    checked = await check_passthrough(ReadOnly)
    modifying = {f.name for f in FOPS if f.modifies}
    assert "lookup" in checked and "readv" in checked and "lk" in checked
    assert not modifying & set(checked) and "open" not in checked


@pytest.mark.parametrize("fop", [f for f in FOPS if f.modifies], ids=lambda f: f.name)
async def test_every_modifying_fop_fails_with_erofs(fop):
    leaf = RecordingLeaf()
    xl = ReadOnly("ro", [leaf], {}, itable=leaf.itable)
    args = [object() for _ in fop.params]
    await fails(errno.EROFS, getattr(xl, fop.name)(Frame(), *args))
    assert leaf.calls == []
    xl.reconfigure({"read-only": "off"})
    assert await getattr(xl, fop.name)(Frame(), *args) is leaf.result
    assert len(leaf.calls) == 1


async def test_path_level_behaviour():
    h, below = await populated()
    assert await h.read_file("/d/f") == b"content"
    assert [e.name for e in await h.listdir("/d")] == [b".", b"..", b"f"]
    await fails(errno.EROFS, h.create("/d/new"))
    await fails(errno.EROFS, h.mkdir("/d/sub"))
    await fails(errno.EROFS, h.unlink("/d/f"))
    await fails(errno.EROFS, h.rmdir("/d"))
    await fails(errno.EROFS, h.rename("/d/f", "/d/g"))
    await fails(errno.EROFS, h.symlink(b"f", "/d/l"))
    await fails(errno.EROFS, h.setattr("/d/f", mode=0o600))
    await fails(errno.EROFS, h.setattr("/d/f", size=0))
    await fails(errno.EROFS, h.open("/d/f", os.O_WRONLY))
    await fails(errno.EROFS, h.open("/d/f", os.O_RDWR))
    await fails(errno.EROFS, h.open("/d/f", os.O_RDONLY | os.O_TRUNC))
    f = await h.lookup("/d/f")
    await fails(errno.EROFS, h.top.link(h.frame(), f.inode, Loc(h.root, b"hard")))
    await fails(errno.EROFS, h.top.setxattr(h.frame(), f.inode, b"user.x", b"1", 0))
    await fails(errno.EROFS, h.top.removexattr(h.frame(), f.inode, b"user.x"))
    fd = await h.open("/d/f", os.O_RDONLY)
    await fails(errno.EROFS, h.write(fd, b"x"))
    await fails(errno.EROFS, h.top.fallocate(h.frame(), fd, 0, 0, 10))
    await fails(errno.EROFS, h.top.copy_file_range(h.frame(), fd, 0, fd, 10, 1, 0))
    await h.top.fsync(h.frame(), fd, False)
    await h.close(fd)
    assert await below.read_file("/d/f") == b"content"


async def test_reconfigure_switches_it():
    h, below = await populated()
    h.top.reconfigure({"read-only": "off"})
    await h.write_file("/d/f", b"changed")
    await h.mkdir("/d/sub")
    h.top.reconfigure({"read-only": "on"})
    await fails(errno.EROFS, h.mkdir("/d/sub2"))
    h.top.reconfigure({})                                   # default: on
    await fails(errno.EROFS, h.setattr("/d/f", size=1))
    assert await below.read_file("/d/f") == b"changed"


async def test_option_off_from_the_start_and_volfile():
    h = Harness.stack("features/read-only",
                      options={"features/read-only": {"read-only": "no"}})
    await h.write_file("/f", b"ok")
    h = Harness.from_volfile("""
volume brick
    type storage/memory
    option size 64MB
end-volume
volume ro
    type features/read-only
    subvolumes brick
end-volume
""")
    await fails(errno.EROFS, h.create("/f"))
    assert (await h.stat("/")).nlink == 2
    assert h.top.describe().startswith("features/read-only")
