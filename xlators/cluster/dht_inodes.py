"""cluster/distribute: the inodes of the volume and of its children.

Each child subtree gets an inode table of its own (children number their files
independently, so one shared table would merge unrelated files).  An inode of the volume
(in the graph's table, the one the bridge hands to the kernel) carries a :class:`DNode`:
for a directory the directory's inode on every child, for anything else the inode on the
one child that holds its data.  The DNode holds one ``nlookup`` reference on each child
inode; ``forget`` of the volume inode gives them back (and forgets them in the child).

Identity (what the kernel sees as the inode number): a directory's number is its copy's
number on child 0, unchanged; anything else is its number on the child holding the data
with the child index folded into bits 48..55 (``ino ^ (index << 48)``).  With one child
the volume shows the child's numbers as they are.  A rename never moves data (a link file
points to it instead), so the number survives renames into another child's hash range,
and hard links share it.  A rebalance moves data and so gives the moved file a new number;
it runs offline (``xlfsctl rebalance``), so no kernel ever sees both.  The child order in
the volfile is therefore part of the identity: children are only ever appended.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..core.frame import Frame
from ..core.inode import Inode, InodeTable

INDEX_SHIFT = 48


def ident(index: int, ino: int, is_dir: bool) -> int:
    """The volume's inode number for a child's inode number."""
    if is_dir or index == 0:
        return ino
    return ino ^ (index << INDEX_SHIFT)


class DNode:
    """distribute's context of one volume inode."""
    __slots__ = ("is_dir", "index", "subs", "layout")

    def __init__(self, is_dir: bool, index: int, subs: list) -> None:
        self.is_dir = is_dir
        self.index = index            # the data's child (0 for directories)
        self.subs = subs              # directories: [inode per child]; else [data inode]
        self.layout: Any = None       # directories: Layout, loaded on first use

    def sub(self, index: int) -> Optional[Inode]:
        """This object's inode on child ``index`` (None when it has none there)."""
        if self.is_dir:
            return self.subs[index]
        return self.subs[0] if index == self.index else None

    def __repr__(self) -> str:
        kind = "dir" if self.is_dir else f"file@{self.index}"
        return f"<DNode {kind} {self.subs}>"


def private_tables(shared: InodeTable, children: Sequence[Any]) -> list[InodeTable]:
    """Give every child subtree an inode table of its own (before any init()).  Only the
    translators still on ``shared`` move: a cluster translator further down has already
    given its own children tables of their own."""
    tables = []
    for child in children:
        if child.itable is not shared:          # built with a table of its own
            tables.append(child.itable)
            continue
        table = InodeTable()
        stack = [child]
        while stack:
            xl = stack.pop()
            if xl.itable is shared:
                xl.itable = table
                stack.extend(xl.children)
        tables.append(table)
    return tables


def root_frame(frame: Optional[Frame]) -> Frame:
    """A frame for distribute's own work (link files, heals, layouts): uid 0."""
    f = Frame(unique=frame.unique if frame is not None else 0, uid=0, gid=0,
              pid=frame.pid if frame is not None else 0, groups=())
    if frame is not None:
        f.cancel_scope = frame.cancel_scope
    return f
