"""Benchmark peers on a GlusterFS volume: xlfs over storage/gfapi against GlusterFS's own
FUSE client, each on a fresh replica-2 volume of two local glusterfsd bricks (no
glusterd; tests/gluster/bricks.py), with the same kernel cache settings: the run's
attribute, entry and negative timeouts, the kernel's auto invalidation on (both
defaults), no kernel writeback cache (both defaults), and the page cache kept across
opens of an unchanged file (GlusterFS's FUSE client: FOPEN_KEEP_CACHE on every open
since the kernel offers auto invalidation; xlfs: storage/gfapi's keep_cache hint).
gfapi-dropcache is xlfs with ``--fopen-keep-cache=no`` (every open drops the pages,
what storage/gfapi did before it gave the hint): an A/B in one run.  gfapi-nowait is
xlfs with storage/gfapi's ``inline-wait 0`` (every answer comes back through trio, what
storage/gfapi did before the inline wait).  gfapi-batch256 reads at most 256 entries
per listing step (storage/gfapi's ``readdir-batch 256``, what it did before);
gfapi-names answers a plain READDIR with the bricks' READDIR (``readdir-names-only``).
gfapi-drename renames without ``glfs_h_rename``'s two forced lookups
(``direct-rename on``, which relies on GlusterFS internals and is off by default).
gfapi-ra stacks xlfs's performance/read-ahead
on storage/gfapi: a cache GlusterFS's client does not run here, so not the same cache
settings; it shows what read-ahead buys, not the like-for-like comparison.
gfapi-base is gfapi from another checkout (``XLFS_BASELINE``, default /work/wt/base):
storage/gfapi's code before and after, on the same kind of volume, in one run.
gfapi-noindex and glusterfs-replica-noindex run on bricks without features/index, what
the bricks were before glusterd's index translator was added to them (without it
replicate believes every file needs a heal and libgfapi looks up every listed entry).

    .venv/bin/python -m benchmarks.run --peers gfapi,gfapi-dropcache,glusterfs-replica --quick
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from .peers import ROOT, FusePeer, GlusterfsPeer, XlfsPeer, _timeout_flags

GFAPI_VOL = ROOT / "tests" / "gluster" / "gfapi.vol"


def _bricks_missing() -> Optional[str]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.gluster.bricks import missing
    return missing()


class _VolumePeer(FusePeer):
    """A FUSE peer whose session first stands up a replica-2 volume."""
    client_volfile: Path = Path()
    index = True        # the bricks run features/index (as glusterd's do)
    profile = False     # the bricks' io-stats count their fops (benchmarks.gluster_fops)
    bricks = None       # the session's tests.gluster.bricks.Bricks

    @contextmanager
    def session(self, workdir, timeouts, limit):
        why = self.unavailable()
        if why:
            from .peers import PeerUnavailable
            raise PeerUnavailable(why)
        from tests.gluster.bricks import Bricks
        with Bricks(Path(workdir) / "volume", 2, "bench", index=self.index,
                    profile=self.profile) as bricks:
            self.client_volfile = bricks.client_volfile
            self.bricks = bricks
            try:
                with super().session(workdir, timeouts, limit) as m:
                    yield m
            finally:
                self.bricks = None


class GfapiPeer(_VolumePeer, XlfsPeer):
    name = "gfapi"
    description = ("xlfs on tests/gluster/gfapi.vol (storage/gfapi + io-stats) over a "
                   "replica-2 GlusterFS volume")
    cache_flags: tuple[str, ...] = ("--auto-invalidation=yes",)

    def unavailable(self):
        return XlfsPeer.unavailable(self) or _bricks_missing()

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        return ([sys.executable, "-m", "fuse_bridge.cli", "-N", "-L", "WARNING",
                 "-l", str(log), "-f", str(GFAPI_VOL),
                 f"--xlator-option=gv.volfile={self.client_volfile}",
                 f"--xlator-option=gv.log-file={workdir / 'gfapi.log'}",
                 "--xlator-option=gv.log-level=warning", *self.cache_flags]
                + _timeout_flags(timeouts) + [str(mountpoint)])


class GfapiDropCachePeer(GfapiPeer):
    name = "gfapi-dropcache"
    description = ("gfapi with --fopen-keep-cache=no: every open drops the kernel's "
                   "page cache of the file")
    cache_flags = ("--auto-invalidation=yes", "--fopen-keep-cache=no")


class GfapiNoWaitPeer(GfapiPeer):
    name = "gfapi-nowait"
    description = ("gfapi with inline-wait 0: the event loop never waits for a call "
                   "itself; every answer comes back through trio")
    cache_flags = ("--auto-invalidation=yes", "--xlator-option=gv.inline-wait=0")


class GfapiBatch256Peer(GfapiPeer):
    name = "gfapi-batch256"
    description = ("gfapi with readdir-batch 256: a listing step reads at most 256 "
                   "entries, what storage/gfapi did before")
    cache_flags = ("--auto-invalidation=yes", "--xlator-option=gv.readdir-batch=256")


class GfapiNamesOnlyPeer(GfapiPeer):
    name = "gfapi-names"
    description = ("gfapi with readdir-names-only: a plain READDIR asks the bricks for "
                   "names only (the listed inode numbers are the bricks' own)")
    cache_flags = ("--auto-invalidation=yes", "--xlator-option=gv.readdir-names-only=on")


class GfapiDirectRenamePeer(GfapiPeer):
    name = "gfapi-drename"
    description = ("gfapi with direct-rename on: renames without glfs_h_rename's two "
                   "forced lookups (GlusterFS internals; off by default)")
    cache_flags = ("--auto-invalidation=yes", "--xlator-option=gv.direct-rename=on")


class GfapiBaselinePeer(GfapiPeer):
    """``gfapi`` run from another checkout (``XLFS_BASELINE``, default /work/wt/base):
    before/after of storage/gfapi's code on the same kind of volume, in one run."""
    name = "gfapi-base"

    @property
    def root(self) -> Path:
        return Path(os.environ.get("XLFS_BASELINE", "/work/wt/base")).resolve()

    @property
    def description(self) -> str:
        return f"gfapi from the checkout {self.root}"

    def unavailable(self):
        if not (self.root / "fuse_bridge" / "cli.py").exists():
            return f"{self.root}: not an xlfs checkout (set XLFS_BASELINE)"
        return super().unavailable()

    def env(self):
        return dict(os.environ, PYTHONPATH=str(self.root))

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        argv = super().argv(brick, mountpoint, log, timeouts, workdir)
        # -c, not -m: -m would put the current directory (this checkout) first
        boot = (f"import runpy, sys; sys.path.insert(0, {str(self.root)!r}); "
                "runpy.run_module('fuse_bridge.cli', run_name='__main__', alter_sys=True)")
        return [argv[0], "-c", boot] + argv[3:]


