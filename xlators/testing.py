"""Drive translators in-process, with no mount: the harness plugin authors test with.

    from xlators.testing import Harness, check_passthrough

    async def test_upper():
        h = Harness.stack("my/upper")            # my/upper over storage/memory
        fd = await h.create("/f")
        await h.write(fd, b"abc")
        assert await h.read(fd, 10) == b"ABC"

    async def test_conformance():
        await check_passthrough(MyTranslator)     # every fop it doesn't override passes through

A :class:`Harness` wraps a top translator (or a whole :class:`~xlators.Graph`); its
``frame()`` makes call frames for any uid/gid/groups; its path helpers (``lookup``,
``create``, ``mkdir``, ``read``, ``write``, ``listdir``, ...) resolve paths with real
lookups, so every fop they issue goes through the stack as the bridge would send it.
``h.top.FOP(h.frame(), ...)`` calls any fop directly.

The harness is a client as the FUSE bridge is: ``h.client`` is the same
:class:`~xlators.core.client.ClientState` (node and handle tables, lookup counts, forget),
so an entry a helper resolves counts one lookup, an open holds its inode until it is
closed, and ``h.forget(path)`` takes lookups back as the kernel's FORGET does (the inode
leaves the table, and ``forget`` goes down the stack, when nothing references it).
"""
from __future__ import annotations

import os
import stat
from typing import Any, Mapping, Optional, Sequence

import trio

from .core.client import ClientState
from .core.errors import FopError
from .core.events import Event
from .core.fops import FOP_BY_NAME, FOPS
from .core.frame import Frame
from .core.graph import Graph
from .core.inode import Fd, Inode, InodeTable, Loc
from .core.registry import default_registry
from .core.translator import Translator
from .core.types import DirEntry, Entry, SetAttr

__all__ = ["ForgetRecorder", "Harness", "RecordingLeaf", "check_passthrough",
           "make_translator"]


def make_translator(type_name: str, children: Sequence[Translator] = (),
                    options: Optional[Mapping[str, str]] = None, name: Optional[str] = None,
                    itable: Optional[InodeTable] = None) -> Translator:
    """Instantiate a registered type (plugins included) with option texts."""
    cls = default_registry().get(type_name)
    return cls(name or type_name.split("/")[1], children, options or {}, itable=itable)


