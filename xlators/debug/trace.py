"""debug/trace: log every fop call and its result, with arguments named as in the fop table.

Each call gives two lines, GlusterFS style, keyed by the request's unique number::

    42: writev(fd=<Fd fh=3 ino=7>, data=<4096 bytes>, offset=0, flags=0)
    42: writev => 4096
    44: lookup(loc=<Loc parent=1 name=b'nope'>)
    44: lookup => op_ret=-1 op_errno=2 (ENOENT)

Lines go to the translator's logger at INFO (``log-file``, the default), to a file when
``log-file`` is a path, and into a ring buffer of ``history-size`` lines shown in the
statedump when ``log-history`` is on.  ``include-ops`` or ``exclude-ops`` choose fops
(GlusterFS accepts only one of them).  While flush is traced and the lines go somewhere,
trace needs the kernel's FLUSH at every close (``needs_flush``); otherwise it does not,
and in a stack where nothing else needs it the kernel sends none (FOPEN_NOFLUSH).

    volume trace
        type debug/trace
        option include-ops lookup,create,writev,flush
        option log-history on
        option history-size 256
        subvolumes posix
    end-volume
"""
from __future__ import annotations

import collections
import errno
import logging
import time
from typing import Any, Mapping, Optional, TextIO

from ..core.dir_batch import DirBatch
from ..core.errors import errno_of
from ..core.fops import FOP_NAMES, FOPS, Fop
from ..core.inode import Fd, Inode, Loc
from ..core.options import Opts, Option, parse_bool
from ..core.translator import Translator
from ..core.types import Attr, DirEntry, Entry
from ._wrap import install_fops, lenient_fops, named_args

INFO = logging.INFO


def parse_log_file(text: str) -> Any:
    """GlusterFS's boolean (log through the translator's logger or not), or a path: log
    through the logger and append every line to that file as well."""
    t = text.strip()
    if t.startswith("/"):
        return t
    return parse_bool(t)


