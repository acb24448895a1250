"""Statedumps: the process, the graph and every translator as ``[section]`` and
``key=value`` lines (GlusterFS's format), written to ``xlfsdump.<pid>.dump.<time>`` in
a temporary name first and renamed, so a reader never sees half a dump."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Mapping, Optional


def format_statedump(graph: Any, extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    out = [f"[process]", f"pid={os.getpid()}", f"argv={' '.join(sys.argv)}",
           f"time={time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
    for section, values in (extra or {}).items():
        out.append(f"[{section}]")
        out += [f"{k}={v}" for k, v in values.items()]
        out.append("")
    out += ["[graph]", f"top={graph.top.name}", f"inodes={len(graph.itable)}", ""]
    for _, xl in graph.walk():
        out.append(f"[xlator.{xl.type.replace('/', '.')}.{xl.name}]")
        for key, value in xl.opts.items():
            if isinstance(value, frozenset):
                value = ",".join(sorted(value))
            out.append(f"option.{key}={value}")
        try:
            state = xl.dump()
        except Exception as exc:  # a dump must not fail because one translator does
            state = {"dump-error": repr(exc)}
        out += [f"{k}={v}" for k, v in state.items()]
        out.append("")
    return "\n".join(out)


def write_statedump(graph: Any, directory: Optional[str] = None,
                    extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    directory = directory or os.environ.get("XLFS_DUMP_DIR") or (
        "/var/run/xlfs" if os.geteuid() == 0 else "/tmp")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"xlfsdump.{os.getpid()}.dump.{int(time.time())}")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(format_statedump(graph, extra))
    os.rename(tmp, path)
    return path
