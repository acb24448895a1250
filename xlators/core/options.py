"""Translator options, declared GlusterFS-style and parsed from volfile text.

A translator declares ``options = (Option.bool("read-only", default=True, ...), ...)``.
Values arrive as strings (from a volfile, TOML or ``--xlator-option``) and are parsed by
type; a bad value raises :class:`OptionError` naming the volume, the option and the value.
Parsed values are reachable as ``self.opts.read_only`` or ``self.opts["read-only"]``.
``required=True`` makes a graph that leaves the option unset fail to build (checked by
:class:`~xlators.core.graph.Graph`, so ``xlfsctl check`` and ``--volfile-check`` catch it
without calling ``init()``).

Types and what they accept:

- bool: yes/no, on/off, true/false, enable/disable, 1/0 (any case)
- int: decimal, 0x hex or 0 octal; min/max
- size: a number with an optional unit, 1024-based as in GlusterFS: B, KB/K/KiB, MB/M/MiB,
  GB/G/GiB, TB/T/TiB, PB/P/PiB (any case); result in bytes
- percent: ``10%`` or ``10`` (0 to 100); result a float
- time: seconds with an optional unit: us, ms, s/sec, m/min, h/hr, d/days, w/wk; result in
  seconds (float)
- double: a float; min/max
- str: any text, or one of ``values`` when given (case-insensitive)
- path: an absolute path (``brick=True``: a directory the translator stores into, see
  :func:`xlators.core.graph.bricks`; ``own_file=True``: a file it writes itself, see
  ``Translator.own_files``)
- xlator: the name of a volume in the graph
- fops: a comma list of fop names (GlusterFS aliases accepted); empty means all
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from .fops import resolve_fop_names


class OptionError(ValueError):
    """A bad option value; str() names volume, option and value."""

    def __init__(self, volume: str, key: str, value: str, reason: str,
                 where: str = "") -> None:
        self.volume, self.key, self.value, self.reason = volume, key, value, reason
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}volume '{volume}': option '{key}': invalid value "
                         f"'{value}': {reason}")


_TRUE = {"yes", "on", "true", "enable", "1"}
_FALSE = {"no", "off", "false", "disable", "0"}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
               "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
               "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
               "p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50}
_TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "us": 1e-6, "ms": 1e-3,
               "m": 60.0, "min": 60.0, "mins": 60.0, "h": 3600.0, "hr": 3600.0,
               "hrs": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
               "w": 604800.0, "wk": 604800.0}
_NUM_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise ValueError("not a boolean (yes/no, on/off, true/false, enable/disable, 1/0)")


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise ValueError("not an integer") from None


def parse_size(text: str) -> int:
    m = _NUM_UNIT.match(text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("not a size (a number with an optional unit: KB, MB, GB, TB, PB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_percent(text: str) -> float:
    t = text.strip()
    t = t[:-1] if t.endswith("%") else t
    try:
        value = float(t)
    except ValueError:
        raise ValueError("not a percentage (like 10 or 10%)") from None
    if not 0.0 <= value <= 100.0:
        raise ValueError("a percentage is between 0 and 100")
    return value


def parse_time(text: str) -> float:
    m = _NUM_UNIT.match(text)
    if not m or m.group(2).lower() not in _TIME_UNITS:
        raise ValueError("not a time (a number with an optional unit: us, ms, s, m, h, d, w)")
    return float(m.group(1)) * _TIME_UNITS[m.group(2).lower()]


def parse_double(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("not a number") from None


@dataclass(frozen=True)
class Option:
    key: str
    type: str
    default: Optional[str] = None      # text form, parsed like a user value; None = unset
    description: str = ""
    aliases: tuple[str, ...] = ()
    min: Optional[float] = None
    max: Optional[float] = None
    values: tuple[str, ...] = ()       # allowed values for str
    parser: Optional[Callable[[str], Any]] = field(default=None, compare=False)
    #: the graph refuses to start (and ``xlfsctl check`` fails) when it is not set
    required: bool = False
    #: a path option naming a directory the translator stores into (storage/posix's
    #: ``directory``): required, and never the mountpoint, inside it or around it
    brick: bool = False
    #: a path option naming a file the translator writes itself (debug/trace's
    #: ``log-file``): never inside the mountpoint (writing it would wait for the mount)
    own_file: bool = False

    # -- constructors, one per type ------------------------------------------------
    @classmethod
    def bool(cls, key: str, default: Any = None, description: str = "", **kw: Any) -> "Option":
        if isinstance(default, bool):
            default = "on" if default else "off"
        return cls(key, "bool", default, description, **kw)

    @classmethod
    def int(cls, key: str, default: Any = None, description: str = "", **kw: Any) -> "Option":
        return cls(key, "int", None if default is None else str(default), description, **kw)

    @classmethod
    def size(cls, key: str, default: Any = None, description: str = "", **kw: Any) -> "Option":
        return cls(key, "size", None if default is None else str(default), description, **kw)

    @classmethod
    def percent(cls, key: str, default: Any = None, description: str = "",
                **kw: Any) -> "Option":
        return cls(key, "percent", None if default is None else str(default), description, **kw)

    @classmethod
    def time(cls, key: str, default: Any = None, description: str = "", **kw: Any) -> "Option":
        return cls(key, "time", None if default is None else str(default), description, **kw)

    @classmethod
    def double(cls, key: str, default: Any = None, description: str = "",
               **kw: Any) -> "Option":
        return cls(key, "double", None if default is None else str(default), description, **kw)

    @classmethod
    def str(cls, key: str, default: Optional[str] = None, description: str = "",
            **kw: Any) -> "Option":
        return cls(key, "str", default, description, **kw)

    @classmethod
    def path(cls, key: str, default: Optional[str] = None, description: str = "",
             **kw: Any) -> "Option":
        return cls(key, "path", default, description, **kw)

    @classmethod
    def xlator(cls, key: str, default: Optional[str] = None, description: str = "",
               **kw: Any) -> "Option":
        return cls(key, "xlator", default, description, **kw)

    @classmethod
    def fops(cls, key: str, default: str = "", description: str = "", **kw: Any) -> "Option":
        return cls(key, "fops", default, description, **kw)

    # -- parsing --------------------------------------------------------------------
    @property
    def attr(self) -> str:
        return self.key.replace("-", "_").replace(".", "_")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.key,) + self.aliases

    def parse(self, text: str, volume: str = "?", where: str = "") -> Any:
        """Parse ``text``; OptionError naming volume, option and value on failure."""
        try:
            value = self._parse(text)
        except ValueError as exc:
            raise OptionError(volume, self.key, text, str(exc), where) from None
        if self.min is not None and value < self.min:
            raise OptionError(volume, self.key, text, f"below the minimum {self.min:g}", where)
        if self.max is not None and value > self.max:
            raise OptionError(volume, self.key, text, f"above the maximum {self.max:g}", where)
        return value

    def _parse(self, text: str) -> Any:
        if self.parser is not None:
            return self.parser(text)
        t = self.type
        if t == "bool":
            return parse_bool(text)
        if t == "int":
            return parse_int(text)
        if t == "size":
            return parse_size(text)
        if t == "percent":
            return parse_percent(text)
        if t == "time":
            return parse_time(text)
        if t == "double":
            return parse_double(text)
        if t == "fops":
            return resolve_fop_names(text)
        if t == "path":
            if not text.startswith("/"):
                raise ValueError("not an absolute path")
            return text
        if t in ("str", "xlator"):
            if self.values:
                for allowed in self.values:
                    if text.lower() == allowed.lower():
                        return allowed
                raise ValueError(f"allowed values: {', '.join(self.values)}")
            return text
        raise ValueError(f"unknown option type {t!r}")

    def describe_type(self) -> str:
        extra = ""
        if self.values:
            extra = " (" + "|".join(self.values) + ")"
        elif self.min is not None or self.max is not None:
            lo = "" if self.min is None else f"{self.min:g}"
            hi = "" if self.max is None else f"{self.max:g}"
            extra = f" [{lo}..{hi}]"
        return self.type + extra


class Opts:
    """Parsed option values of one translator: ``opts.key_name`` or ``opts["key-name"]``."""

    def __init__(self, values: Mapping[str, Any], given: Iterable[str] = ()) -> None:
        self._values = dict(values)
        self.given = frozenset(given)   # keys set explicitly (unset is not the same as off)
        for key, value in self._values.items():
            object.__setattr__(self, key.replace("-", "_").replace(".", "_"), value)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def items(self):
        return self._values.items()

    def __repr__(self) -> str:
        return f"Opts({self._values!r})"


def resolve_options(declared: Iterable[Option], given: Mapping[str, str], volume: str,
                    where: Callable[[str], str] = lambda key: "",
                    on_unknown: Optional[Callable[[str], None]] = None) -> Opts:
    """Parse ``given`` (key -> text) against the declarations, with defaults filled in."""
    by_name: dict[str, Option] = {}
    for opt in declared:
        for name in opt.names:
            by_name[name] = opt
    texts: dict[str, str] = {}
    spelled: dict[str, str] = {}   # declared key -> the name the user wrote (for where())
    for key, text in given.items():
        opt = by_name.get(key)
        if opt is None:
            if on_unknown is not None:
                on_unknown(key)
            continue
        texts[opt.key] = text
        spelled[opt.key] = key
    values: dict[str, Any] = {}
    for opt in {id(o): o for o in by_name.values()}.values():
        if opt.key in texts:
            values[opt.key] = opt.parse(texts[opt.key], volume, where(spelled[opt.key]))
        elif opt.default is not None:
            values[opt.key] = opt.parse(opt.default, volume, "default")
        else:
            values[opt.key] = None
    return Opts(values, texts.keys())
