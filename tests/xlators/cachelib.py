"""Helpers shared by the tests of the metadata caches (md-cache, nl-cache): a translator
counting the fops that reach it, one holding the replies of chosen fops until let go (to
make a reply cross a change on its way up), a settable clock, and a builder of the
tested translator over one such translator over a storage."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Optional

import trio

from xlators import Translator
from xlators.testing import Harness, make_translator


class Clock:
    """A settable clock for a translator's ``clock`` attribute (starts at 1000 s)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting(Translator):
    """Counts the fops of ``counted`` that reach it (``counts["lookup"]``)."""
    type = "test/counting"
    passes_data_through = True      # it changes nothing
    counted: tuple[str, ...] = ()

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.counts: Counter = Counter()


class HoldReplies(Translator):
    """Holds the reply (or error) of each fop of ``held`` until ``go`` is set, after it
    came back from the child; ``answered`` is set when one is held.  ``rearm()`` makes
    both new (hold the next replies)."""
    type = "test/hold-replies"
    held: tuple[str, ...] = ()

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.rearm()

    def rearm(self) -> None:
        self.answered = trio.Event()
        self.go = trio.Event()


def _counting_fop(name: str) -> Any:
    async def fop(self: Counting, frame: Any, *args: Any, **kw: Any) -> Any:
        self.counts[name] += 1
        return await getattr(self.child, name)(frame, *args, **kw)
    fop.__name__ = name
    return fop


def _held_fop(name: str) -> Any:
    async def fop(self: HoldReplies, frame: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await getattr(self.child, name)(frame, *args, **kw)
        finally:
            self.answered.set()
            await self.go.wait()
    fop.__name__ = name
    return fop


def counting(*fops: str) -> type[Counting]:
    """A :class:`Counting` class counting ``fops``."""
    return type("Counting", (Counting,), {"counted": fops,
                                          **{f: _counting_fop(f) for f in fops}})


def holding(*fops: str) -> type[HoldReplies]:
    """A :class:`HoldReplies` class holding the replies of ``fops``."""
    return type("HoldReplies", (HoldReplies,), {"held": fops,
                                                **{f: _held_fop(f) for f in fops}})


def over(xl_type: str, middle: type[Translator], options: Optional[Mapping[str, str]] = None,
         leaf: str = "storage/memory",
         leaf_options: Optional[Mapping[str, str]] = None
         ) -> tuple[Harness, Any, Translator]:
    """``xl_type`` (``options``: names with underscores or dashes) over an instance of
    ``middle`` over ``leaf``, initialised: (harness, middle, leaf)."""
    leaf_xl = make_translator(leaf, (), leaf_options or {})
    mid = middle("mid", [leaf_xl], {}, itable=leaf_xl.itable)
    opts = {k.replace("_", "-"): v for k, v in (options or {}).items()}
    top = make_translator(xl_type, (mid,), opts, itable=leaf_xl.itable)
    h = Harness(top)
    h.init()
    return h, mid, leaf_xl
