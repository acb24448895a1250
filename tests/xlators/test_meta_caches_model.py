"""md-cache and nl-cache against the storage itself: random operations, through the cache
and behind it (each change behind it followed by the upcall storage/posix would send),
and after each one every name must look the same through the cache as in the storage."""
from __future__ import annotations

import errno
import os
import random
import stat

import pytest

from xlators import SetAttr
from xlators.core.inode import Fd, Loc
from xlators.core.upcall import InvalidateEntry, InvalidateInode
from xlators.testing import Harness, make_translator

NAMES = [b"a", b"b", b"c", b"d"]
DIRS = [b"", b"x"]          # the root and one subdirectory


def build(cache: str, options: dict):
    leaf = make_translator("storage/memory")
    top = make_translator(cache, (leaf,), options, itable=leaf.itable)
    h = Harness(top)
    h.init()
    return h, leaf


async def observe(xl, h, parent, name):
    """What a lookup and a getattr of ``name`` show: None for ENOENT."""
    try:
        e = await xl.lookup(h.frame(), Loc(parent, name))
    except OSError as exc:
        assert exc.errno == errno.ENOENT
        return None
    a = await xl.getattr(h.frame(), e.inode)
    return (e.inode.ino, a.size, a.nlink, a.mode, a.mtime_ns, a.ctime_ns,
            e.attr.size, e.attr.nlink)


async def random_op(rnd, xl, h, dirs, below):
    """One random modification through ``xl``; returns the upcalls posix would send."""
    parent = rnd.choice(dirs)
    name = rnd.choice(NAMES)
    op = rnd.choice(["create", "write", "truncate", "unlink", "rename", "link", "chmod"])
    ups = [InvalidateEntry(parent, name), InvalidateInode(parent, -1, 0)]
    try:
        if op == "create":
            fd = Fd(parent, os.O_RDWR)
            e = await xl.create(h.frame(), Loc(parent, name), os.O_RDWR | os.O_CREAT,
                                stat.S_IFREG | 0o644, 0, fd)
            fd.inode = e.inode
            await xl.release(h.frame(), fd)
            return ups
        e = await h.top.lookup(h.frame(), Loc(parent, name)) if below else \
            await xl.lookup(h.frame(), Loc(parent, name))
        if op in ("write", "truncate", "chmod"):
            if op == "chmod":
                await xl.setattr(h.frame(), e.inode, SetAttr(mode=rnd.choice([0o600, 0o644])))
            elif op == "truncate":
                await xl.setattr(h.frame(), e.inode, SetAttr(size=rnd.randrange(20)))
            else:
                fd = Fd(e.inode, os.O_RDWR)
                await xl.open(h.frame(), e.inode, os.O_RDWR, fd)
                await xl.writev(h.frame(), fd, b"z" * rnd.randrange(1, 9), rnd.randrange(10))
                await xl.release(h.frame(), fd)
            return [InvalidateInode(e.inode, 0, 0)]
        if op == "unlink":
            await xl.unlink(h.frame(), Loc(parent, name))
            return ups
        other_parent, other = rnd.choice(dirs), rnd.choice(NAMES)
        ups += [InvalidateEntry(other_parent, other), InvalidateInode(other_parent, -1, 0)]
        if op == "rename":
            await xl.rename(h.frame(), Loc(parent, name), Loc(other_parent, other), 0)
        else:
            await xl.link(h.frame(), e.inode, Loc(other_parent, other))
            ups.append(InvalidateInode(e.inode, -1, 0))
        return ups
    except OSError:
        return []


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cache, options", [
    ("performance/md-cache", {"md-cache-timeout": "600", "cache-invalidation": "on"}),
    ("performance/nl-cache", {"nl-cache-timeout": "600", "nl-cache-positive-entry": "on"}),
], ids=["md-cache", "nl-cache"])
async def test_random_operations_through_and_behind_the_cache(cache, options, seed):
    rnd = random.Random(seed)
    h, leaf = build(cache, options)
    x = await h.top.mkdir(h.frame(), Loc(h.root, b"x"), stat.S_IFDIR | 0o755, 0)
    dirs = [h.root, x.inode]
    for step in range(150):
        below = rnd.random() < 0.4
        ups = await random_op(rnd, leaf if below else h.top, h, dirs, below)
        if below:
            for msg in ups:
                leaf.upcall(msg)
        for parent in dirs:
            for name in NAMES:
                got = await observe(h.top, h, parent, name)
                want = await observe(leaf, h, parent, name)
                if cache == "performance/nl-cache":
                    got, want = got is not None, want is not None
                assert got == want, (f"seed {seed} step {step}: {parent.ino}/{name!r} "
                                     f"shows {got}, the storage {want}")
