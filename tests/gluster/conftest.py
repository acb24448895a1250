"""Fixtures of the GlusterFS tests: real bricks (session-scoped; every daemon is killed by
pid on every path: fixture finalizers, and atexit in tests.gluster.bricks), one libgfapi
client graph for the translator tests, and a glusterd-managed volume.

The whole directory is skipped, with the reason, when the GlusterFS packages are missing
(scripts/setup.sh installs glusterfs-server and glusterfs-client) or not running as root.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.gluster.bricks import Bricks, Glusterd, missing

WHY = missing()


def pytest_collection_modifyitems(config, items):
    if WHY is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=WHY))


def gfapi_volfile(client_volfile: Path, log: Path, extra: str = "") -> str:
    return (f"volume gv\n    type storage/gfapi\n    option volfile {client_volfile}\n"
            f"    option log-file {log}\n{extra}end-volume\n")


@pytest.fixture(scope="session")
def gluster_base():
    base = Path(tempfile.mkdtemp(prefix="xlfs-gluster-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def bricks(gluster_base):
    """A replica-2 volume of two glusterfsd bricks, no glusterd."""
    b = Bricks(gluster_base / "bricks", 2, "gv0")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def client_graph(bricks, gluster_base):
    """One storage/gfapi graph for the translator tests (glfs_init once: glfs_fini
    takes 9-10 s, it runs in the background at the end)."""
    from xlators.core.graph import Graph
    g = Graph.from_text(gfapi_volfile(bricks.client_volfile, gluster_base / "gfapi.log"))
    g.init()
    g.activate()
    try:
        yield g
    finally:
        g.fini()


@pytest.fixture
async def h(client_graph, nursery):
    """A harness over the session's gfapi graph, with this test's nursery attached (the
    upcall reader runs in it)."""
    from xlators.testing import Harness
    harness = Harness(client_graph)
    harness.attach_nursery(nursery)
    gf = client_graph.top
    if gf._upcalls is not None:
        gf._upcalls.started = False
    yield harness
    nursery.cancel_scope.cancel()


@pytest.fixture(scope="session")
def glusterd(gluster_base):
    """One glusterd for the session, and a replica-2 volume 'xv' made with the CLI."""
    g = Glusterd(gluster_base / "gd")
    try:
        g.start()
        dirs = g.create_volume("xv", 2)
        yield g, "xv", dirs
    finally:
        g.stop()
