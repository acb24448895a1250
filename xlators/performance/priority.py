"""The ``priority`` option of performance/io-cache and performance/quick-read.

GlusterFS's form: a comma list of ``PATTERN:PRIORITY`` pairs, e.g. ``*.jpg:3,*.log:0``.
A file whose name matches a pattern (shell wildcards, first match wins) gets that
priority; other files get 1.  Under memory pressure the cache drops the pages of the lowest
priority first; priority 0 means "never cache".  xlfs matches the file's *name* (the last
path component), since a translator sees a parent and a name rather than a path.
"""
from __future__ import annotations

import fnmatch
from typing import Optional, Sequence

DEFAULT_PRIORITY = 1

Rules = tuple[tuple[str, int], ...]


def parse_priority(text: str) -> Rules:
    """``"*.jpg:3,*.log:0"`` -> ((``"*.jpg"``, 3), (``"*.log"``, 0)); ValueError on bad text."""
    rules = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        pattern, sep, prio = item.rpartition(":")
        if not sep or not pattern:
            raise ValueError(f"{item!r} is not PATTERN:PRIORITY")
        try:
            value = int(prio)
        except ValueError:
            raise ValueError(f"priority {prio!r} of {pattern!r} is not an integer") from None
        if value < 0:
            raise ValueError(f"priority {value} of {pattern!r} is negative")
        rules.append((pattern, value))
    return tuple(rules)


def priority_of(rules: Sequence[tuple[str, int]], name: Optional[bytes]) -> int:
    """The priority of a file called ``name`` (DEFAULT_PRIORITY when nothing matches)."""
    if name is None or not rules:
        return DEFAULT_PRIORITY
    text = name.decode("utf-8", "surrogateescape")
    for pattern, value in rules:
        if fnmatch.fnmatchcase(text, pattern):
            return value
    return DEFAULT_PRIORITY
