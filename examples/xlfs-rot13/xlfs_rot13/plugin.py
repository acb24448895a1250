"""The plugin module named by the ``xlfs`` entry point in pyproject.toml.

xlfs calls ``xlfs_register_xlators(register)`` once per process, when its translator
registry loads; a misspelled hook name is reported then, not silently ignored.
"""
from xlators import hookimpl

from .rot13 import Rot13


@hookimpl
def xlfs_register_xlators(register):
    register(Rot13)
