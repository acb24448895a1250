"""Validation a graph does when it is built, before any init(): what ``xlfsctl check``,
``xlfs --volfile-check`` and the mount all rely on (issue 11)."""
from __future__ import annotations

import pytest

from xlators import Translator
from xlators.core.graph import Graph, GraphError, bricks
from xlators.core.options import Option
from xlators.core.registry import Registry

POSIX_NO_DIR = "volume posix\n    type storage/posix\n    option o-direct off\nend-volume\n"


def test_storage_posix_without_its_directory_fails_to_build():
    with pytest.raises(GraphError) as info:
        Graph.from_text(POSIX_NO_DIR, "x.vol")
    assert str(info.value) == ("x.vol:1: volume 'posix' (storage/posix): option 'directory' "
                               "is required")


def test_the_directory_of_storage_posix_is_a_brick():
    g = Graph.from_text(POSIX_NO_DIR.replace("o-direct off", "directory /srv/b"), "x.vol")
    assert bricks(g["posix"]) == [("directory", "/srv/b")]
    assert bricks(Graph.from_text(MEMORY)["m"]) == []


class Needy(Translator):
    """needs an option (a test type)"""
    type = "testval/needy"
    options = (Option.str("target", required=True),
               Option.path("cache-dir", brick=True, default="/var/cache/needy"),
               Option.path("log", description="not a brick: the translator has children"))


class OwnBricks(Translator):
    """says itself where it stores (a test type)"""
    type = "testval/own"

    def bricks(self):
        return [("(computed)", "/srv/own")]


@pytest.fixture
def reg():
    r = Registry(load_entrypoints=False)
    r.register(Needy, "test")
    r.register(OwnBricks, "test")
    return r


MEMORY = "volume m\n type storage/memory\n option size 1MB\nend-volume\n"


def _needy(extra: str = "") -> str:
    return (MEMORY +
            f"volume n\n type testval/needy\n{extra} subvolumes m\nend-volume\n")


def test_a_required_option_left_unset_fails(reg):
    with pytest.raises(GraphError, match=r"n.vol:5: volume 'n' \(testval/needy\): option "
                                         r"'target' is required"):
        Graph.from_text(_needy(), "n.vol", registry=reg)
    # (line 5: the volume n starts after the 4 lines of MEMORY)
    g = Graph.from_text(_needy(), "n.vol", registry=reg, overrides=["n.target=x"])
    assert g["n"].opts.target == "x"


def test_declared_bricks_and_a_bricks_method(reg):
    g = Graph.from_text(_needy(" option target x\n"), registry=reg)
    assert bricks(g["n"]) == [("cache-dir", "/var/cache/needy")]
    g = Graph.from_text("volume o\n type testval/own\n option x y\nend-volume\n",
                        registry=reg)
    assert bricks(g["o"]) == [("(computed)", "/srv/own")]


def test_warnings_name_file_line_volume_and_key(reg):
    text = _needy(" option target x\n option targte y\n")
    g = Graph.from_text(text, "n.vol", registry=reg, overrides=["m.sise=1GB", "*.target=z"])
    assert g.warnings(["m.sise=1GB", "*.target=z"]) == [
        "--xlator-option: warning: volume 'm' (storage/memory): option 'sise' is not known "
        "(did you mean 'size'?)",
        "n.vol:8: warning: volume 'n' (testval/needy): option 'targte' is not known "
        "(did you mean 'target'?)",
    ]
