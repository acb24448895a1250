"""cluster/replicate (alias cluster/afr): every file on N children, surviving failed ones.

    volume mirror
        type cluster/replicate
        option read-policy gfid-hash
        option quorum-type auto
        option favorite-child-policy mtime
        subvolumes brick-a brick-b
    end-volume

The children may be of any type (storage/posix, storage/memory, a plugin, a stack).

- Identity: a gfid per file in ``trusted.xlfs.gfid`` on every child; the kernel's inode
  number derives from it (``afr_gfid``).  Each child subtree gets a private inode table.
- Writes and namespace changes go to every child that is up, one after another in child
  order (local children answer without waiting, so there is nothing to overlap), or all
  at once with ``parallel-fan-out``; reads go to one *readable* child, chosen by
  ``read-subvolume`` or ``read-policy``.
- Changelog: when a change misses a child (down, or it failed), the children that made
  it record the accusation in ``trusted.xlfs.afr.<child>`` (``afr_changelog``).  Accused
  children are never read from until healed.  Healthy operation writes no changelog.
- Self-heal (``afr_heal``) of data, metadata and entries, triggered by lookup/open of a
  file with accusations and run by a background healer (``afr_healer``) on the graph's
  nursery, which also probes failed children every ``child-probe-interval``.
- A child failing with ENOTCONN (or sending CHILD_DOWN) is taken out at once; it comes
  back when a probe answers (or on CHILD_UP), and then gets healed.
- Quorum: below it every modification fails with EROFS and nothing changes.
- Split brain (every copy accused by another): EIO and one error log line naming the
  file's gfid, name and children, unless ``favorite-child-policy`` picks a winner.

Not done: a crash of xlfs between the children's copies of one write is not detected
(no pre-op dirty flag); the changelog marks what replicate saw fail.
"""
from __future__ import annotations

import errno
import stat
import time
from typing import Any, Awaitable, Callable, Iterable, Optional, Sequence

import trio

from ..core.errors import FopError
from ..core.events import Event
from ..core.frame import system_frame
from ..core.inode import Inode, InodeTable
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Attr
from . import afr_changelog as cl
from .afr_entry import AfrEntryOps
from .afr_gfid import ROOT_GFID, ROOT_INO
from .afr_healer import AfrHealer
from .afr_io import AfrIOOps, pick_error
from .afr_splitbrain import AfrSplitBrain
from .afr_state import AfrInode

READ_POLICIES = ("first-up", "gfid-hash", "least-latency")
FAVORITE_POLICIES = ("none", "size", "ctime", "mtime", "majority")
QUORUM_TYPES = ("none", "auto", "fixed")
QUORUM_ERRNO = errno.EROFS


def _private_table(xl: Translator, table: InodeTable) -> None:
    xl.itable = table
    for c in xl.children:
        _private_table(c, table)


