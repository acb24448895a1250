"""Stateful property test: cluster/distribute over three storage/memory children and a
single storage/memory, driven side by side with the same random fops; everything a
user can see must match: each result or errno, file contents, listings, the attributes
that do not depend on the clock, and which names share an inode number (hard links).

Child failures are not part of it: a distribute volume with a child down cannot look
like a single brick (that child's files are gone until it returns)."""
from __future__ import annotations

import errno
import os
import stat

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from xlators import FopError
from xlators.testing import Harness, make_translator

DIRS = ["", "a", "b", "a/c"]
NAMES = ["f1", "f2", "f3", "f4", "x", "yy", "zzz", "a", "b"]
PATHS = [f"{d}/{n}".lstrip("/") for d in DIRS for n in NAMES]


def _dist() -> Harness:
    kids = [make_translator("storage/memory", name=f"m{i}") for i in range(3)]
    h = Harness(make_translator("cluster/distribute", kids, name="dist"))
    h.init()
    return h


def _single() -> Harness:
    return Harness.stack()


async def _outcome(fn, *args):
    try:
        return ("ok", await fn(*args))
    except FopError as exc:
        return ("err", errno.errorcode.get(exc.errno, exc.errno))


def _visible(attr) -> tuple:
    kind = stat.S_IFMT(attr.mode)
    return (kind, attr.mode & 0o7777, attr.nlink, attr.uid, attr.gid,
            attr.size if kind != stat.S_IFDIR else None)


class Ops:
    """The fops, as path operations on one harness; results without inode numbers."""

    def __init__(self, h: Harness) -> None:
        self.h = h

    async def write(self, path: str, data: bytes, offset: int, trunc: bool):
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0)
        fd = await self.h.create(path, 0o644, flags)
        try:
            return await self.h.write(fd, data, offset)
        finally:
            await self.h.close(fd)

    async def read(self, path: str):
        return await self.h.read_file(path)

    async def stat(self, path: str):
        return _visible(await self.h.stat(path))

    async def truncate(self, path: str, size: int):
        return _visible(await self.h.setattr(path, size=size))

    async def chmod(self, path: str, mode: int):
        return _visible(await self.h.setattr(path, mode=mode))

    async def mkdir(self, path: str):
        return _visible((await self.h.mkdir(path)).attr)

    async def rmdir(self, path: str):
        return await self.h.rmdir(path)

    async def unlink(self, path: str):
        return await self.h.unlink(path)

    async def rename(self, old: str, new: str, flags: int):
        return await self.h.rename(old, new, flags)

    async def link(self, old: str, new: str):
        e = await self.h.lookup(old)
        loc = await self.h.parent_loc(new)
        return _visible((await self.h.top.link(self.h.frame(), e.inode, loc)).attr)

    async def symlink(self, target: str, path: str):
        return _visible((await self.h.symlink(target, path)).attr)

    async def readlink(self, path: str):
        e = await self.h.lookup(path)
        return await self.h.top.readlink(self.h.frame(), e.inode)

    async def setxattr(self, path: str, value: bytes):
        e = await self.h.lookup(path)
        return await self.h.top.setxattr(self.h.frame(), e.inode, b"user.k", value, 0)

    async def getxattr(self, path: str):
        e = await self.h.lookup(path)
        return await self.h.top.getxattr(self.h.frame(), e.inode, b"user.k")

    async def listdir(self, path: str, plus: bool):
        entries = await self.h.listdir(path, plus=plus)
        return sorted(e.name for e in entries)

    async def tree(self) -> tuple:
        """Every path with its visible attributes, and the groups of paths sharing an
        inode number."""
        found, by_ino = {}, {}

        async def walk(rel: str) -> None:
            for e in await self.h.listdir(rel or "/", plus=True):
                if e.name in (b".", b".."):
                    continue
                p = f"{rel}/{e.name.decode()}".lstrip("/")
                attr = await self.h.stat(p)
                assert attr.ino == e.ino, f"{p}: readdir says {e.ino}, stat {attr.ino}"
                found[p] = _visible(attr)
                by_ino.setdefault(attr.ino, []).append(p)
                if stat.S_ISDIR(attr.mode):
                    await walk(p)
                elif stat.S_ISREG(attr.mode):
                    found[p] += (await self.h.read_file(p),)
        await walk("")
        return found, sorted(sorted(v) for v in by_ino.values())


class SideBySide(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.a = Ops(_dist())
        self.b = Ops(_single())

    def both(self, name: str, *args):
        ra = trio.run(_outcome, getattr(self.a, name), *args)
        rb = trio.run(_outcome, getattr(self.b, name), *args)
        assert ra == rb, f"{name}{args}: distribute {ra!r}, one brick {rb!r}"

    @rule(path=st.sampled_from(PATHS), data=st.binary(max_size=300),
          offset=st.integers(0, 5000), trunc=st.booleans())
    def write(self, path, data, offset, trunc):
        self.both("write", path, data, offset, trunc)

    @rule(path=st.sampled_from(PATHS))
    def read(self, path):
        self.both("read", path)

    @rule(path=st.sampled_from(PATHS))
    def stat(self, path):
        self.both("stat", path)

    @rule(path=st.sampled_from(PATHS), size=st.integers(0, 9000))
    def truncate(self, path, size):
        self.both("truncate", path, size)

    @rule(path=st.sampled_from(PATHS), mode=st.sampled_from([0o600, 0o755, 0o1777, 0o640]))
    def chmod(self, path, mode):
        self.both("chmod", path, mode)

    @rule(path=st.sampled_from(PATHS))
    def mkdir(self, path):
        self.both("mkdir", path)

    @rule(path=st.sampled_from(PATHS))
    def rmdir(self, path):
        self.both("rmdir", path)

    @rule(path=st.sampled_from(PATHS))
    def unlink(self, path):
        self.both("unlink", path)

    @rule(old=st.sampled_from(PATHS), new=st.sampled_from(PATHS),
          flags=st.sampled_from([0, 0, 0, 1, 2]))
    def rename(self, old, new, flags):
        self.both("rename", old, new, flags)

    @rule(old=st.sampled_from(PATHS), new=st.sampled_from(PATHS))
    def link(self, old, new):
        self.both("link", old, new)

    @rule(dest=st.sampled_from(["f1", "../x", "nowhere"]), path=st.sampled_from(PATHS))
    def symlink(self, dest, path):
        self.both("symlink", dest, path)

    @rule(path=st.sampled_from(PATHS))
    def readlink(self, path):
        self.both("readlink", path)

    @rule(path=st.sampled_from(PATHS), value=st.binary(min_size=1, max_size=20))
    def setxattr(self, path, value):
        self.both("setxattr", path, value)

    @rule(path=st.sampled_from(PATHS))
    def getxattr(self, path):
        self.both("getxattr", path)

    @rule(path=st.sampled_from([""] + DIRS[1:]), plus=st.booleans())
    def listdir(self, path, plus):
        self.both("listdir", path or "/", plus)

    @invariant()
    def same_tree(self):
        ta = trio.run(self.a.tree)
        tb = trio.run(self.b.tree)
        assert ta == tb


TestDistributeLikeOneBrick = SideBySide.TestCase
TestDistributeLikeOneBrick.settings = settings(
    max_examples=int(os.environ.get("XLFS_STATEFUL_EXAMPLES", "60")), stateful_step_count=40,
    deadline=None, suppress_health_check=list(HealthCheck))
