"""debug/error-gen: fail chosen fops with an errno, for fault-injection tests.

GlusterFS's error-gen, with its options and their meaning (xlators/debug/error-gen):

- ``failure`` (percent) is how often an enabled fop fails; unset or 0 means never.
- ``random-failure off`` (the default) fails each call with probability ``failure``%,
  drawn independently per call (so ``failure 100`` fails every call: the deterministic
  mode for tests).  ``random-failure on`` is GlusterFS's legacy counting mode: calls of the
  enabled fops are counted and every Nth one fails; after each failure the next N is drawn
  from 3..44 as GlusterFS does.  The first N is 100/``failure`` (GlusterFS starts from an
  unscaled value here, a bug not carried over).
- ``error-no`` is the errno to fail with (ENOENT, EIO, ENOSPC, ... any errno name), or
  ``GF_ERROR_SHORT_WRITE``: writev then writes only half of its data (other fops fail
  with EIO).  Unset: a plausible errno for the fop, picked from the fop table.
- ``enable`` (alias ``error-fops``) lists the fops; unset means every fop.  Names that
  are not fops are ignored with a warning, as in GlusterFS.  forget, release and
  releasedir never fail.  With flush among the fops that may fail, error-gen needs the
  kernel's FLUSH at every close (``needs_flush``); otherwise it does not.

``random-seed`` (an xlfs addition) makes the random choices repeatable.

    volume errors
        type debug/error-gen
        option failure 100%
        option error-no EIO
        option enable writev
        subvolumes posix
    end-volume
"""
from __future__ import annotations

import errno
import random
from typing import Any, Optional

from ..core.errors import FopError, errno_from_name
from ..core.fops import Fop
from ..core.options import Opts, Option
from ..core.translator import Translator
from ._wrap import CALLBACK_FOPS, INJECTABLE_FOPS, arg_getter, install_fops, lenient_fops

#: error-no value meaning "short write" (GlusterFS's GF_ERROR_SHORT_WRITE).
SHORT_WRITE = -1
FAILURE_GRANULARITY = 1 << 20     # probabilities are compared in 2**-20 steps, as GlusterFS
UNIVERSAL_ANSWER = 42             # the legacy mode's next gap is 3 + rand() % 42


def parse_error_no(text: str) -> int:
    t = text.strip().upper()
    if t == "GF_ERROR_SHORT_WRITE":
        return SHORT_WRITE
    return errno_from_name(t)


class ErrorGen(Translator):
    """debug/error-gen: fail a percentage of chosen fops with an errno."""
    type = "debug/error-gen"
    children_range = (1, 1)
    needs_flush = True   # when told to fail flush (set from the options by _apply)
    options = (
        Option.percent("failure",
                       description="How often an enabled fop fails, in percent.  Unset or "
                                   "0: never."),
        Option.str("error-no", parser=parse_error_no,
                   description="Errno name to fail with (ENOENT, EIO, ENOSPC, ...), or "
                               "GF_ERROR_SHORT_WRITE (writev writes half its data).  "
                               "Unset: a plausible errno for each fop."),
        Option.bool("random-failure", default=False,
                    description="off: every call fails with probability 'failure'.  on: "
                                "GlusterFS's legacy mode, fail every Nth call (N from "
                                "100/failure first, then 3..44 at random)."),
        Option.fops("enable", default="", aliases=("error-fops",), parser=lenient_fops,
                    description="Comma separated fops that may fail (GlusterFS names "
                                "accepted).  Unset: every fop."),
        Option.int("random-seed",
                   description="Seed of the random choices (xlfs addition), for repeatable "
                               "runs.  Unset: seeded from the system."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.injected: dict[str, int] = {}
        self._apply()

    def reconfigured(self, old: Opts) -> None:
        self._apply()

    def _apply(self) -> None:
        o = self.opts
        self._rng = random.Random(o.random_seed)
        pct = o.failure or 0.0
        self._enabled = frozenset(o.enable) - CALLBACK_FOPS if pct > 0 else frozenset()
        self.needs_flush = "flush" in self._enabled
        self._error_no: Optional[int] = o.error_no
        self._random_failure = bool(o.random_failure)
        self._threshold = int(pct / 100.0 * FAILURE_GRANULARITY)
        self._count = 0
        self._every = max(1, round(100.0 / pct)) if pct > 0 else 0

    def _should_fail(self) -> bool:
        if self._random_failure:
            self._count += 1
            if self._count % self._every == 0:
                self._count = 0
                self._every = 3 + self._rng.randrange(UNIVERSAL_ANSWER)
                return True
            return False
        return self._rng.getrandbits(20) < self._threshold

    def _pick(self, fop: Fop) -> int:
        if self._error_no is not None:
            return self._error_no
        return self._rng.choice(fop.errnos) if fop.errnos else errno.EIO

    def _injected(self, fop: Fop, err: int) -> None:
        self.injected[fop.name] = self.injected.get(fop.name, 0) + 1
        if self.log.isEnabledFor(10):
            self.log.debug("%s: unwind(-1, %s)", fop.name,
                           "short write" if err == SHORT_WRITE else errno.errorcode.get(err))

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": ",".join(sorted(self._enabled)),
                               "injected": sum(self.injected.values())}
        for name, n in self.injected.items():
            out[f"injected.{name}"] = n
        return out


def _make(fop: Fop):
    name = fop.name
    get_data = arg_getter(fop, "data") if name == "writev" else None

    async def failing_fop(self: ErrorGen, frame: Any, *args: Any, **kwargs: Any) -> Any:
        if name in self._enabled and self._should_fail():
            err = self._pick(fop)
            self._injected(fop, err)
            if err != SHORT_WRITE:
                raise FopError(err)
            if get_data is None:
                raise FopError(errno.EIO)
            data = get_data(args, kwargs)
            half = data[:len(data) // 2]
            args = (args[0], half) + tuple(args[2:]) if len(args) > 1 else args
            if "data" in kwargs:
                kwargs = dict(kwargs, data=half)
        return await getattr(self.child, name)(frame, *args, **kwargs)
    return failing_fop


install_fops(ErrorGen, _make, INJECTABLE_FOPS,
             "Fails when enabled and chosen, else wound to the child.")
