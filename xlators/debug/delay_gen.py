"""debug/delay-gen: delay chosen fops by a fixed time before winding them.

GlusterFS's fault-injection translator, with its option names and defaults.  A chosen
call (``enable`` lists the fops; ``delay-percentage`` of their calls, picked at random)
waits ``delay-duration`` microseconds and then goes on to the child.  GlusterFS sleeps
the thread; xlfs *awaits*, so an interrupted or cancelled request ends its delay at once
and never reaches the child.  While a call waits, an interrupt handler is registered on
its frame, so a kernel INTERRUPT for it cancels the request (EINTR).  With flush among
the fops it may delay, delay-gen needs the kernel's FLUSH at every close
(``needs_flush``); otherwise it does not.

    volume delay
        type debug/delay-gen
        option delay-percentage 100%
        option delay-duration 2000000
        option enable flush
        subvolumes posix
    end-volume
"""
from __future__ import annotations

import random
from typing import Any

import trio

from ..core.fops import Fop
from ..core.options import Opts, Option
from ..core.translator import Translator
from ._wrap import CALLBACK_FOPS, INJECTABLE_FOPS, install_fops


class DelayGen(Translator):
    """debug/delay-gen: delay a percentage of chosen fops (awaited, so cancellable)."""
    type = "debug/delay-gen"
    children_range = (1, 1)
    needs_flush = True   # when told to delay flush (set from the options by _apply)
    options = (
        Option.percent("delay-percentage", default="10%",
                       description="Percentage of the enabled fops' calls that are "
                                   "delayed (chosen at random; 100% delays every call)."),
        Option.int("delay-duration", default=100000, min=0,
                   description="How long a delayed call waits before it is wound, in "
                               "microseconds."),
        Option.fops("enable", default="",
                    description="Comma separated fops to delay (case-insensitive; "
                                "GlusterFS names such as stat, write, ftruncate are "
                                "accepted).  Empty: every fop.  forget, release and "
                                "releasedir are never delayed."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._rng = random.Random()
        self._apply()
        #: How many calls were delayed, and how many of those were cancelled mid-delay.
        self.delayed = 0
        self.cancelled = 0

    def reconfigured(self, old: Opts) -> None:
        self._apply()

    def _apply(self) -> None:
        self._enabled = frozenset(self.opts.enable) - CALLBACK_FOPS
        self._fraction = self.opts.delay_percentage / 100.0
        self._seconds = self.opts.delay_duration / 1e6
        self.needs_flush = "flush" in self._enabled and self._fraction > 0.0

    async def _delay(self, frame: Any) -> None:
        self.delayed += 1
        frame.on_interrupt(self._interrupted)
        try:
            await trio.sleep(self._seconds)
        except trio.Cancelled:
            self.cancelled += 1
            raise

    def _interrupted(self) -> None:
        self.log.debug("interrupt during a delay: cancelling the request")

    def dump(self) -> dict[str, Any]:
        return {"enabled": ",".join(sorted(self._enabled)),
                "delay_percentage": self.opts.delay_percentage,
                "delay_duration_us": self.opts.delay_duration,
                "delayed": self.delayed, "cancelled_during_delay": self.cancelled}


def _make(fop: Fop):
    name = fop.name

    async def delayed_fop(self: DelayGen, frame: Any, *args: Any, **kwargs: Any) -> Any:
        if (name in self._enabled and self._fraction > 0.0
                and self._rng.random() < self._fraction):
            await self._delay(frame)
        return await getattr(self.child, name)(frame, *args, **kwargs)
    return delayed_fop


install_fops(DelayGen, _make, INJECTABLE_FOPS,
             "Delayed first when enabled and chosen, then wound to the child.")
