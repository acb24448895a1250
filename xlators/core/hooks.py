"""The plugin hooks of xlfs (pluggy markers and specifications) and entry-point lookup, in
a module of their own.

Both the registry that calls the hooks (:mod:`xlators.core.registry`) and every module that
implements them (:mod:`xlators.builtin`, a plugin's module) import the markers from here,
so neither imports the other to get them.  Plugin authors use ``from xlators import
hookimpl``.
"""
from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "xlfs"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks an xlfs plugin can implement."""

    @hookspec
    def xlfs_register_xlators(self, register: Callable[[type], None]) -> None:
        """Call ``register(cls)`` for each Translator subclass the plugin provides."""


def entry_points(group: str) -> list:
    """The installed entry points of ``group`` (plugins, xlfsctl extensions)."""
    from importlib import metadata
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=group))
    return list(eps.get(group, ()))                          # Python < 3.10
