"""A graph of translators built from a volfile.

Order (documented in docs/volfile.md): translators are constructed in definition order
(children always exist before parents, since a volfile defines before use), options are
validated at construction, ``init()`` runs in definition order (leaves first), then
PARENT_UP is sent from the top down and CHILD_UP comes back up to the graph.  ``fini()``
runs in reverse definition order.  The top is the last volume of the file.
"""
from __future__ import annotations

import fnmatch
import logging
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from .events import Event
from .frame import system_frame
from .inode import InodeTable
from .registry import Registry, UnknownTypeError, default_registry
from .translator import Translator, forget_path
from .volfile import VolfileError, VolumeSpec, load_volfile, parse_volfile

log = logging.getLogger("xlfs.graph")


class GraphError(Exception):
    """A graph that cannot be built or started; str() says where and why."""


def parse_override(text: str) -> tuple[str, str, str]:
    """``VOLUME-GLOB.key=value`` -> (glob, key, value)."""
    left, eq, value = text.partition("=")
    glob, dot, key = left.partition(".")
    if not eq or not dot or not glob or not key:
        raise GraphError(f"--xlator-option '{text}': expected VOLUME.KEY=VALUE "
                         "(VOLUME may be a glob)")
    return glob, key, value


def apply_overrides(volumes: Sequence[VolumeSpec], overrides: Iterable[str]) -> None:
    """Apply ``--xlator-option`` overrides in place; a glob that matches nothing fails."""
    for text in overrides:
        glob, key, value = parse_override(text)
        hit = [v for v in volumes if fnmatch.fnmatchcase(v.name, glob)]
        if not hit:
            names = ", ".join(v.name for v in volumes)
            raise GraphError(f"--xlator-option '{text}': no volume matches '{glob}' "
                             f"(volumes: {names})")
        for v in hit:
            v.options[key] = value
            v.option_lines[key] = 0


def brick_options(xl: Translator) -> list[Any]:
    """The options of ``xl`` that name bricks: those declared ``brick=True`` (not every
    path option of a storage names a brick: storage/gfapi's client volfile and log file
    do not)."""
    return [o for o in xl.options if o.brick]


def bricks(xl: Translator) -> list[tuple[str, str]]:
    """``(option key, directory)`` of every brick ``xl`` stores into
    (``Translator.bricks``)."""
    return list(xl.bricks())


def _glob_covered(graph: "Graph", overrides: Iterable[str]) -> set[tuple[str, str]]:
    """(volume, key) pairs set only through a wildcard ``--xlator-option`` (``*.trace=on``)
    that some matched volume understands: no warning for the others it also reached."""
    covered: set[tuple[str, str]] = set()
    for text in overrides:
        glob, key, _ = parse_override(text)
        if not any(c in glob for c in "*?["):
            continue
        hit = [v.name for v in graph.volumes if fnmatch.fnmatchcase(v.name, glob)]
        if any(key in (n for o in graph.xlators[v].options for n in o.names) for v in hit):
            covered.update((v, key) for v in hit)
    return covered