RA_VOLFILE = """\
volume gv
    type storage/gfapi
    option volfile {client_volfile}
end-volume

volume ra
    type performance/read-ahead
    option page-size 1MB
    option page-count 2
    subvolumes gv
end-volume

volume stats
    type debug/io-stats
    subvolumes ra
end-volume
"""


class GfapiReadAheadPeer(GfapiPeer):
    name = "gfapi-ra"
    description = ("gfapi with xlfs's performance/read-ahead (2 pages of 1 MiB) on top: "
                   "a cache GlusterFS's client here does not run (its read-ahead is off "
                   "by default)")

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        vol = Path(workdir) / "gfapi-ra.vol"
        vol.write_text(RA_VOLFILE.format(client_volfile=self.client_volfile))
        return ([sys.executable, "-m", "fuse_bridge.cli", "-N", "-L", "WARNING",
                 "-l", str(log), "-f", str(vol),
                 f"--xlator-option=gv.log-file={workdir / 'gfapi.log'}",
                 "--xlator-option=gv.log-level=warning", *self.cache_flags]
                + _timeout_flags(timeouts) + [str(mountpoint)])


class GlusterReplicaPeer(_VolumePeer, GlusterfsPeer):
    name = "glusterfs-replica"
    description = ("GlusterFS's FUSE client (glusterfs -f CLIENT.vol) on the same kind "
                   "of volume")

    def unavailable(self):
        binary = self.binary()
        if binary is None:
            return "no glusterfs client (apt-get install glusterfs-client)"
        if not os.path.exists("/dev/fuse"):
            return "no /dev/fuse"
        return _bricks_missing()

    def check_brick(self, brick):
        pass

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        # --fopen-keep-cache left at its default: keep (the kernel offers auto
        # invalidation), what a GlusterFS mount does unless told otherwise
        return ([self.binary(), "-N", "-L", "WARNING", "-l", str(log),
                 f"--volfile={self.client_volfile}"]
                + _timeout_flags(timeouts) + [str(mountpoint)])


class GfapiNoIndexPeer(GfapiPeer):
    name = "gfapi-noindex"
    description = ("gfapi on bricks without features/index (what the test bricks were): "
                   "replicate then strips the attributes of listed entries and "
                   "libgfapi looks each one up")
    index = False


class GlusterReplicaNoIndexPeer(GlusterReplicaPeer):
    name = "glusterfs-replica-noindex"
    description = "glusterfs-replica on bricks without features/index"
    index = False


#: The peers of this module by name (benchmarks.run).
GLUSTER_PEERS = {"gfapi": GfapiPeer, "gfapi-dropcache": GfapiDropCachePeer,
                 "gfapi-nowait": GfapiNoWaitPeer, "gfapi-ra": GfapiReadAheadPeer,
                 "gfapi-batch256": GfapiBatch256Peer, "gfapi-names": GfapiNamesOnlyPeer,
                 "gfapi-drename": GfapiDirectRenamePeer,
                 "gfapi-base": GfapiBaselinePeer, "gfapi-noindex": GfapiNoIndexPeer,
                 "glusterfs-replica": GlusterReplicaPeer,
                 "glusterfs-replica-noindex": GlusterReplicaNoIndexPeer}
