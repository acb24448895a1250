"""The Translator base class.

A translator is a node of the graph.  It overrides the fops it changes; every other fop
passes to its first child unchanged (the defaults are generated from the fop table in
:mod:`xlators.core.fops`).  It winds by awaiting a child and unwinds by returning or
raising ``FopError``.

    volume ro
        type features/read-only
        subvolumes posix
    end-volume

Lifecycle: ``__init__`` parses options (no I/O), ``init()`` acquires resources (sync),
``notify()`` sees graph events, ``reconfigure()`` applies new option values at run time,
``fini()`` releases everything.  ``spawn()`` runs background work in the graph's nursery.
"""
from __future__ import annotations

import errno
import inspect
import logging
from typing import Any, Awaitable, Callable, ClassVar, Mapping, Optional, Sequence

from .errors import FopError
from .events import Event
from .fops import FOPS, NO_ERROR_FOPS, Fop, compile_fop
from .inode import InodeTable
from .options import Option, Opts, resolve_options


class Translator:
    #: "category/name", as written after ``type`` in a volfile.
    type: ClassVar[str] = ""
    #: Declared options (see xlators.core.options).
    options: ClassVar[tuple[Option, ...]] = ()
    #: One line for ``xlfsctl xlators`` and the docs (defaults to the docstring's first line).
    summary: ClassVar[str] = ""
    #: Children counts this type accepts (min, max); max None = any.
    children_range: ClassVar[tuple[int, Optional[int]]] = (0, None)

    # -- capabilities: what the bridge asks of the graph (the Graph methods of the same
    # names answer from these; docs/writing-translators.md, "Capabilities") ------------
    #: Locks: this translator answers ``lk`` itself (POSIX record locks and flocks, held
    #: here or by a server).  When any translator of the graph declares it, the bridge
    #: negotiates POSIX_LOCKS and FLOCK_LOCKS and sends lock requests down the graph;
    #: otherwise the kernel keeps locks local to this machine.  See also cancel_blocked().
    handles_locks: ClassVar[bool] = False
    #: FUSE passthrough (the kernel doing READ, WRITE and mmap on the brick file itself,
    #: so no readv/writev reaches the graph): True declares that this translator neither
    #: changes nor needs to see file data, and leaves the decision to its single child.
    #: False (the default, the safe answer for any translator that caches, transforms,
    #: delays, fails or counts data) keeps every READ and WRITE flowing through it.
    #: See also passthrough_fd() and passthrough_blocker().
    passes_data_through: ClassVar[bool] = False
    #: Storage (asked of every leaf; all must declare it): the brick keeps
    #: system.posix_acl_* xattrs that govern access, applies a parent's default ACL
    #: instead of the umask and the given umask otherwise.  With ``--acl`` the bridge
    #: then negotiates POSIX_ACL and DONT_MASK.
    posix_acl: ClassVar[bool] = False
    #: Storage (asked of every leaf): a write, truncate, fallocate or O_TRUNC open by a
    #: caller without CAP_FSETID clears set-user-ID, set-group-ID (as Linux does) and
    #: security.capability.  The bridge then negotiates HANDLE_KILLPRIV_V2.
    kills_privileges: ClassVar[bool] = False
    #: Forget (GlusterFS calls a translator's forget only for inodes it keeps a context
    #: in): True declares that all this translator keeps per inode is ``inode.ctx[self]``,
    #: so ``forget`` reaches its own method only for an inode holding such a context and
    #: otherwise passes to the first child as the default does (no coroutine of its own).
    #: A translator that keeps nothing per inode and declares it never sees forget;
    #: False (the default) sees every forget, as does one that keeps state elsewhere.
    forget_needs_context: ClassVar[bool] = False
    #: FLUSH (the request the kernel sends on every close(2) of a file, with the closing
    #: lock owner; a synchronous round trip before close returns): True (the default,
    #: the safe answer for any translator that reports errors at close, drops an owner's
    #: state there, or observes or perturbs the fop stream) keeps FLUSH coming.  False
    #: declares that this translator's flush only passes the call on, or does nothing the
    #: close needs.  When no translator of the graph needs it, and none handles locks
    #: (the kernel releases a closing owner's POSIX locks through FLUSH), the bridge
    #: answers OPEN and CREATE with FOPEN_NOFLUSH and the kernel skips FLUSH on close
    #: (``Graph.needs_flush``; fuse_bridge/ops_file.py).  A translator whose need
    #: follows its options (the debug translators' fop lists) sets ``self.needs_flush``
    #: from them, in ``__init__`` and ``reconfigured``: the class value says whether it
    #: may need FLUSH, the instance's whether it does now.  The bridge asks at INIT, at
    #: a graph switch and after a reconfigure in place (``FuseClient.decide_flush``).
    needs_flush: bool = True
    #: The capability flags above, checked to be bools when a subclass is defined.
    CAPABILITY_FLAGS: ClassVar[tuple[str, ...]] = (
        "handles_locks", "passes_data_through", "posix_acl", "kills_privileges",
        "forget_needs_context", "needs_flush")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for flag in Translator.CAPABILITY_FLAGS:
            if not isinstance(getattr(cls, flag), bool):
                raise TypeError(f"{cls.__qualname__}.{flag} must be True or False, "
                                f"not {getattr(cls, flag)!r}")
        gate_forget(cls)

    def __init__(self, name: str, children: Sequence["Translator"] = (),
                 options: Optional[Mapping[str, str]] = None, *,
                 itable: Optional[InodeTable] = None,
                 option_where: Callable[[str], str] = lambda key: "") -> None:
        self.name = name
        self.children: list[Translator] = list(children)
        self.child: Optional[Translator] = self.children[0] if self.children else None
        self.parents: list[Any] = []
        for c in self.children:
            c.parents.append(self)
        self.log = logging.getLogger(f"xlfs.{self.type or 'xlator'}.{name}")
        self.given_options: dict[str, str] = dict(options or {})
        self.unknown_options: list[str] = []
        self.opts: Opts = resolve_options(self.options, self.given_options, name,
                                          option_where, self.unknown_options.append)
        self.itable: InodeTable = itable if itable is not None else (
            self.children[0].itable if self.children else InodeTable())
        self.graph: Any = None        # set by Graph
        self._nursery: Any = None
        lo, hi = self.children_range
        if len(self.children) < lo or (hi is not None and len(self.children) > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {'any' if hi is None else hi}"
            raise ValueError(f"volume '{name}' ({self.type}): needs {want} subvolumes, "
                             f"has {len(self.children)}")

    # -- lifecycle -----------------------------------------------------------------
    def init(self) -> None:
        """Acquire resources.  Raise to fail the graph (the message is shown to the user)."""

    def fini(self) -> None:
        """Release what init() acquired."""

    def reconfigure(self, options: Mapping[str, str]) -> None:
        """Apply new option texts at run time; validates everything before changing."""
        new = resolve_options(self.options, options, self.name)
        old, self.opts = self.opts, new
        self.given_options = dict(options)
        self.reconfigured(old)

    def reconfigured(self, old: Opts) -> None:
        """Hook: ``self.opts`` was replaced (``old`` is the previous value)."""

    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        """Graph events.  Default propagation as in GlusterFS: PARENT_* go down to every
        child, CHILD_* and UPCALL go up to every parent; a leaf answers PARENT_UP with
        CHILD_UP."""
        if event.goes_down:
            if not self.children and event is Event.PARENT_UP:
                self.notify_parents(Event.CHILD_UP, None)
            for c in self.children:
                c.notify(event, data, self)
        else:
            self.notify_parents(event, data)

    def notify_parents(self, event: Event, data: Any = None) -> None:
        for p in self.parents:
            p.notify(event, data, self)

    def upcall(self, message: Any) -> None:
        """Send a notification towards the bridge (e.g. ``Invalidate``) via UPCALL."""
        self.notify_parents(Event.UPCALL, message)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background, in the graph's nursery."""
        nursery = self._nursery or (self.graph.nursery if self.graph is not None else None)
        if nursery is None:
            raise RuntimeError(f"{self.name}: spawn() needs a running graph (no nursery)")
        nursery.start_soon(fn, *args)

    # -- capabilities: bricks, lock withdrawal, FUSE passthrough -----------------------
    def bricks(self) -> list[tuple[str, str]]:
        """``(option key, directory)`` of every local directory this translator stores
        into; the bridge refuses a mountpoint inside one, or one inside the mountpoint
        (the mount would serve itself).  Default: the set options declared
        ``brick=True``; a translator whose bricks are not plain options overrides it."""
        return [(o.key, self.opts[o.key]) for o in self.options
                if o.brick and self.opts[o.key]]

    def own_files(self) -> list[tuple[str, str]]:
        """``(option key, path)`` of every file this translator writes itself (a log);
        the bridge refuses one inside the mountpoint, at start and at a graph switch (the
        write would wait for the mount it serves).  Default: the options declared
        ``own_file=True`` whose value is a path."""
        return [(o.key, self.opts[o.key]) for o in self.options
                if o.own_file and isinstance(self.opts[o.key], str)
                and self.opts[o.key].startswith("/")]

    def cancel_blocked(self, frame: Any) -> bool:
        """Lock withdrawal on interrupt: withdraw the blocked lock request of ``frame``
        (an interrupted F_SETLKW or flock, with ``--fuse-setlk-handle-interrupt``).  True
        when it was waiting here and is now withdrawn (its lk then fails with EINTR);
        False when it was granted already, or is not waiting here.  Asked of every
        translator that declares ``handles_locks``.  Default: False (nothing waits)."""
        return False

    def locks_held(self) -> Optional[int]:
        """Granted and waiting POSIX and flock locks held here, asked of every translator
        that declares ``handles_locks`` before a graph switch (refused while there are
        any).  Default: None, "cannot tell", which refuses the switch too."""
        return None

    def passthrough_fd(self, fd: Any) -> Optional[int]:
        """The OS descriptor of the brick file behind the open ``fd`` when the kernel may
        read, write and map that file directly, bypassing this translator and all below
        it; None when data must flow through the graph.  Asked once per open by the
        bridge.  Default: the single child's answer when ``passes_data_through``, else
        None; a storage translator that has a local file overrides it."""
        if self.passes_data_through and len(self.children) == 1:
            return self.children[0].passthrough_fd(fd)
        return None

    def passthrough_blocker(self) -> Optional[str]:
        """Why no file below this translator can use passthrough (one line), or None
        when files may (each open still asks ``passthrough_fd``)."""
        if not self.passes_data_through:
            return f"volume '{self.name}' ({self.type}) may change or must see file data"
        if len(self.children) != 1:
            return f"volume '{self.name}' ({self.type}) has {len(self.children)} subvolumes"
        return self.children[0].passthrough_blocker()

    # -- per-object context ------------------------------------------------------------
    def ctx_get(self, obj: Any, default: Any = None) -> Any:
        return obj.ctx.get(self, default)

    def ctx_set(self, obj: Any, value: Any) -> None:
        obj.ctx[self] = value

    def ctx_del(self, obj: Any) -> Any:
        return obj.ctx.pop(self, None)

    # -- introspection -----------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """Private state for the statedump (``key -> value``)."""
        return {}

    @classmethod
    def describe(cls) -> str:
        if cls.summary:
            return cls.summary
        doc = inspect.getdoc(cls) or inspect.getdoc(inspect.getmodule(cls)) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def overridden_fops(cls) -> list[str]:
        return [f.name for f in FOPS if getattr(cls, f.name) is not getattr(Translator, f.name)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.type})>"