class Harness:
    def __init__(self, top: Translator | Graph) -> None:
        if isinstance(top, Graph):
            self.graph: Optional[Graph] = top
            self.top = top.top
        else:
            self.graph = None
            self.top = top
        self.client = ClientState(self.top, graph=self.graph)
        self.uid = self.gid = 0
        self.pid = os.getpid()
        self._unique = 0
        self._inited: list[Translator] = []

    # -- construction ---------------------------------------------------------------
    @classmethod
    def stack(cls, *types: str, leaf: str = "storage/memory",
              options: Optional[Mapping[str, Mapping[str, str]]] = None) -> "Harness":
        """``stack("a/x", "b/y")``: a/x over b/y over the leaf; ``options`` by type name."""
        options = options or {}
        itable = InodeTable()
        node = make_translator(leaf, (), options.get(leaf), itable=itable)
        for t in reversed(types):
            node = make_translator(t, (node,), options.get(t), itable=itable)
        h = cls(node)
        h.init()
        return h

    @classmethod
    def from_volfile(cls, text: str, overrides: Sequence[str] = ()) -> "Harness":
        g = Graph.from_text(text, overrides=overrides)
        g.init()
        g.activate()
        return cls(g)

    def init(self) -> None:
        """init() every translator below the top, leaves first; PARENT_UP from the top."""
        if self.graph is not None:
            return
        order: list[Translator] = []

        def rec(xl: Translator) -> None:
            for c in xl.children:
                rec(c)
            if xl not in order:
                order.append(xl)
        rec(self.top)
        for xl in order:
            xl.init()
            self._inited.append(xl)
        self.top.notify(Event.PARENT_UP, None, None)

    def fini(self) -> None:
        if self.graph is not None:
            self.graph.fini()
        while self._inited:
            self._inited.pop().fini()

    def attach_nursery(self, nursery: trio.Nursery) -> None:
        """Let translators spawn() background work (write-behind, watchers, ...)."""
        if self.graph is not None:
            self.graph.nursery = nursery
        for xl in self._all():
            xl._nursery = nursery

    def _all(self) -> list[Translator]:
        seen: list[Translator] = []

        def rec(xl: Translator) -> None:
            if xl not in seen:
                seen.append(xl)
                for c in xl.children:
                    rec(c)
        rec(self.top)
        return seen

    # -- frames ---------------------------------------------------------------------
    def frame(self, uid: Optional[int] = None, gid: Optional[int] = None,
              groups: Sequence[int] = (), pid: Optional[int] = None,
              lk_owner: int = 0) -> Frame:
        self._unique += 2
        f = Frame(self._unique, self.uid if uid is None else uid,
                  self.gid if gid is None else gid, self.pid if pid is None else pid,
                  lk_owner, tuple(groups))
        return f

    def as_user(self, uid: int, gid: int) -> "Harness":
        """The same stack, with frames for another user by default."""
        other = Harness.__new__(Harness)
        other.__dict__.update(self.__dict__)
        other.uid, other.gid = uid, gid
        return other

    # -- path helpers ----------------------------------------------------------------
    @property
    def itable(self) -> InodeTable:
        return self.client.itable

    @property
    def root(self) -> Inode:
        return self.itable.root

    def _split(self, path: str | bytes) -> list[bytes]:
        p = os.fsencode(path)
        return [c for c in p.split(b"/") if c]

    async def lookup(self, path: str | bytes, frame: Optional[Frame] = None) -> Entry:
        """Resolve ``path`` component by component; returns the last Entry."""
        entry = Entry(self.root, await self.top.getattr(frame or self.frame(), self.root))
        for name in self._split(path):
            parent = entry.inode
            entry = await self.top.lookup(frame or self.frame(), Loc(parent, name))
            self.client.count_lookup(entry.inode, parent, name)
        return entry

    async def forget(self, path_or_inode: str | bytes | Inode, n: int = 1) -> None:
        """Take back ``n`` lookups of an inode, as the kernel's FORGET does."""
        inode = path_or_inode
        if not isinstance(inode, Inode):
            inode = (await self.lookup(path_or_inode)).inode
            n += 1          # that lookup counted one too
        await self.client.forget(inode.nodeid, n)

    async def parent_loc(self, path: str | bytes, frame: Optional[Frame] = None) -> Loc:
        parts = self._split(path)
        if not parts:
            raise FopError(22, "the root has no parent")
        parent = await self.lookup(b"/".join(parts[:-1]), frame)
        return Loc(parent.inode, parts[-1])

    async def stat(self, path: str | bytes, frame: Optional[Frame] = None):
        e = await self.lookup(path, frame)
        return await self.top.getattr(frame or self.frame(), e.inode)

    async def create(self, path: str | bytes, mode: int = 0o644,
                     flags: int = os.O_RDWR | os.O_CREAT, umask: int = 0o022,
                     frame: Optional[Frame] = None) -> Fd:
        loc = await self.parent_loc(path, frame)
        fr = frame or self.frame()
        fd = Fd(loc.parent, flags, fr.pid)
        entry = await self.top.create(fr, loc, flags, stat.S_IFREG | mode, umask, fd)
        fd.inode = entry.inode
        self.client.new_fh(fd)
        self.client.count_lookup(entry.inode, loc.parent, loc.name)
        return fd

    async def open(self, path: str | bytes, flags: int = os.O_RDWR,
                   frame: Optional[Frame] = None) -> Fd:
        e = await self.lookup(path, frame)
        fr = frame or self.frame()
        fd = Fd(e.inode, flags, fr.pid)
        await self.top.open(fr, e.inode, flags, fd)
        self.client.new_fh(fd)
        return fd

    async def close(self, fd: Fd, frame: Optional[Frame] = None) -> None:
        fr = frame or self.frame()
        try:
            if fd.is_dir:
                await self.top.releasedir(fr, fd)
            else:
                try:
                    await self.top.flush(fr, fd)
                finally:
                    await self.top.release(fr, fd)
        finally:
            await self._drop(fd)

    async def _drop(self, fd: Fd) -> None:
        if fd.fh and self.client.fds.get(fd.fh) is fd:
            await self.client.drop_fh(fd.fh)
        else:               # an Fd the caller made and opened itself
            fd.inode.refs -= 1

    async def write(self, fd: Fd, data: bytes, offset: int = 0,
                    frame: Optional[Frame] = None) -> int:
        return await self.top.writev(frame or self.frame(), fd, data, offset, 0)

    async def read(self, fd: Fd, size: int, offset: int = 0,
                   frame: Optional[Frame] = None) -> bytes:
        return await self.top.readv(frame or self.frame(), fd, size, offset, 0)

    async def write_file(self, path: str | bytes, data: bytes, mode: int = 0o644) -> None:
        fd = await self.create(path, mode, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            await self.write(fd, data)
        finally:
            await self.close(fd)

    async def read_file(self, path: str | bytes, size: int = 1 << 30) -> bytes:
        fd = await self.open(path, os.O_RDONLY)
        try:
            return await self.read(fd, size)
        finally:
            await self.close(fd)

    async def mkdir(self, path: str | bytes, mode: int = 0o755, umask: int = 0o022,
                    frame: Optional[Frame] = None) -> Entry:
        loc = await self.parent_loc(path, frame)
        return await self.top.mkdir(frame or self.frame(), loc, stat.S_IFDIR | mode, umask)

    async def unlink(self, path: str | bytes, frame: Optional[Frame] = None) -> None:
        await self.top.unlink(frame or self.frame(), await self.parent_loc(path, frame))

    async def rmdir(self, path: str | bytes, frame: Optional[Frame] = None) -> None:
        await self.top.rmdir(frame or self.frame(), await self.parent_loc(path, frame))

    async def rename(self, old: str | bytes, new: str | bytes, flags: int = 0,
                     frame: Optional[Frame] = None) -> None:
        await self.top.rename(frame or self.frame(), await self.parent_loc(old, frame),
                              await self.parent_loc(new, frame), flags)

    async def symlink(self, target: bytes | str, path: str | bytes,
                      frame: Optional[Frame] = None) -> Entry:
        return await self.top.symlink(frame or self.frame(), os.fsencode(target),
                                      await self.parent_loc(path, frame))

    async def setattr(self, path: str | bytes, frame: Optional[Frame] = None, **changes: Any):
        e = await self.lookup(path, frame)
        return await self.top.setattr(frame or self.frame(), e.inode, SetAttr(**changes))

    async def listdir(self, path: str | bytes = "/", plus: bool = False,
                      frame: Optional[Frame] = None) -> list[DirEntry]:
        """Every entry (including . and ..) read with repeated readdir calls."""
        e = await self.lookup(path, frame)
        fr = frame or self.frame()
        fd = Fd(e.inode, os.O_RDONLY, fr.pid, is_dir=True)
        await self.top.opendir(fr, e.inode, fd)
        self.client.new_fh(fd)
        out: list[DirEntry] = []
        offset = 0
        try:
            while True:
                fop = self.top.readdirp if plus else self.top.readdir
                batch = await fop(self.frame(), fd, offset, 4096)
                if not batch:
                    return out
                out.extend(batch)
                offset = batch[-1].off
        finally:
            await self.close(fd)


class RecordingLeaf(Translator):
    """A leaf that records every fop it receives and returns ``result``."""
    type = "testing/recording-leaf"

    def __init__(self, name: str = "leaf", *args: Any, **kw: Any) -> None:
        super().__init__(name, *args, **kw)
        self.calls: list[tuple[str, Frame, tuple, dict]] = []
        self.result: Any = object()


class ForgetRecorder(Translator):
    """Passes everything through and records the inodes it is told to forget (in
    ``forgotten``, in order): for tests of who forgets what, and when."""
    type = "testing/forget-recorder"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.forgotten: list = []

    async def forget(self, frame: Frame, inode: Any) -> None:
        self.forgotten.append(inode)
        await self.child.forget(frame, inode)


def _record(name: str):
    async def fop(self: RecordingLeaf, frame: Frame, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((name, frame, args, kwargs))
        return self.result
    fop.__name__ = name
    return fop


for _f in FOPS:
    setattr(RecordingLeaf, _f.name, _record(_f.name))
del _f


async def check_passthrough(cls: type, options: Optional[Mapping[str, str]] = None,
                            skip: Sequence[str] = ()) -> list[str]:
    """Assert that ``cls`` passes every fop it does not override to its first child
    unchanged (same frame, same argument objects, the child's result returned as is).
    Returns the names checked.  Raises AssertionError naming the fop that misbehaves."""
    leaf = RecordingLeaf()
    xl = cls(cls.type.split("/")[-1] or "xl", [leaf], options or {}, itable=leaf.itable)
    xl.init()
    checked = []
    try:
        for fop in FOPS:
            if fop.name in skip or getattr(cls, fop.name) is not getattr(Translator, fop.name):
                continue
            leaf.calls.clear()
            frame = Frame(unique=42, uid=1000, gid=1000, pid=1)
            args = tuple(object() for _ in fop.params)
            result = await getattr(xl, fop.name)(frame, *args)
            assert len(leaf.calls) == 1, f"{cls.type}: {fop.name} reached the child " \
                                         f"{len(leaf.calls)} times"
            name, got_frame, got_args, got_kw = leaf.calls[0]
            got = tuple(got_args) + tuple(got_kw.values())
            assert name == fop.name, f"{cls.type}: {fop.name} arrived as {name}"
            assert got_frame is frame, f"{cls.type}: {fop.name} changed the frame"
            assert len(got) == len(args) and all(a is b for a, b in zip(got, args)), \
                f"{cls.type}: {fop.name} changed its arguments"
            assert result is leaf.result, f"{cls.type}: {fop.name} changed the result"
            checked.append(fop.name)
    finally:
        xl.fini()
    return checked


assert set(FOP_BY_NAME) == {f.name for f in FOPS}
