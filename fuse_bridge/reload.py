"""SIGHUP: read the volfile again and decide what to do with it.

Same text as before: nothing to do.  Same topology (names, types, child order): every
translator is reconfigured in place, children first, after all new values were validated
(one bad value changes nothing).  A new topology: a graph switch (fuse_bridge.graph_switch
builds the new graph beside the running one and moves the mount over to it).  Volumes
the command line put on top (``graph.added_volumes``: ``--read-only``'s
features/read-only) are not in the file: they take no part in the comparison and are put
on top of a new graph again.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

from xlators.core.graph import Graph, GraphError, apply_overrides
from xlators.core.options import OptionError, resolve_options
from xlators.core.volfile import VolfileError, VolumeSpec, load_volfile

log = logging.getLogger("xlfs.reload")

UNCHANGED, RECONFIGURE, SWITCH, FAILED = "unchanged", "reconfigure", "switch", "failed"


@dataclass
class Plan:
    """What a reload of ``path`` means for the running graph."""
    kind: str                                   # UNCHANGED, RECONFIGURE, SWITCH, FAILED
    path: str
    volumes: list[VolumeSpec] = field(default_factory=list)   # overrides applied
    digest: str = ""
    error: str = ""


def _topology(volumes) -> list:
    return [(v.name, v.type, tuple(v.subvolumes)) for v in volumes]


def file_volumes(graph: Graph) -> list[VolumeSpec]:
    """The running graph's volumes that came from the volfile (not the command line)."""
    added = set(getattr(graph, "added_volumes", ()))
    return [v for v in graph.volumes if v.name in graph.xlators and v.name not in added]


def plan_reload(graph: Graph, path: str, overrides: Sequence[str] = ()) -> Plan:
    """Read ``path`` and compare it with what runs."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if getattr(graph, "volfile_digest", None) == digest:
            return Plan(UNCHANGED, path, digest=digest)
        volumes = load_volfile(path)
        apply_overrides(volumes, overrides)
    except OSError as exc:
        return Plan(FAILED, path, error=f"cannot read {path}: {exc.strerror or exc}")
    except (VolfileError, GraphError) as exc:
        return Plan(FAILED, path, error=f"cannot reload {path}: {exc}")
    kind = RECONFIGURE if _topology(volumes) == _topology(file_volumes(graph)) else SWITCH
    return Plan(kind, path, volumes, digest)


def reconfigure_in_place(graph: Graph, plan: Plan) -> Optional[str]:
    """Apply ``plan``'s option values to the running translators; None, or why nothing
    changed."""
    try:
        for v in plan.volumes:   # validate everything before changing anything
            resolve_options(graph.xlators[v.name].options, v.options, v.name)
    except OptionError as exc:
        return f"{plan.path}: {exc}; nothing changed"
    for v in plan.volumes:       # definition order = children first
        try:
            graph.xlators[v.name].reconfigure(v.options)
        except Exception as exc:  # noqa: BLE001 (a translator's own failure, reported)
            return (f"{plan.path}: volume {v.name}: reconfigure failed: {exc}; the "
                    f"volumes before it have their new options, it and those after "
                    f"may be partly changed")
    graph.volfile_digest = plan.digest
    return None