class Replicate(AfrEntryOps, AfrIOOps, AfrHealer, AfrSplitBrain, Translator):
    """cluster/replicate: keep every file on all children; read from a good one."""
    type = "cluster/replicate"
    children_range = (1, None)
    needs_flush = False  # flush goes on to each child's fd; the children say what they need
    options = (
        Option.xlator("read-subvolume", description="Child to read from while it is "
                      "readable (unset: the read-policy decides)."),
        Option.int("read-subvolume-index", -1, "Index of the child to read from while "
                   "readable (-1: the read-policy decides).", min=-1),
        Option.str("read-policy", "gfid-hash", "Which readable child serves reads: "
                   "first-up, gfid-hash (spread files over the children), least-latency "
                   "(the child answering fastest lately).", values=READ_POLICIES),
        Option.bool("data-self-heal", True, "Heal file contents of accused children."),
        Option.bool("metadata-self-heal", True, "Heal mode, owner, times and user xattrs "
                    "of accused children."),
        Option.bool("entry-self-heal", True, "Heal directory contents (create missing, "
                    "remove extra names) of accused children."),
        Option.int("self-heal-window-size", 1, "Blocks of 128 KiB copied per step of a "
                   "data heal (writers of the file wait while it heals).", min=1,
                   max=1024),
        Option.bool("self-heal-daemon", True, "Heal in the background (the healer task): "
                    "at once for files found stale, when a child comes back, and every "
                    "heal-timeout.  Off: nothing heals by itself."),
        Option.bool("heal-crawl-on-start", False, "Walk the whole volume once at start, "
                    "looking every name up, so that what a previous run left unhealed "
                    "(recorded on the children) heals without being accessed first.  "
                    "Off: such files heal when first looked up."),
        Option.time("heal-timeout", 600, "Seconds between the background healer's "
                    "passes over the files known to need heal.", min=1),
        Option.time("child-probe-interval", 3, "Seconds between probes of a failed "
                    "child (a statfs of its root); it counts as up once it answers.",
                    min=0.05),
        Option.bool("parallel-fan-out", False, "Send a modification to the children "
                    "concurrently (a task each) instead of one after the other: for "
                    "children that wait (network, worker threads: storage/posix with "
                    "io-threads on); local children answering inline only pay for the "
                    "tasks."),
        Option.str("quorum-type", "none", "none: write while any child is up.  auto: "
                   "more than half the children must be up (exactly half when the first "
                   "is among them).  fixed: quorum-count children.  Below quorum every "
                   "modification fails with EROFS.", values=QUORUM_TYPES),
        Option.int("quorum-count", 0, "Children that must be up with quorum-type fixed.",
                   min=0),
        Option.str("favorite-child-policy", "none", "How a split brain resolves: none "
                   "(EIO; set a policy and reload to resolve it), size (largest copy "
                   "wins), ctime/mtime (latest change wins), majority (the copy more "
                   "than half of the children do not accuse, more than any other copy).",
                   values=FAVORITE_POLICIES),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.n = len(self.children)
        for c in self.children:
            _private_table(c, InodeTable())
        self.child_names = [c.name for c in self.children]
        self.up = [False] * self.n
        self.latency = [0.0] * self.n
        self.heal_index: dict[int, Inode] = {}
        self.split_brain_count = 0
        self.healed = {"data": 0, "metadata": 0, "entry": 0}
        self.heal_failures = 0
        self._announced = False
        self._root_ctx: Optional[AfrInode] = None
        self._healer_init()

    # -- lifecycle -----------------------------------------------------------------
    def init(self) -> None:
        root = self.itable.root
        if root.ino != ROOT_INO:
            self.itable.set_root_ino(ROOT_INO)
        ctx = AfrInode(ROOT_GFID, self.n, stat.S_IFDIR)
        ctx.children = [c.itable.root for c in self.children]
        for ci in ctx.children:
            ci.ctx[self] = root
        self.ctx_set(root, ctx)
        self._root_ctx = ctx

    async def _load_root_changelog(self) -> None:
        """The root is never looked up: read its changelog from each child once (what a
        previous run recorded there)."""
        ctx = self._root_ctx
        for i, ci in enumerate(ctx.children):
            if ctx.changelog.known[i] or not self.up[i]:
                continue
            try:
                _, rows = await self.read_meta(i, ci)
            except OSError as exc:
                self.failed(i, exc)
                continue
            cl.parse_row(self.child_names, rows, i, ctx.changelog)
        if ctx.changelog.any_pending():
            self.queue_heal(self.itable.root)

    def fini(self) -> None:
        self._healer_stop()
        for inode in list(self.heal_index.values()):
            inode.refs = max(0, inode.refs - 1)
        self.heal_index.clear()

    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event.goes_down:
            super().notify(event, data, source)
            if event is Event.PARENT_UP:
                self._healer_start()
            return
        idx = self._index_of(source)
        if event is Event.UPCALL and idx is not None:
            message = self._translate_upcall(data)
            if message is not None:
                self.notify_parents(event, message)
            return
        if idx is None or event not in (Event.CHILD_UP, Event.CHILD_DOWN):
            super().notify(event, data, source)
            return
        if event is Event.CHILD_UP:
            self._child_up(idx)
        else:
            self.child_down(idx, "it reported CHILD_DOWN")

    def _translate_upcall(self, message: Any) -> Any:
        """A child's notification names the child's inodes: name replicate's instead
        (dropped when one is not known here; the kernel cannot know it either)."""
        fields = getattr(message, "_fields", ())
        changes = {}
        for key in ("inode", "parent", "child"):
            if key in fields:
                ours = getattr(message, key).ctx.get(self)
                if ours is None:
                    return None
                changes[key] = ours
        return message._replace(**changes) if changes else message

    def _index_of(self, source: Any) -> Optional[int]:
        for i, c in enumerate(self.children):
            if c is source:
                return i
        return None

    # -- children up and down ---------------------------------------------------------
    def _child_up(self, i: int) -> None:
        was = self.up[i]
        self.up[i] = True
        if not self._announced:
            self._announced = True
            self.notify_parents(Event.CHILD_UP, None)
        if not was:
            self.log.info("%s: child %s is up", self.name, self.child_names[i])
            self.heal_wake()

    def child_down(self, i: int, why: str) -> None:
        """Take child ``i`` out of service at once (probes bring it back)."""
        if not self.up[i]:
            return
        self.up[i] = False
        self.log.warning("%s: child %s is down (%s)", self.name, self.child_names[i], why)
        self.probe_wake()
        if not any(self.up):
            self.notify_parents(Event.CHILD_DOWN, None)

    def failed(self, i: int, exc: OSError) -> None:
        if exc.errno == errno.ENOTCONN:
            self.child_down(i, "ENOTCONN")

    def check_quorum(self) -> None:
        """EROFS when fewer children are up than the quorum needs."""
        qt = self.opts.quorum_type
        if qt == "none":
            if not any(self.up):
                raise FopError(errno.ENOTCONN)
            return
        ups = sum(self.up)
        if qt == "fixed":
            ok = ups >= max(1, self.opts.quorum_count)
        else:
            ok = 2 * ups > self.n or (2 * ups == self.n and self.up[0])
        if not ok:
            raise FopError(QUORUM_ERRNO, f"{self.name}: {ups} of {self.n} children up, "
                           "below quorum")

    # -- contexts -----------------------------------------------------------------------
    def ictx(self, inode: Inode) -> AfrInode:
        ctx = inode.ctx.get(self)
        if ctx is None:
            raise FopError(errno.ESTALE)
        return ctx

    def targets(self, ictx: AfrInode) -> list[int]:
        up = self.up
        return [i for i, c in enumerate(ictx.children) if c is not None and up[i]]

    async def readable(self, ictx: AfrInode, kind: int,
                       inode: Optional[Inode] = None) -> list[int]:
        """Up children holding good copies of ``kind``; EIO on split brain, ENOTCONN when
        every good copy is on a child that is down."""
        up = self.up
        if ictx is self._root_ctx and not all(ictx.changelog.known):
            await self._load_root_changelog()
        present = ictx.present()
        if not ictx.changelog.any_pending():
            good = [i for i in present if up[i]]
            if good:
                return good
            raise FopError(errno.ENOTCONN)
        accused = ictx.changelog.accused(kind)
        good = [i for i in present if i not in accused]
        if not good and present:
            good = await self.resolve_split_brain(ictx, kind, inode)
        good_up = [i for i in good if up[i]]
        if not good_up:
            raise FopError(errno.ENOTCONN)
        return good_up

    async def read_child(self, ictx: AfrInode, kind: int, inode: Optional[Inode] = None,
                         among: Optional[list] = None) -> int:
        """The child to read ``kind`` from (optionally only children with an entry in
        ``among``, e.g. an fd's child fds)."""
        good = await self.readable(ictx, kind, inode)
        if among is not None:
            good = [i for i in good if among[i] is not None]
            if not good:
                raise FopError(errno.ENOTCONN)
        return self.pick(ictx, good)

    def preferred(self) -> int:
        """The index read-subvolume / read-subvolume-index name (-1: none)."""
        o = self.opts
        if o.read_subvolume is not None:
            return self.child_names.index(o.read_subvolume) if (
                o.read_subvolume in self.child_names) else -1
        return o.read_subvolume_index

    def pick_attr(self, good: list[int]) -> int:
        """The child attributes come from: the preferred one, else the first good one, so
        the kernel sees one child's times whatever serves the data."""
        pref = self.preferred()
        return pref if pref in good else good[0]

    def pick(self, ictx: AfrInode, good: list[int]) -> int:
        if len(good) == 1:
            return good[0]
        pref = self.preferred()
        if pref in good:
            return pref
        policy = self.opts.read_policy
        if policy == "first-up":
            return good[0]
        if policy == "least-latency":
            return min(good, key=lambda i: self.latency[i])
        return good[int.from_bytes(ictx.gfid[8:], "big") % len(good)]

    def note_latency(self, i: int, started: float) -> None:
        self.latency[i] = 0.9 * self.latency[i] + 0.1 * (time.perf_counter() - started)

    def map_attr(self, attr: Attr, inode: Inode) -> Attr:
        """A copy of a child's attributes with replicate's inode number."""
        return Attr(inode.ino, attr.size, attr.blocks, attr.atime_ns, attr.mtime_ns,
                    attr.ctime_ns, attr.mode, attr.nlink, attr.uid, attr.gid, attr.rdev,
                    attr.blksize)

    # -- fan-out ------------------------------------------------------------------------
    async def txn(self, inode: Inode, kinds: Sequence[int],
                  call: Callable[[int], Awaitable[Any]],
                  targets: Optional[list[int]] = None,
                  ) -> tuple[int, Any, list[int]]:
        """Run a modification on every target child; accuse the children that missed it.

        Returns (first child that succeeded, its result, the children that succeeded).
        All failing: the error (the most telling one), and nothing is accused."""
        self.check_quorum()
        ictx = self.ictx(inode)
        lock = ictx.heal_lock
        if lock is not None:
            async with lock:
                pass
        if targets is None:
            targets = self.targets(ictx)
        if not targets:
            raise FopError(errno.ENOTCONN)
        done: dict[int, Any] = {}
        errors: dict[int, OSError] = {}

        async def one(i: int) -> None:
            try:
                done[i] = await call(i)
            except OSError as exc:
                errors[i] = exc
                self.failed(i, exc)

        ictx.inflight += 1               # a heal starting now waits for this to end
        try:
            if self.opts.parallel_fan_out and len(targets) > 1:
                async with trio.open_nursery() as nursery:
                    for i in targets:
                        nursery.start_soon(one, i)
            else:
                for i in targets:
                    await one(i)
        except trio.Cancelled:
            # interrupted between children: the ones that made the change accuse the rest
            if done:
                with trio.CancelScope(shield=True):
                    await self.accuse(inode, list(done),
                                      [i for i in range(self.n) if i not in done], kinds)
            raise
        finally:
            ictx.inflight -= 1
            if not ictx.inflight and ictx.drained is not None:
                ictx.drained.set()
        if not done:
            stale = set().union(*(ictx.changelog.accused(k) for k in kinds)) if (
                ictx.changelog.any_pending()) else set()
            good = {i: e for i, e in errors.items() if i not in stale}
            raise pick_error(good or errors)      # a good copy's answer, not a stale one's
        accusers = list(done)
        if ictx.changelog.any_pending():
            # a good copy's refusal outweighs a stale copy's success, and only good
            # copies accuse (a stale one accusing a good one would make a split brain)
            stale = set().union(*(ictx.changelog.accused(k) for k in kinds))
            good_done = [i for i in done if i not in stale]
            good_failed = {i: e for i, e in errors.items()
                           if i not in stale and e.errno != errno.ENOTCONN}
            if good_failed and not good_done:
                raise pick_error(good_failed)
            accusers = good_done or accusers
        if len(done) < self.n:
            missed = [i for i in range(self.n) if i not in done]
            await self.accuse(inode, accusers, missed, kinds)
        if errors and any(e.errno == errno.ENOTCONN for e in errors.values()):
            self.check_quorum()
        first = next(i for i in targets if i in done)
        return first, done[first], list(done)

    async def read_from(self, inode: Inode, kind: int, call: Callable[[int], Awaitable[Any]],
                        among: Optional[list] = None, attrs: bool = False) -> Any:
        """Run a read on one readable child (``attrs``: the attribute child); another one
        if it fails with ENOTCONN."""
        ictx = self.ictx(inode)
        measure = self.opts.read_policy == "least-latency"
        while True:
            if attrs:
                good = await self.readable(ictx, kind, inode)
                if among is not None:
                    good = [g for g in good if among[g] is not None]
                if not good:
                    raise FopError(errno.ENOTCONN)
                i = self.pick_attr(good)
            else:
                i = await self.read_child(ictx, kind, inode, among)
            started = time.perf_counter() if measure else 0.0
            try:
                result = await call(i)
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:
                    raise
                self.failed(i, exc)
                continue
            if measure:
                self.note_latency(i, started)
            return result

    async def accuse(self, inode: Inode, good: Sequence[int], missed: Sequence[int],
                     kinds: Sequence[int]) -> None:
        """Record on each child of ``good`` that the children of ``missed`` missed
        changes of ``kinds``; queue the file for heal."""
        ictx = self.ictx(inode)
        pend = ictx.changelog.pending
        for x in good:
            changed = False
            for y in missed:
                for k in kinds:
                    if not pend[x][y][k]:
                        pend[x][y][k] = 1
                        changed = True
            ictx.changelog.known[x] = True
            if changed and ictx.children[x] is not None:
                await self.write_row(ictx, x, missed)
        self.queue_heal(inode)

    async def write_row(self, ictx: AfrInode, x: int, about: Iterable[int]) -> None:
        """Store child x's counters about the children ``about`` on child x."""
        frame = system_frame()
        for y in about:
            if y == x:
                continue
            value = cl.encode(ictx.changelog.pending[x][y])
            try:
                await self.children[x].setxattr(frame, ictx.children[x],
                                                cl.xattr_name(self.child_names[y]), value, 0)
            except OSError as exc:
                self.failed(x, exc)
                self.log.warning("%s: cannot record changelog on %s for gfid %s: %s",
                                 self.name, self.child_names[x], ictx.gfid.hex(), exc)

    # -- introspection -------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "children-up": ",".join(n for n, u in zip(self.child_names, self.up) if u),
            "children-down": ",".join(n for n, u in zip(self.child_names, self.up) if not u),
            "pending-heal": len(self.heal_index),
            "split-brain-count": self.split_brain_count,
            "heal-failures": self.heal_failures,
        }
        for k, v in self.healed.items():
            out[f"healed.{k}"] = v
        for inode in list(self.heal_index.values())[:50]:
            ctx = inode.ctx.get(self)
            if ctx is not None:
                kinds = ",".join(cl.KIND_NAMES[k] for k in ctx.changelog.pending_kinds())
                out[f"pending.{ctx.gfid.hex()}"] = kinds or "none"
        return out


class Afr(Replicate):
    """cluster/afr: another name for cluster/replicate (GlusterFS's)."""
    type = "cluster/afr"
