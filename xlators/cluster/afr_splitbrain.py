"""cluster/replicate: split brain -- reported, or resolved by ``favorite-child-policy``
(a mixin of Replicate).

A file is in split brain for a kind (data, metadata, entry) when every child holding it
is accused by another, and a name is in entry split brain when good children hold
different gfids under it.  With ``favorite-child-policy none`` replicate answers EIO and
logs one error line per file naming the gfid, the name and the children; the statedump
counts them.  Otherwise the policy picks the winner among the children that are up:

- ``size``: the largest copy;  ``mtime`` / ``ctime``: the latest modified / changed copy;
- ``majority``: the copy more than half of all children do not accuse, and more than
  for any other copy.

A tie picks nothing (EIO as with none).  The winner becomes the source: the others'
accusations of it are cleared, it accuses them, and self-heal copies it over the others.
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from ..core.errors import FopError
from ..core.frame import system_frame
from ..core.inode import Inode
from ..core.types import Attr, Entry
from ..core.upcall import InvalidateInode
from .afr_changelog import KIND_NAMES
from .afr_state import AfrInode


class AfrSplitBrain:
    def _report_split_brain(self, what: str, name: Any, gfid: bytes, children: list[int],
                            ctx: Optional[AfrInode]) -> None:
        if ctx is not None and ctx.split_logged:
            return
        if ctx is not None:
            ctx.split_logged = True
        self.split_brain_count += 1
        self.log.error("%s: split brain (%s) on gfid %s, name %r, children %s: not served "
                       "(EIO); favorite-child-policy %s", self.name, what, gfid.hex(), name,
                       ", ".join(self.child_names[i] for i in children),
                       self.opts.favorite_child_policy)

    async def _attrs(self, ctx: AfrInode, among: list[int]) -> dict[int, Attr]:
        out: dict[int, Attr] = {}
        for i in among:
            if self.up[i] and ctx.children[i] is not None:
                try:
                    out[i] = await self.children[i].getattr(system_frame(), ctx.children[i])
                except OSError as exc:
                    self.failed(i, exc)
        return out

    def _favorite(self, attrs: dict[int, Attr], ctx: Optional[AfrInode], kind: int
                  ) -> Optional[int]:
        policy = self.opts.favorite_child_policy
        if policy == "none" or not attrs:
            return None
        if policy == "majority":
            if ctx is None:
                return None
            pend = ctx.changelog.pending
            votes = {c: sum(1 for x in range(self.n) if not pend[x][c][kind]) for c in attrs}
            best = max(votes.values())
            winners = [c for c, v in votes.items() if v == best]
            return winners[0] if len(winners) == 1 and 2 * best > self.n else None
        key = {"size": lambda a: a.size, "mtime": lambda a: a.mtime_ns,
               "ctime": lambda a: a.ctime_ns}[policy]
        best = max(key(a) for a in attrs.values())
        winners = [i for i, a in attrs.items() if key(a) == best]
        return winners[0] if len(winners) == 1 else None

    async def resolve_split_brain(self, ctx: AfrInode, kind: int,
                                  inode: Optional[Inode]) -> list[int]:
        """Readable children of a file in split brain: the policy's winner, or EIO."""
        present = ctx.present()
        winner = self._favorite(await self._attrs(ctx, present), ctx, kind)
        if winner is None:
            self._report_split_brain(KIND_NAMES[kind], ctx.name, ctx.gfid, present, ctx)
            raise FopError(errno.EIO, "split brain")
        pend = ctx.changelog.pending
        for x in present:
            if x != winner and pend[x][winner][kind]:
                pend[x][winner][kind] = 0
                if self.up[x]:
                    await self.write_row(ctx, x, [winner])
        for y in present:
            if y != winner:
                pend[winner][y][kind] = max(1, pend[winner][y][kind])
        await self.write_row(ctx, winner, [y for y in present if y != winner])
        self.log.warning("%s: split brain (%s) on gfid %s, name %r resolved by "
                         "favorite-child-policy %s: %s wins", self.name, KIND_NAMES[kind],
                         ctx.gfid.hex(), ctx.name, self.opts.favorite_child_policy,
                         self.child_names[winner])
        if inode is not None:
            self.queue_heal(inode)
            self.upcall(InvalidateInode(inode))    # what the kernel cached may be the loser's
        return [winner]

    async def resolve_entry_split_brain(self, parent: Inode, pctx: AfrInode, name: bytes,
                                        found: dict[int, Entry], gfids: dict, good: list[int]
                                        ) -> bytes:
        """The gfid a name with different gfids on good children stands for, or EIO."""
        attrs = {i: found[i].attr for i in good if gfids.get(i) is not None}
        winner = self._favorite(attrs, None, 0) if self.opts.favorite_child_policy not in (
            "majority",) else self._majority_gfid(gfids, good)
        if winner is None:
            self._report_split_brain("gfid mismatch", name, pctx.gfid, good, None)
            raise FopError(errno.EIO, "entry split brain")
        self.log.warning("%s: gfid mismatch on name %r in gfid %s resolved by "
                         "favorite-child-policy %s: %s wins", self.name, name,
                         pctx.gfid.hex(), self.opts.favorite_child_policy,
                         self.child_names[winner])
        return gfids[winner]

    def _majority_gfid(self, gfids: dict, good: list[int]) -> Optional[int]:
        for i in good:
            if 2 * sum(1 for j in gfids if gfids[j] == gfids[i]) > self.n:
                return i
        return None
