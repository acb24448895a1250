"""The translator registry, on pluggy.

A package makes its translators usable by type name in a volfile by declaring an entry
point in the ``xlfs`` group whose module implements the hook::

    # pyproject.toml
    [project.entry-points.xlfs]
    rot13 = "xlfs_rot13.plugin"

    # xlfs_rot13/plugin.py
    from xlators import hookimpl

    @hookimpl
    def xlfs_register_xlators(register):
        register(Rot13)

The built-in translators register through the same hook (``xlators.builtin``).  Hook
implementations with misspelled names are caught when the registry loads.  Modules named
in the ``XLFS_PLUGINS`` environment variable (comma separated) are registered as plugins
too, with no packaging: handy for tests and while developing a translator.
"""
from __future__ import annotations

import difflib
import importlib
import os
import threading
from typing import Any, Callable, Optional

import pluggy

from .. import builtin
from .hooks import PROJECT, HookSpecs, entry_points, hookimpl, hookspec
from .translator import Translator

__all__ = ["PROJECT", "PLUGINS_ENV", "HookSpecs", "hookimpl", "hookspec", "Registry",
           "UnknownTypeError", "PluginError", "default_registry"]

#: Comma list of modules registered as plugins without being installed (tests, development).
PLUGINS_ENV = "XLFS_PLUGINS"


class UnknownTypeError(LookupError):
    def __init__(self, type_name: str, known: list[str]) -> None:
        self.type_name = type_name
        close = difflib.get_close_matches(type_name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        super().__init__(f"unknown translator type '{type_name}'{hint}; known types: "
                         + ", ".join(known))


class PluginError(Exception):
    """A plugin that cannot be loaded or registered; str() is one line naming it."""


class Registry:
    def __init__(self, *, load_entrypoints: bool = True) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(HookSpecs)
        self._types: dict[str, type] = {}
        self._origin: dict[str, str] = {}
        if load_entrypoints:
            for ep in entry_points(PROJECT):
                if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                    continue
                where = f"plugin '{ep.name}' (entry point {ep.value}) cannot be loaded"
                self._plugin_call(where, self.pm.load_setuptools_entrypoints, PROJECT,
                                  name=ep.name)       # pluggy keeps the distribution
        if not self.pm.is_registered(builtin):
            self.pm.register(builtin, name="builtin")
        for modname in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
            modname = modname.strip()
            where = f"plugin '{modname}' (from {PLUGINS_ENV})"
            module = self._import(where, importlib.import_module, modname)
            if not self.pm.is_registered(module):
                self._plugin_call(where, self.pm.register, module, name=modname)
        self._plugin_call("a plugin", self.pm.check_pending)  # misspelled hooks fail here
        for plugin in self.pm.get_plugins():
            name = self.pm.get_name(plugin) or repr(plugin)
            impl = getattr(plugin, "xlfs_register_xlators", None)
            if impl is not None:
                self._plugin_call(f"plugin '{name}'", impl,
                                  register=lambda cls, _n=name: self.register(cls, _n))

    @staticmethod
    def _import(where: str, load: Callable, *args: Any) -> Any:
        try:
            return load(*args)
        except Exception as exc:
            raise PluginError(f"{where} cannot be imported: {_one_line(exc)}") from exc

    @staticmethod
    def _plugin_call(where: str, fn: Callable, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Exception as exc:
            raise PluginError(f"{where}: {_one_line(exc)}") from exc

    def register(self, cls: type, origin: str = "direct") -> None:
        if not (isinstance(cls, type) and issubclass(cls, Translator)):
            raise TypeError(f"{origin}: {cls!r} is not a Translator subclass")
        t = cls.type
        if not t or t.count("/") != 1:
            raise ValueError(f"{origin}: {cls.__name__}.type must be 'category/name', not {t!r}")
        prev = self._types.get(t)
        if prev is not None and prev is not cls:
            raise ValueError(f"translator type '{t}' registered twice: by "
                             f"{self._origin[t]} and by {origin}")
        self._types[t] = cls
        self._origin[t] = origin

    def get(self, type_name: str) -> type:
        cls = self._types.get(type_name)
        if cls is None:
            raise UnknownTypeError(type_name, self.types())
        return cls

    def origin(self, type_name: str) -> str:
        return self._origin[type_name]

    def types(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, type_name: str) -> bool:
        return type_name in self._types


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, with the file and line of a syntax error."""
    text = " ".join(str(exc).split())
    if isinstance(exc, SyntaxError) and exc.filename:
        text = f"{exc.filename}:{exc.lineno}: {exc.msg}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_default: Optional[Registry] = None
_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry (entry points loaded once)."""
    global _default
    with _lock:
        if _default is None:
            _default = Registry()
        return _default