def fmt(value: Any) -> str:
    """A short, readable form of a fop argument or result."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        n = len(value)
        if n <= 64 and isinstance(value, bytes):
            return repr(value)
        return f"<{n} bytes>"
    if isinstance(value, Inode):
        return f"<Inode nodeid={value.nodeid} ino={value.ino}>"
    if isinstance(value, Fd):
        return f"<Fd fh={value.fh} ino={value.inode.ino} flags={value.flags:#o}>"
    if isinstance(value, Loc):
        parent = value.parent.nodeid if value.parent is not None else None
        extra = f" ino={value.inode.ino}" if value.inode is not None else ""
        return f"<Loc parent={parent} name={value.name!r}{extra}>"
    if isinstance(value, Attr):
        return (f"{{ino={value.ino} mode={value.mode:#o} nlink={value.nlink} "
                f"uid={value.uid} gid={value.gid} size={value.size}}}")
    if isinstance(value, Entry):
        return f"<Entry nodeid={value.inode.nodeid} {fmt(value.attr)}>"
    if isinstance(value, (list, DirBatch)):
        if value and isinstance(value[0], DirEntry):
            return f"<{len(value)} entries, last off={value[-1].off}>"
        if len(value) > 16:
            return f"<list of {len(value)}>"
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(value)


class Trace(Translator):
    """debug/trace: log each fop call and its result or errno."""
    type = "debug/trace"
    children_range = (1, 1)
    # It logs the fop stream, a close's flush included: needed when flush is traced and
    # its lines go somewhere (set from the options by _apply).
    needs_flush = True
    options = (
        Option.fops("include-ops", default="", aliases=("include",), parser=lenient_fops,
                    description="Trace only these fops (comma separated, GlusterFS names "
                                "accepted).  Empty: every fop."),
        Option.fops("exclude-ops", default="", aliases=("exclude",), parser=lenient_fops,
                    description="Trace every fop except these.  Give include-ops or "
                                "exclude-ops, not both."),
        Option.int("history-size", default=1024, min=1,
                   description="Lines kept for the statedump when log-history is on."),
        Option.str("log-file", default="yes", parser=parse_log_file, own_file=True,
                   description="yes: log the lines through the translator's logger at INFO; "
                               "no: don't; a path: log them and append them to that file "
                               "too.  (GlusterFS's default is no.)"),
        Option.bool("log-history", default=False,
                    description="Keep the last history-size lines in memory; the statedump "
                                "shows them."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._file: Optional[TextIO] = None
        self._file_path: Optional[str] = None
        self.history: collections.deque[str] = collections.deque(maxlen=1)
        self._check(self.given_options)
        self._apply()

    def _check(self, given: Mapping[str, str]) -> None:
        if self._nonempty("include-ops", given) and self._nonempty("exclude-ops", given):
            raise ValueError(f"volume '{self.name}' (debug/trace): give only one of "
                             "'include-ops' and 'exclude-ops'")

    def _nonempty(self, key: str, given: Optional[Mapping[str, str]] = None) -> bool:
        """Was option ``key`` (or an alias) given with a non-empty value?"""
        given = self.given_options if given is None else given
        opt = next(o for o in self.options if o.key == key)
        return any(given.get(n, "").strip() for n in opt.names)

    def reconfigure(self, options: Mapping[str, str]) -> None:
        self._check(options)            # refuse before changing anything
        super().reconfigure(options)

    def init(self) -> None:
        self._open_file()

    def fini(self) -> None:
        self._close_file()

    def reconfigured(self, old: Opts) -> None:
        self._apply()
        self._open_file()

    def _apply(self) -> None:
        o = self.opts
        if self._nonempty("exclude-ops"):
            traced = frozenset(FOP_NAMES) - frozenset(o.exclude_ops)
        else:
            traced = frozenset(o.include_ops)
        self._traced = traced
        self._to_log = o.log_file is not False
        self._path = o.log_file if isinstance(o.log_file, str) else None
        self._history_on = bool(o.log_history)
        self.needs_flush = "flush" in traced and (self._to_log or self._history_on)
        if self.history.maxlen != o.history_size:
            self.history = collections.deque(self.history, maxlen=o.history_size)

    def _open_file(self) -> None:
        if self._path == self._file_path:
            return
        self._close_file()
        if self._path is not None:
            self._file = open(self._path, "a", buffering=1, encoding="utf-8",
                              errors="backslashreplace")
            self._file_path = self._path

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._file_path = None

    def _active(self) -> bool:
        """Is anyone going to see a line? (No formatting otherwise.)"""
        return (self._history_on or self._file is not None
                or (self._to_log and self.log.isEnabledFor(INFO)))

    def emit(self, line: str) -> None:
        if self._to_log and self.log.isEnabledFor(INFO):
            self.log.info("%s", line)
        if self._file is not None:
            try:
                self._file.write(line + "\n")
            except OSError as exc:  # a full disk must not fail the fop
                self.log.warning("log-file %s: %s", self._file_path, exc)
        if self._history_on:
            self.history.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"traced": ",".join(n for n in FOP_NAMES if n in self._traced),
                               "log_history": self._history_on}
        if self._history_on:
            out["history-size"] = len(self.history)
            for i, line in enumerate(self.history):
                out[f"history.{i}"] = line
        return out

    def history_lines(self) -> list[str]:
        """The lines kept with log-history (oldest first)."""
        return list(self.history)


def _make(fop: Fop):
    name = fop.name

    async def traced_fop(self: Trace, frame: Any, *args: Any, **kwargs: Any) -> Any:
        child_fop = getattr(self.child, name)
        if name not in self._traced or not self._active():
            return await child_fop(frame, *args, **kwargs)
        unique = getattr(frame, "unique", 0)
        self.emit(f"{unique}: {name}("
                  + ", ".join(f"{k}={fmt(v)}" for k, v in named_args(fop, args, kwargs))
                  + ")")
        try:
            result = await child_fop(frame, *args, **kwargs)
        except Exception as exc:
            err = errno_of(exc)
            self.emit(f"{unique}: {name} => op_ret=-1 op_errno={err} "
                      f"({errno.errorcode.get(err, '?')})")
            raise
        except BaseException as exc:  # trio.Cancelled and friends
            self.emit(f"{unique}: {name} => {type(exc).__name__}")
            raise
        self.emit(f"{unique}: {name} => {fmt(result)}")
        return result
    return traced_fop


install_fops(Trace, _make, FOPS, "Logged (call and result), then wound to the child.")