async def _no_child(no_error: bool) -> None:
    if no_error:
        return None
    raise FopError(errno.ENOSYS)


# Not a coroutine function: it hands back the child's coroutine for the caller to await,
# so a pass-through translator adds no coroutine (no frame, no send through it) to the
# request path, and it passes the arguments by name (compile_fop), not through *args.
# ``await xl.fop(...)`` is the same either way.
_DEFAULT_SOURCE = """
def {name}(self, frame, {params}):
    child = self.child
    if child is None:
        return _no_child(NO_ERROR)
    return {wind:child}
"""


def _make_default(fop: Fop) -> Callable[..., Awaitable[Any]]:
    name = fop.name
    default = compile_fop(fop, _DEFAULT_SOURCE, {"__name__": __name__, "_no_child": _no_child,
                                                 "NO_ERROR": name in NO_ERROR_FOPS})

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("frame", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in fop.params:
        params.append(inspect.Parameter(
            p.rstrip("="), inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None if p.endswith("=") else inspect.Parameter.empty))
    default.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    default.__name__ = default.__qualname__ = name
    default.__doc__ = (f"{name}(frame, {', '.join(fop.params)}) -> {fop.result}. "
                       f"{fop.description} Default: wind to the first child.").strip()
    if name == "resolve":
        default = _same_table_only(default)
    return default


def _same_table_only(wind: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """resolve's default: an export key is a nodeid of the table the storage links into,
    so it winds only to a child sharing this translator's table.  A translator that gives
    its children tables of their own (cluster/*) maps keys itself or answers ESTALE."""
    async def resolve(self: Translator, frame: Any, nodeid: int) -> Any:
        child = self.child
        if child is not None and child.itable is not self.itable:
            raise FopError(errno.ESTALE)
        return await wind(self, frame, nodeid)

    resolve.__signature__ = wind.__signature__  # type: ignore[attr-defined]
    resolve.__name__ = resolve.__qualname__ = "resolve"
    resolve.__doc__ = wind.__doc__.replace("Default: wind to the first child.",
                                           "Default: wind to the first child when it "
                                           "shares this translator's inode table, else "
                                           "ESTALE.")
    return resolve


for _fop in FOPS:
    setattr(Translator, _fop.name, _make_default(_fop))
del _fop


def gate_forget(cls: type[Translator]) -> None:
    """``forget_needs_context``: make the forget of ``cls`` (its own or inherited) run only
    for inodes in which the translator holds a context; any other inode goes to the first
    child as with the default forget.  Called when a subclass is defined, and again by
    whoever sets methods on a class afterwards (``xlators.debug._wrap.install_fops``)."""
    own = cls.forget            # its own, or one it inherits from a class that did not declare
    if not cls.forget_needs_context or own is Translator.forget \
            or getattr(own, "gated", None) is not None:
        return

    def forget(self: Translator, frame: Any, inode: Any) -> Awaitable[None]:
        if self in inode.ctx:
            return own(self, frame, inode)
        child = self.child
        if child is None:
            return _no_child(True)
        return child.forget(frame, inode)

    forget.__name__ = forget.__qualname__ = "forget"
    forget.__doc__ = own.__doc__
    forget.__signature__ = inspect.signature(own)  # type: ignore[attr-defined]
    forget.gated = own  # type: ignore[attr-defined]
    setattr(cls, "forget", forget)


def forget_path(top: Translator) -> tuple[frozenset[Translator], Optional[Translator]]:
    """Where a forget from ``top`` goes for an inode in which none of the translators
    that gate it holds a context: ``(gated, below)``, where ``gated`` are the translators
    from ``top`` down that pass a forget by unless ``inode.ctx`` has them (those declaring
    ``forget_needs_context``; those keeping the default forget pass it by always) and
    ``below`` the first one under them that acts on every forget (None when the first
    children run out first).  A batch of forgets (``Graph.forget``) calls ``below``
    directly for such inodes: the same calls the chain of pass-bys would make."""
    gated: list[Translator] = []
    xl: Optional[Translator] = top
    default = Translator.forget
    while xl is not None:
        own = getattr(xl.forget, "__func__", None)
        if own is default:
            pass                                  # winds to the first child
        elif own is not None and getattr(own, "gated", None) is not None:
            gated.append(xl)
        else:
            return frozenset(gated), xl
        xl = xl.child
    return frozenset(gated), None