class Graph:
    """Translators linked parent to child, one inode table, one top."""

    def __init__(self, volumes: Sequence[VolumeSpec], *, registry: Optional[Registry] = None,
                 overrides: Iterable[str] = (), itable: Optional[InodeTable] = None) -> None:
        if not volumes:
            raise GraphError("the volfile defines no volume")
        self.volumes = [VolumeSpec(v.name, v.type, dict(v.options), list(v.subvolumes),
                                   v.line, dict(v.option_lines), v.filename) for v in volumes]
        apply_overrides(self.volumes, overrides)
        self.registry = registry or default_registry()
        self.itable = itable or InodeTable()
        self.xlators: dict[str, Translator] = {}
        self.nursery: Any = None
        self.state: Optional[Event] = None
        self.listeners: list[Callable[[Event, Any, Any], None]] = []
        #: the process serving this graph (xlators.core.host.Host), set by the bridge
        self.host: Any = None
        self._inited: list[Translator] = []
        #: volumes the program added on top of the file's (``--read-only``): not the file's
        self.added_volumes: tuple[str, ...] = ()
        #: nodeids a graph switch found by name: not this graph's export keys
        self.foreign_nodeids: set[int] = set()
        for spec in self.volumes:
            self.xlators[spec.name] = self._build(spec)
        self.top: Translator = self.xlators[self.volumes[-1].name]
        self.top.parents.append(self)
        self._check_xlator_options()
        self._check_required()

    @classmethod
    def from_file(cls, path: str, **kw: Any) -> "Graph":
        return cls(load_volfile(path), **kw)

    @classmethod
    def from_text(cls, text: str, filename: str = "<volfile>", **kw: Any) -> "Graph":
        return cls(parse_volfile(text, filename), **kw)

    def where(self, spec: VolumeSpec, key: str) -> str:
        """Where option ``key`` of ``spec`` was set: ``FILE:LINE`` or ``--xlator-option``."""
        return self._where(spec)(key)

    def _where(self, spec: VolumeSpec) -> Callable[[str], str]:
        def where(key: str) -> str:
            line = spec.option_lines.get(key)
            if line == 0:
                return "--xlator-option"
            return f"{spec.filename}:{line or spec.line}"
        return where

    def _build(self, spec: VolumeSpec) -> Translator:
        try:
            cls = self.registry.get(spec.type)
        except UnknownTypeError as exc:
            raise GraphError(f"{spec.filename}:{spec.line}: volume '{spec.name}': {exc}") from None
        children = [self.xlators[name] for name in spec.subvolumes]
        try:
            xl = cls(spec.name, children, spec.options, itable=self.itable,
                     option_where=self._where(spec))
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            if not msg.startswith((spec.filename, "--xlator-option")):
                msg = f"{spec.filename}:{spec.line}: {msg}"
            raise GraphError(msg) from None
        xl.graph = self
        for key in xl.unknown_options:
            log.debug("volume '%s' (%s): option '%s' is not known; ignored",
                      spec.name, spec.type, key)
        return xl

    def _check_xlator_options(self) -> None:
        for spec in self.volumes:
            xl = self.xlators[spec.name]
            for opt in xl.options:
                value = xl.opts[opt.key]
                if opt.type == "xlator" and value is not None and value not in self.xlators:
                    raise GraphError(f"{self._where(spec)(opt.key)}: volume '{spec.name}': "
                                     f"option '{opt.key}': no volume named '{value}'")

    def _check_required(self) -> None:
        """What init() would refuse for want of an option, refused now (no brick is
        touched): ``required`` options and bricks left unset."""
        for spec in self.volumes:
            xl = self.xlators[spec.name]
            needed = {id(o): o for o in xl.options if o.required}
            needed.update((id(o), o) for o in brick_options(xl))
            for opt in needed.values():
                if xl.opts[opt.key] is None:
                    raise GraphError(f"{spec.filename}:{spec.line}: volume '{spec.name}' "
                                     f"({spec.type}): option '{opt.key}' is required")

    def warnings(self, overrides: Iterable[str] = ()) -> list[str]:
        """Unknown option keys (from the file or ``--xlator-option``) and dangling volumes,
        one ``FILE:LINE: warning: ...`` line each."""
        import difflib
        out = []
        covered = _glob_covered(self, overrides)
        for spec in self.volumes:
            xl = self.xlators[spec.name]
            known = [name for opt in xl.options for name in opt.names]
            for key in xl.unknown_options:
                if spec.option_lines.get(key) == 0 and (spec.name, key) in covered:
                    continue
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                out.append(f"{self._where(spec)(key)}: warning: volume '{spec.name}' "
                           f"({spec.type}): option '{key}' is not known{hint}")
            if xl is not self.top and not xl.parents:
                out.append(f"{spec.filename}:{spec.line}: warning: volume '{spec.name}' "
                           f"({spec.type}) is not a subvolume of any volume (dangling: it "
                           f"is not reachable from the top '{self.top.name}')")
        return out

    # -- lifecycle -----------------------------------------------------------------
    def init(self) -> None:
        """init() every translator, leaves first; on failure fini the ones done."""
        for xl in self.xlators.values():
            try:
                xl.init()
            except Exception as exc:
                self.fini()
                spec = next(v for v in self.volumes if v.name == xl.name)
                raise GraphError(f"{spec.filename}:{spec.line}: volume '{xl.name}' "
                                 f"({xl.type}): init failed: {exc}") from exc
            self._inited.append(xl)

    def activate(self) -> None:
        """Send PARENT_UP from the top; CHILD_UP arrives at notify()."""
        self.top.notify(Event.PARENT_UP, None, self)

    def fini(self) -> None:
        while self._inited:
            xl = self._inited.pop()
            try:
                xl.fini()
            except Exception:  # fini must go on for the others
                log.exception("volume '%s': fini failed", xl.name)

    async def drain(self) -> None:
        """Let work that translators acknowledged but have not finished land below them
        (write-behind's queued writes and background flushes), parents first: a
        translator with an ``async def drain()`` is awaited.  A graph switch drains the
        running graph before the new one looks at the files."""
        for xl in reversed(list(self.xlators.values())):
            drain = getattr(xl, "drain", None)
            if drain is not None:
                await drain()

    def dismantle(self) -> None:
        """fini(), then drop the translators, the inode table and the listeners: a
        retired graph that something still names (the command line keeps its first
        graph) holds nothing.  The graph cannot serve again."""
        self.fini()
        if self.top is not None and self in self.top.parents:
            self.top.parents.remove(self)
        self.xlators = {}
        self.listeners = []
        self.nursery = None
        self.itable = InodeTable()
        self.top = None  # type: ignore[assignment]

    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        """Events from the top translator (the graph is its parent)."""
        if event in (Event.CHILD_UP, Event.CHILD_DOWN, Event.CHILD_CONNECTING):
            self.state = event
        for listener in list(self.listeners):
            listener(event, data, source)

    async def forget(self, *inodes: Any) -> None:
        """Tell the translators that each of ``inodes`` left the table (after
        InodeTable.purge), one system frame for all: forget goes down from the top, past
        the translators that declare ``forget_needs_context`` and hold none in it."""
        frame = system_frame()
        top = self.top
        passed, below = forget_path(top)
        gated = tuple(passed)       # (a few: membership in each ctx beats isdisjoint)
        for inode in inodes:
            try:
                if below is not None:
                    ctx = inode.ctx
                    for xl in gated:
                        if xl in ctx:
                            await top.forget(frame, inode)
                            break
                    else:
                        await below.forget(frame, inode)    # what the passed-by would do
                else:
                    await top.forget(frame, inode)
            except Exception:
                log.exception("forget of %r failed", inode)

    # -- capabilities the bridge asks (declared on Translator) --------------------------
    def handles_locks(self) -> bool:
        """Some translator answers lk itself (``Translator.handles_locks``): the bridge
        negotiates POSIX_LOCKS and FLOCK_LOCKS."""
        return any(xl.handles_locks for xl in self.xlators.values())

    def flush_needed_by(self, locks: bool = True) -> list[str]:
        """The translators that need the kernel's FLUSH on every close(2), one
        ``volume 'NAME' (TYPE): why`` each; empty when none does.  A translator needs it
        when it declares ``needs_flush`` (the default) or handles locks while the kernel
        hands them to the daemon (``locks``: POSIX_LOCKS negotiated): then the kernel
        releases a closing owner's locks only through FLUSH."""
        out = []
        for xl in self.xlators.values():
            if locks and xl.handles_locks:
                out.append(f"volume '{xl.name}' ({xl.type}): handles locks")
            elif xl.needs_flush:
                out.append(f"volume '{xl.name}' ({xl.type}): needs flush")
        return out

    def needs_flush(self, locks: bool = True) -> bool:
        """Some translator needs FLUSH (``flush_needed_by``, ``locks`` as there):
        otherwise the bridge tells the kernel not to send it (FOPEN_NOFLUSH)."""
        return any(xl.needs_flush or locks and xl.handles_locks
                   for xl in self.xlators.values())

    def cancel_blocked(self, frame: Any) -> bool:
        """Withdraw the blocked lock request of ``frame`` wherever it waits (every
        translator that handles locks is asked, ``Translator.cancel_blocked``); True when
        one was withdrawn."""
        withdrawn = False
        for xl in self.xlators.values():
            if xl.handles_locks and xl.cancel_blocked(frame):
                withdrawn = True
        return withdrawn

    def _leaves(self) -> list[Translator]:
        return [xl for xl in self.xlators.values() if not xl.children]

    def posix_acl(self) -> bool:
        """Every storage (leaf) keeps POSIX ACLs that govern access
        (``Translator.posix_acl``)."""
        leaves = self._leaves()
        return bool(leaves) and all(xl.posix_acl for xl in leaves)

    def kills_privileges(self) -> bool:
        """Every storage (leaf) clears set-id bits and security.capability on write,
        truncate and chown (``Translator.kills_privileges``)."""
        leaves = self._leaves()
        return bool(leaves) and all(xl.kills_privileges for xl in leaves)

    def passthrough_blocker(self) -> Optional[str]:
        """Why no file of this graph can use FUSE passthrough, or None when files may
        (``Translator.passes_data_through`` from the top down to a storage that has
        local files)."""
        return self.top.passthrough_blocker()

    def passthrough_fd(self, fd: Any) -> Optional[int]:
        """The brick descriptor the kernel may use for the open ``fd``, or None
        (``Translator.passthrough_fd`` from the top)."""
        return self.top.passthrough_fd(fd)

    # -- introspection ---------------------------------------------------------------
    def walk(self) -> Iterable[tuple[int, Translator]]:
        """(depth, translator) from the top, depth-first."""
        def rec(xl: Translator, depth: int):
            yield depth, xl
            for c in xl.children:
                yield from rec(c, depth + 1)
        return rec(self.top, 0)

    def __getitem__(self, name: str) -> Translator:
        return self.xlators[name]
