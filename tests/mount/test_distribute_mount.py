"""cluster/distribute on a real mount of volfiles/dist3.vol (three storage/posix bricks).

What the kernel sees: a file renamed into another brick's hash range keeps its content
and its inode number (with no entry or attribute caching, so every stat asks the
daemon); a listing of 10,000 entries returns each once, also resumed with seekdir at
positions saved with telldir; statfs adds the bricks up.
"""
from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

import pytest

from tests.mountlib import VOLFILES, Mounted, can_mount
from xlators.cluster.dht_layout import Layout
from xlators.cluster.dht_linkfile import LINK_PREFIX

pytestmark = pytest.mark.mount
DIST3 = VOLFILES / "dist3.vol"
NOCACHE = ("--entry-timeout=0", "--attribute-timeout=0", "--negative-timeout=0")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.opendir.restype = ctypes.c_void_p
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.readdir.restype = ctypes.c_void_p
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.closedir.argtypes = [ctypes.c_void_p]
_NAME_AT = 19        # struct dirent: d_ino 8, d_off 8, d_reclen 2, d_type 1, then d_name


def _next(dirp) -> str | None:
    ptr = _libc.readdir(dirp)
    return None if not ptr else ctypes.string_at(ptr + _NAME_AT).decode()


@pytest.fixture
def mounted(tmp_path):
    why = can_mount()
    if why:
        pytest.skip(why)
    with Mounted(DIST3, tmp_path, *NOCACHE, limit=300) as m:
        yield m


def bricks(m: Mounted) -> list[Path]:
    bricks = m.extra_bricks()
    return [bricks[f"brick{i}"] for i in range(3)]


def on_bricks(m: Mounted, rel: str) -> list:
    """Per brick: 'data', 'link', 'dir' or None."""
    out = []
    for b in bricks(m):
        p = b / rel
        if not os.path.lexists(p):
            out.append(None)
        elif p.is_symlink() and os.readlink(os.fsencode(p)).startswith(LINK_PREFIX):
            out.append("link")
        elif p.is_dir():
            out.append("dir")
        else:
            out.append("data")
    return out


def test_rename_to_another_brick_keeps_content_and_inode_number(mounted):
    m = mounted
    layout = Layout.even(3)
    root = Path(m.mountpoint)
    os.mkdir(root / "d")
    old = "src"
    new = next(f"dst{i}" for i in range(100)
               if layout.child_for(f"dst{i}".encode()) != layout.child_for(old.encode()))
    data = os.urandom(300_000)
    (root / "d" / old).write_bytes(data)
    ino = os.stat(root / "d" / old).st_ino
    where = on_bricks(m, f"d/{old}")
    with open(root / "d" / old, "rb") as f:               # open across the rename
        os.rename(root / "d" / old, root / "d" / new)
        assert f.read() == data
        assert os.fstat(f.fileno()).st_ino == ino
    assert not os.path.exists(root / "d" / old)
    assert (root / "d" / new).read_bytes() == data
    assert os.stat(root / "d" / new).st_ino == ino
    assert [e.inode() for e in os.scandir(root / "d")] == [ino]
    after = on_bricks(m, f"d/{new}")
    assert after.index("data") == where.index("data")
    assert after.index("link") == layout.child_for(new.encode())
    assert os.listdir(root / "d") == [new]
    os.unlink(root / "d" / new)
    assert on_bricks(m, f"d/{new}") == [None] * 3


def test_readdir_of_10000_entries_exactly_once_across_telldir_and_seekdir(mounted):
    m = mounted
    d = Path(m.mountpoint) / "big"
    d.mkdir()
    names = set()
    for i in range(10_000):
        name = f"entry-{i:05d}"
        names.add(name)
        if i % 1000 == 0:
            os.mkdir(d / name)
        else:
            os.mknod(d / name, stat.S_IFREG | 0o644)
    layout = Layout.even(3)
    moved = [f"entry-{i:05d}" for i in range(1, 200)
             if layout.child_for(b"entry-%05d" % i) != layout.child_for(b"r-entry-%05d" % i)]
    for name in moved[:20]:                    # renamed into another brick's range
        os.rename(d / name, d / f"r-{name}")
        names.discard(name)
        names.add(f"r-{name}")
    assert sum(os.path.lexists(b / "big" / f"r-{moved[0]}") for b in bricks(m)) == 2
    counts = [len(os.listdir(b / "big")) for b in bricks(m)]
    assert all(c > 2500 for c in counts), counts
    dirp = _libc.opendir(str(d).encode())
    assert dirp
    try:
        order, marks = [], {}
        while True:
            if len(order) % 487 == 0:
                marks[len(order)] = _libc.telldir(dirp)
            name = _next(dirp)
            if name is None:
                break
            order.append(name)
        listed = [n for n in order if n not in (".", "..")]
        assert len(listed) == len(names) and set(listed) == names
        for at, pos in sorted(marks.items(), reverse=True):
            _libc.seekdir(dirp, pos)
            rest = []
            while (name := _next(dirp)) is not None:
                rest.append(name)
            assert rest == order[at:], f"resumed at entry {at}"
    finally:
        _libc.closedir(dirp)


def test_statfs_adds_the_bricks_up(mounted):
    m = mounted
    mnt = os.statvfs(m.mountpoint)
    one = os.statvfs(bricks(m)[0])
    total = mnt.f_blocks * mnt.f_frsize
    assert 2.9 * one.f_blocks * one.f_frsize <= total <= 3 * one.f_blocks * one.f_frsize
    assert mnt.f_files == 3 * one.f_files
