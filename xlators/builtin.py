"""Registers the built-in translators through the same hook a plugin uses."""
from __future__ import annotations

import importlib
import pkgutil

from .core.hooks import hookimpl
from .core.translator import Translator

CATEGORIES = ("storage", "features", "performance", "cluster", "debug", "protocol", "meta")


def builtin_classes() -> list[type]:
    """Every Translator subclass defined in xlators/<category>/<module>.py."""
    found = []
    for category in CATEGORIES:
        try:
            pkg = importlib.import_module(f"{__package__}.{category}")
        except ImportError:
            continue
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.endswith("_binding"):
                continue  # a C library binding, loaded by its translator's init()
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            for obj in vars(mod).values():
                if (isinstance(obj, type) and issubclass(obj, Translator)
                        and obj.__module__ == mod.__name__ and obj.type):
                    found.append(obj)
    return found


@hookimpl
def xlfs_register_xlators(register):
    for cls in builtin_classes():
        register(cls)
