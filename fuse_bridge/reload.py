"""SIGHUP: read the volfile again and apply it.

Same text as before: nothing to do.  Same topology (names, types, child order): every
translator is reconfigured in place, children first, after all new values were validated
(one bad value changes nothing).  A new topology needs a graph switch, which this bridge
does not do yet: the reload is refused with a log line and the running graph stays.
Volumes the command line put on top (``graph.added_volumes``: ``--read-only``'s
features/read-only) are not in the file and take no part in the comparison.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Sequence

from xlators.core.graph import Graph, GraphError, apply_overrides
from xlators.core.options import OptionError, resolve_options
from xlators.core.volfile import VolfileError, load_volfile

log = logging.getLogger("xlfs.reload")


def _topology(volumes) -> list:
    return [(v.name, v.type, tuple(v.subvolumes)) for v in volumes]


def reload_volfile(graph: Graph, path: str, overrides: Sequence[str] = ()) -> bool:
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if getattr(graph, "volfile_digest", None) == digest:
            log.info("SIGHUP: %s unchanged; nothing to do", path)
            return False
        volumes = load_volfile(path)
        apply_overrides(volumes, overrides)
    except (OSError, VolfileError, GraphError) as exc:
        log.error("SIGHUP: cannot reload %s: %s", path, exc)
        return False
    added = set(getattr(graph, "added_volumes", ()))
    running = [v for v in graph.volumes if v.name in graph.xlators and v.name not in added]
    if _topology(volumes) != _topology(running):
        log.error("SIGHUP: %s describes a different graph; a graph switch is not supported "
                  "yet: remount to apply it", path)
        return False
    try:
        for v in volumes:   # validate everything before changing anything
            resolve_options(graph.xlators[v.name].options, v.options, v.name)
    except OptionError as exc:
        log.error("SIGHUP: %s: %s; nothing changed", path, exc)
        return False
    for v in volumes:       # definition order = children first
        graph.xlators[v.name].reconfigure(v.options)
    graph.volfile_digest = digest
    log.info("SIGHUP: %s reconfigured in place", path)
    return True
