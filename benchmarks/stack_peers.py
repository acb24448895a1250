"""Issue 10's peers: xlfs on its other single-brick stacks (passthrough, perf.vol,
md-cache.vol, fast.vol with and without passthrough, each performance translator alone)
and GlusterFS with its default client caches.  benchmarks/peers.py adds STACK_PEERS to
PEERS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple, Type

from .peers import LOCAL_VOL, NO_PASSTHROUGH, ROOT, GlusterfsPeer, Peer, XlfsPeer

PERF_VOL = ROOT / "volfiles" / "perf.vol"
MD_CACHE_VOL = ROOT / "volfiles" / "md-cache.vol"
FAST_VOL = ROOT / "volfiles" / "fast.vol"
GLUSTER_CLIENT_VOL = ROOT / "benchmarks" / "glusterfs-client.vol"


class _XlfsStackPeer(XlfsPeer):
    """xlfs on another single-brick volfile (its posix volume named ``posix``), with
    extra command-line flags."""
    volfile_path: Path = LOCAL_VOL
    flags: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__(self.volfile_path)

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        argv = super().argv(brick, mountpoint, log, timeouts, workdir)
        if any(f.startswith("--fuse-passthrough") for f in self.flags):
            argv.remove(NO_PASSTHROUGH)             # the peer says which mode
        return argv[:-1] + list(self.flags) + argv[-1:]


class XlfsPassthroughPeer(_XlfsStackPeer):
    name = "xlfs-pt"
    description = "xlfs on volfiles/local.vol with --fuse-passthrough=yes"
    flags = ("--fuse-passthrough=yes",)


class XlfsPerfPeer(_XlfsStackPeer):
    name = "xlfs-perf"
    description = "xlfs on volfiles/perf.vol (GlusterFS's client stack over posix)"
    volfile_path = PERF_VOL


class XlfsMdCachePeer(_XlfsStackPeer):
    name = "xlfs-md"
    description = "xlfs on volfiles/md-cache.vol (md-cache over posix with watch-brick)"
    volfile_path = MD_CACHE_VOL


class XlfsFastPeer(_XlfsStackPeer):
    name = "xlfs-fast"
    description = ("xlfs on volfiles/fast.vol (md-cache over posix, locks left to the "
                   "kernel), --fuse-passthrough=no")
    volfile_path = FAST_VOL
    flags = ("--fuse-passthrough=no",)


class XlfsFastPassthroughPeer(_XlfsStackPeer):
    name = "xlfs-fast-pt"
    description = "xlfs on volfiles/fast.vol with --fuse-passthrough=yes"
    volfile_path = FAST_VOL
    flags = ("--fuse-passthrough=yes",)


class GlusterfsClientStackPeer(GlusterfsPeer):
    """GlusterFS's default client caches (md-cache, open-behind, quick-read,
    readdir-ahead, write-behind; read-ahead and io-cache are off by default since
    GlusterFS 9) over posix and locks: benchmarks/glusterfs-client.vol."""
    name = "glusterfs-perf"
    description = ("GlusterFS client on benchmarks/glusterfs-client.vol (its default "
                   "client caches over posix + locks)")

    def __init__(self) -> None:
        super().__init__(GLUSTER_CLIENT_VOL)


STACK_PEERS: Dict[str, Type[Peer]] = {
    "xlfs-pt": XlfsPassthroughPeer, "xlfs-perf": XlfsPerfPeer, "xlfs-md": XlfsMdCachePeer,
    "xlfs-fast": XlfsFastPeer, "xlfs-fast-pt": XlfsFastPassthroughPeer,
    "glusterfs-perf": GlusterfsClientStackPeer,
}

# Each performance translator alone over posix (volfiles/<name>.vol): xlfs-<name>, to see
# what each one contributes (docs/benchmarks.md, issue 10's section).
SINGLE_TRANSLATOR_VOLFILES = ("io-cache", "read-ahead", "quick-read", "readdir-ahead",
                              "open-behind", "nl-cache", "io-threads", "write-behind")
for _stem in SINGLE_TRANSLATOR_VOLFILES:
    STACK_PEERS[f"xlfs-{_stem}"] = type(
        f"Xlfs_{_stem.replace('-', '_')}_Peer", (_XlfsStackPeer,),
        {"name": f"xlfs-{_stem}", "volfile_path": ROOT / "volfiles" / f"{_stem}.vol",
         "description": f"xlfs on volfiles/{_stem}.vol (performance/{_stem} alone over "
                        f"posix)"})
del _stem
