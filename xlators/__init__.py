"""xlators: the xlfs translator framework and the built-in translators.

Plugin authors import everything they need from here::

    from xlators import Translator, Option, FopError, hookimpl
"""
from .core import stdlib_compat  # noqa: F401  (first: the names PyPy 3.9 lacks)
from .core.errors import FopError, errno_of
from .core.events import Event
from .core.fops import FOP_BY_NAME, FOP_NAMES, FOPS, Fop
from .core.frame import Frame, system_frame
from .core.graph import Graph, GraphError
from .core.inode import Fd, Inode, InodeTable, Loc
from .core.options import Option, OptionError, Opts
from .core.hooks import hookimpl, hookspec
from .core.registry import Registry, UnknownTypeError, default_registry
from .core.translator import Translator
from .core.types import (LK_GET, LK_SET, LK_SETW, NOW, OFFSET_MAX, Attr, DirEntry, Entry,
                         Lock, SetAttr, StatFs, dirent_type)
from .core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode, StoreData

__all__ = [
    "FopError", "errno_of", "Event", "FOP_BY_NAME", "FOP_NAMES", "FOPS", "Fop", "Frame",
    "system_frame", "Graph", "GraphError", "Fd", "Inode", "InodeTable", "Loc", "Option",
    "OptionError", "Opts", "Registry", "UnknownTypeError", "default_registry", "hookimpl",
    "hookspec", "Translator", "LK_GET", "LK_SET", "LK_SETW", "NOW", "OFFSET_MAX", "Attr",
    "DirEntry", "Entry", "Lock", "SetAttr", "StatFs", "dirent_type", "DeleteEntry",
    "InvalidateEntry", "InvalidateInode", "StoreData",
]
