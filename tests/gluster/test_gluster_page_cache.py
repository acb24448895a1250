"""The kernel's page cache of xlfs over storage/gfapi, on real mounts: kept across opens
of an unchanged file (READs stop reaching the daemon, as with GlusterFS's own FUSE
client), dropped when another client (GlusterFS's FUSE client here) changes the file:

- with upcalls (the bricks' cache-invalidation on): at once, even for a file held open
  and with the kernel's auto invalidation off (the upcall drops the pages);
- without upcalls: at the first read after the attribute timeout (the kernel's auto
  invalidation compares the mtime it gets), or, with auto invalidation off, at the first
  open after the kernel asked for the file's attributes again (storage/gfapi keeps the
  pages only while mtime, ctime and size are those of the previous open);

and ``--fopen-keep-cache=no`` still drops them at every open.  docs/gluster.md, "Page
cache", describes the rule and these bounds."""
from __future__ import annotations

import os
import re

import pytest

from tests.gluster.bricks import Bricks, GlusterFuse
from tests.gluster.conftest import mount_gfapi
from tests.mountlib import can_mount, wait_until

pytestmark = pytest.mark.mount
SIZE = 256 * 1024
LONG = ("--attribute-timeout=600", "--entry-timeout=600")
NO_AUTO_INVAL = ("--auto-invalidation=no",)
# the attribute and entry timeouts here are 1 s (the defaults): a generous bound
SEEN_WITHIN = 30.0


@pytest.fixture(autouse=True)
def _mountable():
    why = can_mount()
    if why:
        pytest.skip(why)


def reads(m) -> int:
    """READs that reached the daemon (io-stats' count, through .meta)."""
    with open(m.path(".meta", "graphs", "active", "stats", "private")) as f:
        text = f.read()
    found = re.search(r"^readv\.count=(\d+)$", text, re.M)
    return int(found.group(1)) if found else 0


def kept(m) -> int:
    with open(m.path(".meta", "graphs", "active", "gv", "private")) as f:
        found = re.search(r"^opens-keeping-page-cache=(\d+)$", f.read(), re.M)
    assert found, "storage/gfapi's dump has no opens-keeping-page-cache"
    return int(found.group(1))


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def cached_twice(m, name: str, data: bytes) -> None:
    """Write ``name`` through ``m``, then read it until an open keeps the pages: a
    further open and read reaches the daemon with no READ."""
    with open(m.path(name), "wb") as f:
        f.write(data)
    assert read(m.path(name)) == data
    kept_on_reread(m, name, data, "a re-read of an unchanged file reached the daemon")


def kept_on_reread(m, name: str, data: bytes, what: str) -> None:
    """Wait until a re-read of ``name`` (which must hold ``data``) reaches the daemon
    with no READ.  Not always at once: just after a write the brick changes the file's
    ctime once more (an xattr it sets; measured: ctime 0.6 ms past mtime, after the
    writer's reply), and storage/gfapi drops the pages at the first open whose
    attributes show that ctime, which under load can be one of these re-reads."""
    def rereads_from_cache() -> bool:
        assert read(m.path(name)) == data
        before = reads(m)
        assert read(m.path(name)) == data
        return reads(m) == before
    wait_until(rereads_from_cache, SEEN_WITHIN, what, detail=m.read_log, interval=0.2)


def overwrite(path, data: bytes) -> None:
    """Same size, other bytes: only the mtime tells the change."""
    with open(path, "r+b") as f:
        f.write(data)


def test_unchanged_file_keeps_its_pages(gfapi_mount):
    m = gfapi_mount
    data = os.urandom(SIZE)
    k = kept(m)
    cached_twice(m, "keep-pages", data)
    assert kept(m) > k
    os.unlink(m.path("keep-pages"))


def test_fopen_keep_cache_no_drops_them_at_every_open(bricks, gluster_base):
    with mount_gfapi(gluster_base / "nokeep", bricks.client_volfile,
                     "--fopen-keep-cache=no") as m:
        data = os.urandom(SIZE)
        with open(m.path("nokeep"), "wb") as f:
            f.write(data)
        for _ in range(3):
            before = reads(m)
            assert read(m.path("nokeep")) == data
            assert reads(m) > before, "pages kept despite --fopen-keep-cache=no"
        os.unlink(m.path("nokeep"))


@pytest.fixture(scope="module")
def with_upcalls(bricks, gluster_base):
    """xlfs with long timeouts and no auto invalidation, and GlusterFS's client."""
    base = gluster_base / "pc-upcalls"
    with mount_gfapi(base / "xlfs", bricks.client_volfile, *LONG, *NO_AUTO_INVAL) as xm:
        with GlusterFuse(base / "gmnt", base / "glusterfs.log",
                         volfile=bricks.client_volfile) as gm:
            yield xm, gm


def test_upcall_drops_the_pages_of_an_open_file(with_upcalls):
    """Only the upcall can tell this kernel: its attributes are good for 600 s, it does
    not compare mtimes, and the file stays open (no open to decide anything)."""
    xm, gm = with_upcalls
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    cached_twice(xm, "open-file", old)
    fd = os.open(xm.path("open-file"), os.O_RDONLY)
    try:
        assert os.pread(fd, SIZE, 0) == old
        overwrite(gm.mountpoint / "open-file", new)
        wait_until(lambda: os.pread(fd, SIZE, 0) == new, SEEN_WITHIN,
                   "the other client's data through a file open before it wrote",
                   detail=xm.read_log)
    finally:
        os.close(fd)
    assert read(xm.path("open-file")) == new


@pytest.fixture(scope="module")
def quiet_volume(gluster_base):
    """A one-brick volume whose brick sends no upcalls (cache-invalidation off)."""
    with Bricks(gluster_base / "quiet", 1, "gq", cache_invalidation=False) as b:
        yield b


@pytest.fixture(scope="module")
def gluster_on_quiet(quiet_volume, gluster_base):
    base = gluster_base / "quiet-mnt"
    with GlusterFuse(base / "gmnt", base / "glusterfs.log",
                     volfile=quiet_volume.client_volfile) as gm:
        yield gm


@pytest.mark.parametrize("flags", [(), NO_AUTO_INVAL], ids=["auto-inval", "no-auto-inval"])
def test_without_upcalls_a_change_is_seen_after_the_timeouts(
        quiet_volume, gluster_on_quiet, gluster_base, flags):
    """No upcall ever comes: with the kernel's auto invalidation, a read after the
    attribute timeout sees the new mtime and drops the pages; without it, storage/gfapi
    does not keep them at the first open after the kernel looked the file up again
    (its attributes changed since the previous open)."""
    gm = gluster_on_quiet
    name = f"quiet-{len(flags)}"
    with mount_gfapi(gluster_base / f"quiet-xlfs-{len(flags)}", quiet_volume.client_volfile,
                     *flags) as xm:
        old, new = os.urandom(SIZE), os.urandom(SIZE)
        cached_twice(xm, name, old)
        overwrite(gm.mountpoint / name, new)
        wait_until(lambda: read(xm.path(name)) == new, SEEN_WITHIN,
                   "the other client's change through xlfs with no upcalls",
                   detail=xm.read_log)
        assert "upcalls-received=0" in open(
            xm.path(".meta", "graphs", "active", "gv", "private")).read()
        # and kept again once unchanged
        kept_on_reread(xm, name, new, "the pages kept again once the file is unchanged")
        os.unlink(xm.path(name))
