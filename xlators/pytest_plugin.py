"""The pytest plugin of xlfs: translator tests run with plain ``pytest``.

Installing xlfs registers this module as a pytest plugin (the ``pytest11`` entry point
``xlfs``), so a plugin author's project needs no configuration::

    pip install xlfs pytest          # pytest is not a dependency of xlfs; this loads only under it
    pytest

    async def test_upper(xlfs_stack):
        h = xlfs_stack("my/upper")               # my/upper over storage/memory
        fd = await h.create("/f")
        ...

What it gives:

- ``async def`` tests run under trio (each in its own ``trio.run``).  When pytest-trio is
  installed and handles a test (``trio_mode = true`` or ``@pytest.mark.trio``), pytest-trio
  runs it instead, with its async fixtures and ``nursery``; without pytest-trio, the
  ``trio_mode`` ini key is accepted (and changes nothing).  Tests marked ``asyncio`` are
  left to their plugin.
- fixtures (all function-scoped; what they build is finalised after the test):

  ``xlfs_frame``   a call :class:`~xlators.core.frame.Frame` (uid/gid 0, this pid)
  ``xlfs_stack``   ``xlfs_stack(*types, options=None, leaf="storage/memory")``: a
                   :class:`~xlators.testing.Harness` over the types stacked on the leaf
  ``xlfs_graph``   ``xlfs_graph(volfile_text, overrides=())``: a Harness over a whole graph
                   built from volfile text (init and PARENT_UP done)
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import pytest

from .core.frame import Frame
from .testing import Harness

_HAVE_PYTEST_TRIO = importlib.util.find_spec("pytest_trio") is not None


def pytest_addoption(parser: Any) -> None:
    if not _HAVE_PYTEST_TRIO:     # accept projects configured for pytest-trio
        parser.addini("trio_mode", "async tests run under trio (always, with xlfs's plugin)",
                      type="bool", default=True)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "xlfs: a test of an xlfs translator")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: Any) -> Optional[bool]:
    """Run an ``async def`` test that no other plugin took under trio."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn) or pyfuncitem.get_closest_marker("asyncio"):
        return None
    import trio
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    trio.run(functools.partial(fn, **kwargs))
    return True


@pytest.fixture
def xlfs_frame() -> Frame:
    """A call frame as the bridge makes for root: uid/gid 0, this process's pid."""
    return Frame(unique=2, uid=0, gid=0, pid=os.getpid())


@pytest.fixture
def xlfs_stack() -> Iterator[Callable[..., Harness]]:
    """Factory: ``xlfs_stack("a/x", "b/y", options={"a/x": {...}})`` is a/x over b/y over
    storage/memory (or ``leaf=``), initialised; finalised after the test."""
    made: list[Harness] = []

    def make(*types: str, options: Optional[Mapping[str, Mapping[str, str]]] = None,
             leaf: str = "storage/memory") -> Harness:
        h = Harness.stack(*types, leaf=leaf, options=options)
        made.append(h)
        return h

    yield make
    for h in reversed(made):
        h.fini()


@pytest.fixture
def xlfs_graph() -> Iterator[Callable[..., Harness]]:
    """Factory: ``xlfs_graph(volfile_text, overrides=())`` is a Harness over the graph the
    text describes (built, init() and PARENT_UP done); finalised after the test."""
    made: list[Harness] = []

    def make(text: str, overrides: Sequence[str] = ()) -> Harness:
        h = Harness.from_volfile(text, overrides)
        made.append(h)
        return h

    yield make
    for h in reversed(made):
        h.fini()
