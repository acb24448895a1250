"""Fixtures of the GlusterFS tests: real bricks (session-scoped; every daemon is killed by
pid on every path: fixture finalizers, and atexit in tests.gluster.bricks), one libgfapi
client graph for the translator tests, and a glusterd-managed volume
in a test network namespace.

The whole directory is skipped, with the reason, when the GlusterFS packages are missing
(scripts/setup.sh installs glusterfs-server and glusterfs-client) or not running as root.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
import trio

from tests.gluster.bricks import Bricks, missing

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


async def closes_settled(h) -> None:
    """Wait for the closes storage/gfapi runs behind answered releases (replicate's
    post-op at a close changes the file's ctime on the bricks: a lookup made before it
    lands sees the old one, the next the new)."""
    with trio.fail_after(30):
        await h.top.drain()


@contextlib.contextmanager
def second_client(bricks, log):
    """Another libgfapi client of the same volume (its own graph), as a Harness."""
    from xlators.core.graph import Graph
    from xlators.testing import Harness
    other = Graph.from_text(gfapi_volfile(bricks.client_volfile, log))
    other.init()
    other.activate()
    try:
        yield Harness(other)
    finally:
        other.fini()


def brick_files(bricks, rel: str) -> list:
    """``rel`` on each brick's directory."""
    return [b.directory / rel for b in bricks.bricks]


@pytest.fixture(scope="session")
def gluster_base():
    base = Path(tempfile.mkdtemp(prefix="xlfs-gluster-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def bricks(gluster_base):
    """A replica-2 volume of two glusterfsd bricks, no glusterd; their io-stats count
    the requests they serve (Bricks.fop_stats)."""
    b = Bricks(gluster_base / "bricks", 2, "gv0", profile=True)   # fop_stats() works
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
    g = Graph.from_text(gfapi_volfile(bricks.client_volfile, gluster_base / "gfapi.log",
                                      "    option direct-rename on\n"))
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
    """One glusterd for the session, in a network and mount namespace of the run's own
    (tests.gluster.glusterd), and a replica-2 volume 'xv' made with the CLI."""
    from tests.gluster.glusterd import Glusterd
    from tests.gluster.netns import NetnsUnavailable
    g = Glusterd(gluster_base / "gd")
    try:
        try:
            g.start()
        except NetnsUnavailable as exc:
            pytest.skip(f"glusterd refuses loopback bricks and {exc}")
        dirs = g.create_volume("xv", 2)
        yield g, "xv", dirs
    finally:
        g.stop()


VOLFILE = Path(__file__).parent / "gfapi.vol"


def mount_gfapi(workdir: Path, client_volfile: Path, *flags: str, limit: float = 1800.0):
    """An xlfs mount of tests/gluster/gfapi.vol over ``client_volfile`` (not entered)."""
    from tests.mountlib import Mounted
    workdir.mkdir(parents=True, exist_ok=True)
    return Mounted(VOLFILE, workdir, *flags, limit=limit,
                   overrides=[f"gv.volfile={client_volfile}",
                              f"gv.log-file={workdir / 'gfapi.log'}"])


@pytest.fixture(scope="session")
def gfapi_mount(bricks, gluster_base):
    """xlfs mounted over the session's replica-2 volume through storage/gfapi."""
    from tests.mountlib import can_mount
    why = can_mount()
    if why:
        pytest.skip(why)
    m = mount_gfapi(gluster_base / "xlfs", bricks.client_volfile)
    m.__enter__()
    try:
        yield m
    finally:
        m.__exit__(None, None, None)


@pytest.fixture(scope="session")
def target(gfapi_mount):
    """The POSIX suite's target (tests/posix): the xlfs mount over storage/gfapi."""
    from tests.posix.posixlib import Target
    return Target("gfapi", gfapi_mount.mountpoint, brick=None, mount=gfapi_mount)


@pytest.fixture
def d(request, target):
    """This test's own directory on the mount (removed afterwards)."""
    import os
    import re
    from tests.posix.posixlib import rmtree
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:120]
    path = target.root / name
    rmtree(path)
    path.mkdir()
    os.chmod(path, 0o755)
    yield path
    rmtree(path)
    if target.mount.proc.poll() is not None:
        pytest.fail(f"the xlfs daemon died: {target.mount.read_log()[-3000:]}")
