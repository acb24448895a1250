"""Statedumps: the process, the graph and every translator as ``[section]`` and
``key=value`` lines (GlusterFS's format).

Where: ``$XLFS_DUMP_DIR`` if set, else ``/var/run/xlfs`` for root and ``/tmp`` for other
users, named ``xlfsdump.<pid>.dump.<unix-seconds>`` (``.1``, ``.2``, ... appended when
several dumps fall in the same second: a dump never replaces another).  A dump is written
under a temporary name and then linked to its final name, so a reader never sees half a
dump.  Values are written as text: options as the volfile spells them (or their default),
booleans as yes/no, lists comma-separated, absent values as ``(none)``.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Mapping, Optional

DUMP_DIR_ENV = "XLFS_DUMP_DIR"


def dump_directory() -> str:
    """Where statedumps go (see the module docstring)."""
    return os.environ.get(DUMP_DIR_ENV) or ("/var/run/xlfs" if os.geteuid() == 0 else "/tmp")


def format_value(value: Any) -> str:
    """A state value as statedump text, never a Python repr."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode(errors="backslashreplace")
    if isinstance(value, Mapping):
        return ",".join(f"{format_value(k)}:{format_value(v)}" for k, v in value.items())
    if isinstance(value, (frozenset, set)):
        return ",".join(sorted(format_value(v) for v in value))
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return " ".join(str(value).split()) if "\n" in str(value) else str(value)


def option_texts(xl: Any) -> dict[str, str]:
    """Each declared option of ``xl`` as text: what was given, else the default."""
    given = getattr(xl, "given_options", {})
    out = {}
    for opt in xl.options:
        used = [name for name in opt.names if name in given]
        if used:
            out[opt.key] = given[used[-1]]
        elif opt.default is not None:
            out[opt.key] = opt.default
        else:
            out[opt.key] = "(unset)"
    return out


def format_statedump(graph: Any, extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    out = ["[process]", f"pid={os.getpid()}", f"argv={' '.join(sys.argv)}",
           f"time={time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
    for section, values in (extra or {}).items():
        out.append(f"[{section}]")
        out += [f"{k}={format_value(v)}" for k, v in values.items()]
        out.append("")
    out += ["[graph]", f"top={graph.top.name}", f"inodes={len(graph.itable)}", ""]
    for _, xl in graph.walk():
        out.append(f"[xlator.{xl.type.replace('/', '.')}.{xl.name}]")
        out += [f"option.{k}={v}" for k, v in option_texts(xl).items()]
        try:
            state = xl.dump()
        except Exception as exc:  # a dump must not fail because one translator does
            state = {"dump-error": f"{type(exc).__name__}: {exc}"}
        out += [f"{k}={format_value(v)}" for k, v in state.items()]
        out.append("")
    return "\n".join(out)


def write_statedump(graph: Any, directory: Optional[str] = None,
                    extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """Write a statedump; returns its path (never an existing dump's)."""
    return write_statedump_text(format_statedump(graph, extra), directory)


def write_statedump_text(text: str, directory: Optional[str] = None) -> str:
    """Write an already formatted statedump (blocking file I/O: a caller on the event
    loop formats there and writes from a worker thread); returns its path."""
    directory = directory or dump_directory()
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, f"xlfsdump.{os.getpid()}.dump.{int(time.time())}")
    tmp = os.path.join(directory, f".xlfsdump.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    try:
        n = 0
        while True:
            path = base if n == 0 else f"{base}.{n}"
            try:
                os.link(tmp, path)          # fails if the name is taken: no overwrite
                return path
            except FileExistsError:
                n += 1
    finally:
        os.unlink(tmp)
