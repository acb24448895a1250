"""cluster/replicate's per-inode and per-fd context.

An inode replicate hands out (linked in the graph's table under the gfid's number) maps
to one inode per child, each linked in that child's private inode table (replicate gives
every child subtree its own table, since the children's inode numbers are unrelated and
would collide in one).  A child inode points back to replicate's through its context
slot, so an answer from a child (``..``, a readdirp entry) maps back without a lookup.
"""
from __future__ import annotations

from typing import Any, Optional

import trio

from .afr_changelog import Changelog


class AfrInode:
    """Replicate's context of one of its inodes."""
    __slots__ = ("gfid", "children", "changelog", "kind", "fds", "heal_lock",
                 "split_logged", "parent", "name", "verified", "inflight", "drained",
                 "__weakref__")

    def __init__(self, gfid: bytes, n: int, kind: int = 0) -> None:
        self.gfid = gfid
        self.children: list[Any] = [None] * n        # child inode per child, or None
        self.changelog = Changelog(n)
        self.kind = kind                               # S_IFMT of the file
        self.fds: set[Any] = set()                     # open Fds (reopen after heal)
        self.heal_lock: Optional[trio.Lock] = None     # set while a heal runs
        self.inflight = 0                              # modifications under way
        self.drained: Optional[trio.Event] = None      # set when inflight drops to 0
        self.split_logged = False
        self.parent: Any = None                        # weakref to a parent Inode
        self.name: Optional[bytes] = None              # a name in it (for heal)
        # a directory whose children are known to hold the same names (made or entry-
        # healed by replicate): a name the first child lacks, they all lack
        self.verified = False

    def present(self) -> list[int]:
        return [i for i, c in enumerate(self.children) if c is not None]

    def __repr__(self) -> str:
        return f"<AfrInode gfid={self.gfid.hex()} children={self.present()}>"


class AfrFd:
    """Replicate's context of one open Fd: the child Fds (None where not open) and, for
    directories, the child a listing reads from (fixed at offset 0)."""
    __slots__ = ("children", "read_child")

    def __init__(self, n: int) -> None:
        self.children: list[Any] = [None] * n
        self.read_child: Optional[int] = None
