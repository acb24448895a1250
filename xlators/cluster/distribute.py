"""cluster/distribute (alias cluster/dht): one namespace spread over N children by name hash.

    volume dist
        type cluster/distribute
        option min-free-disk 10%
        option lookup-unhashed auto
        subvolumes brick0 brick1 brick2
    end-volume

The children may be of any type (storage/posix, storage/memory, a plugin, another
cluster translator).  Directories exist on every child; a file lives on the child its
name hashes to under its directory's layout (dht_layout).  A file whose data is
elsewhere (renamed into another child's range, created while its child was full) has a
link file on the hashed child (dht_linkfile).  Listings merge the children with stable
offsets (dht_readdir); renames never move data (dht_rename); inode numbers are the
children's, with the child index folded in (dht_inodes).  ``xlfsctl rebalance VOLFILE``
spreads the layouts over children added later and moves the files (dht_rebalance).

The module split: dht_base (resolution, link files, placement), dht_namespace (lookup,
create, mkdir, unlink, ...), dht_fops (fops on one object), dht_readdir, dht_rename.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from ..core.events import Event
from ..core.options import Option, parse_percent, parse_size
from .dht_base import DhtBase
from .dht_inodes import DNode, private_tables
from .dht_namespace import DhtNamespace
from .dht_readdir import DhtReaddir
from .dht_rename import DhtRename


def parse_min_free(text: str) -> tuple[str, float]:
    """GlusterFS's percent-or-size: "10%" or "10" is a percentage, "5GB" a size."""
    t = text.strip()
    if t.endswith("%") or t.replace(".", "", 1).isdigit():
        return ("percent", parse_percent(t))
    return ("size", float(parse_size(t)))


class Distribute(DhtNamespace, DhtRename, DhtReaddir, DhtBase):
    """cluster/distribute: one namespace spread over N children by name hash."""
    type = "cluster/distribute"
    children_range = (1, 250)
    needs_flush = False  # flush goes on to the file's child; the children say what they need
    options = (
        Option.str("lookup-unhashed", "auto", values=("auto", "on", "off"),
                   description="When the child a name hashes to does not have it: look on "
                   "every other child (on), never (off), or only in directories whose "
                   "layout is not committed, i.e. while a rebalance has not yet moved "
                   "their files (auto)."),
        Option("min-free-disk", "percent-or-size", "10%", "A child with less free space "
               "than this (a percentage of its size, or a size such as 5GB) gets no new "
               "files while another child has more: they go to the child with the most "
               "free space, with a link file on the hashed child.  0 disables.",
               parser=parse_min_free),
        Option.time("min-free-disk-interval", "1s", "How long a child's free space, "
                    "read with statfs, is trusted before it is read again.", min=0),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.tables = private_tables(self.itable, self.children)
        self._volume_lock_init()
        self._free = [(-1e9, 0, False)] * len(self.children)
        self._up: list = [None] * len(self.children)
        self._reported: Any = None
        self.stats: Counter = Counter()
        self._root_dn: Any = None
        self._apply_opts()

    def _apply_opts(self) -> None:
        kind, value = self.opts.min_free_disk
        self._min_free = (kind, value) if value > 0 else None
        self._free = [(-1e9, 0, False)] * len(self.children)

    def reconfigured(self, old: Any) -> None:
        self._apply_opts()

    def init(self) -> None:
        root = self.itable.root
        first = self.tables[0].root
        if root.ino != first.ino:
            self.itable.set_root_ino(first.ino)
        self._root_dn = DNode(True, 0, [t.root for t in self.tables])
        root.ctx[self] = self._root_dn

    def fini(self) -> None:
        self.itable.root.ctx.pop(self, None)

    # -- events ------------------------------------------------------------------------------
    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event.goes_down or source not in self.children:
            return super().notify(event, data, source)
        if event not in (Event.CHILD_UP, Event.CHILD_DOWN):
            return self.notify_parents(event, data)
        index = self.children.index(source)
        was = self._up[index]
        self._up[index] = up = event is Event.CHILD_UP
        if was is not None and was != up:
            self.log.warning("%s: child %s is %s", self.name, source.name,
                             "up" if up else "down")
        if None in self._up:
            return None                       # wait until every child has answered
        anyup = any(self._up)
        if self._reported is None or self._reported != anyup:
            self._reported = anyup            # up while any child is
            self.notify_parents(Event.CHILD_UP if anyup else Event.CHILD_DOWN, data)
        return None

    # -- introspection ---------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "children": len(self.children),
            "children-up": ",".join(c.name for c, up in zip(self.children, self._up) if up),
            "children-down": ",".join(c.name for c, up in zip(self.children, self._up)
                                      if up is False),
            "volume-layout-children": self._volume_children or "(not read yet)",
        }
        root = self._root_dn
        if root is not None and root.layout is not None:
            out["root-layout"] = root.layout.format().decode()
        layouts = [dn.layout for inode in self.itable
                   if (dn := inode.ctx.get(self)) is not None and dn.layout is not None]
        out["layouts-cached"] = len(layouts)
        out["layouts-uncommitted"] = sum(1 for lay in layouts if not lay.committed)
        for i, (at, free, full) in enumerate(self._free):
            if at > 0:
                out[f"child.{self.children[i].name}.free-bytes"] = free
                out[f"child.{self.children[i].name}.below-min-free-disk"] = full
        for key, value in sorted(self.stats.items()):
            out[f"stat.{key}"] = value
        return out


class Dht(Distribute):
    """cluster/dht: another name for cluster/distribute (GlusterFS's)."""
    type = "cluster/dht"

