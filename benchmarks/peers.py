"""The filesystems the benchmark compares, and how to start and stop each one safely.

    peer = PEERS["xlfs"]()
    reason = peer.unavailable()            # None, or why the peer cannot run here
    with peer.session(workdir, timeouts=(1, 1, 0), limit=300) as m:
        cases.create(m.directory, cfg, m.env)
        m.abort()                          # last resort: break every wait on the mount

- raw: a plain directory on the same disk as the bricks; the limit.
- xlfs: ``python -m fuse_bridge.cli -N`` on volfiles/local.vol over a fresh brick.
- xlfs-dist3: the same on volfiles/dist3.vol, three fresh bricks (cluster/distribute).
- issue 10's stacks (benchmarks/stack_peers.py): xlfs-pt, xlfs-perf, xlfs-md, xlfs-fast,
  xlfs-fast-pt (local.vol with FUSE passthrough, perf.vol, md-cache.vol, fast.vol without
  and with passthrough), xlfs-<translator> (one performance translator alone) and
  glusterfs-perf (GlusterFS's default client caches, benchmarks/glusterfs-client.vol).
- pyfuse3: benchmarks/pyfuse3_passthrough.py over a fresh source directory.
- glusterfs: Debian's GlusterFS client (``glusterfs -N --volfile=...``) on the same
  volfile, the posix brick rewritten to a fresh directory.

Every FUSE peer gets the same kernel cache settings (attribute, entry and negative
timeouts) and the same mount options (default_permissions, allow_other).

Each FUSE peer's daemon runs under benchmarks.daemon_mount.DaemonMount: in its own
session, with a watchdog and a sure teardown (its docstring has the details).  Mount,
PeerUnavailable and MountLeft are what a session yields and raises; MountLeft,
mounts_under and shielded are re-exported from there for the runners.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Type

from .cases import CaseEnv
from .daemon_mount import DaemonMount, MountLeft, mounts_under, shielded  # noqa: F401
from .warm_up import warm_up

ROOT = Path(__file__).resolve().parent.parent
LOCAL_VOL = ROOT / "volfiles" / "local.vol"
MIRROR_VOL = ROOT / "volfiles" / "mirror.vol"
DIST3_VOL = ROOT / "volfiles" / "dist3.vol"
Timeouts = Tuple[float, float, float]   # attribute, entry, negative
#: xlfs peers measure the request path: no FUSE passthrough unless a peer asks for it
#: (the bridge's default is auto); the -pt peers replace this flag.
NO_PASSTHROUGH = "--fuse-passthrough=no"


@dataclass
class Mount:
    """What a session gives the cases: where to run, what the peer is, and how to break a
    wedged mount (abort() is a no-op for the raw directory)."""
    directory: str
    env: CaseEnv
    abort: Callable[[], None] = lambda: None
    aborted: Callable[[], bool] = lambda: False
    pid: Optional[int] = None          # the daemon's process (its CPU time is in /proc)
    connection: Optional[int] = None   # the FUSE connection number (device minor)


class PeerUnavailable(Exception):
    """The peer cannot run here; str() says why (shown as "n/a: why")."""


def _probe_trusted_xattr(path: str) -> Optional[str]:
    name = "trusted.xlfs-bench-probe"
    try:
        os.setxattr(path, name, b"1")
        os.removexattr(path, name)
    except OSError as exc:
        return f"the brick ({path}) takes no trusted.* xattrs: {exc.strerror}"
    return None


# -- the peers ---------------------------------------------------------------------------

class Peer:
    name = "?"
    fuse = True
    description = ""

    def unavailable(self) -> Optional[str]:
        """None when the peer can run here, else the reason it cannot."""
        return None

    def version(self) -> str:
        return ""

    @contextmanager
    def session(self, workdir: Path, timeouts: Timeouts,
                limit: float) -> Iterator[Mount]:
        raise NotImplementedError


class RawPeer(Peer):
    name = "raw"
    fuse = False
    description = "the backing directory itself (ext4 here): the limit"

    @contextmanager
    def session(self, workdir, timeouts, limit):
        d = Path(workdir) / "raw"
        d.mkdir(parents=True, exist_ok=True)
        yield Mount(str(d), CaseEnv(fuse=False, attr_timeout=0.0, entry_timeout=0.0))


class FusePeer(Peer):
    """A daemon mounting a fresh brick; subclasses say how to run it."""
    ready_timeout = 30.0          # seconds the daemon has to mount and answer a stat
    #: rounds of warm_up.warm_up on the mount before the cases (a JIT's peers need them)
    warm_up_rounds = 0

    def argv(self, brick: Path, mountpoint: Path, log: Path, timeouts: Timeouts,
             workdir: Path) -> List[str]:
        raise NotImplementedError

    def env(self) -> Optional[dict]:
        return None

    def check_brick(self, brick: Path) -> None:
        pass

    @contextmanager
    def session(self, workdir, timeouts, limit):
        why = self.unavailable()
        if why:
            raise PeerUnavailable(why)
        workdir = Path(workdir)
        brick, mountpoint = workdir / "brick", workdir / "mnt"
        for d in (brick, mountpoint):
            d.mkdir(parents=True, exist_ok=True)
        self.check_brick(brick)
        log = workdir / f"{self.name}.log"
        m = DaemonMount(self.name, self.argv(brick, mountpoint, log, timeouts, workdir),
                        mountpoint, log, limit, self.env(), cwd=str(ROOT))
        try:
            m.start(self.ready_timeout)
            directory = mountpoint / "bench"
            directory.mkdir(exist_ok=True)
            if self.warm_up_rounds:
                warm_up(str(mountpoint), self.warm_up_rounds)
            attr, entry, _neg = timeouts
            yield Mount(str(directory), CaseEnv(fuse=True, attr_timeout=attr, entry_timeout=entry),
                        abort=m.abort, aborted=lambda: m.aborted, pid=m.proc.pid,
                        connection=m.conn)
            if m.aborted:
                raise TimeoutError(f"{self.name}: hard limit of {limit:.0f} s reached; "
                                   f"connection aborted")
        finally:
            m.stop()


def _timeout_flags(timeouts: Timeouts) -> List[str]:
    attr, entry, neg = timeouts
    return [f"--attribute-timeout={attr:g}", f"--entry-timeout={entry:g}",
            f"--negative-timeout={neg:g}"]


class XlfsPeer(FusePeer):
    name = "xlfs"
    description = "xlfs on volfiles/local.vol (posix + locks + io-stats)"
    #: the interpreter the daemon runs under (benchmarks/pypy_peers.py names another)
    python = sys.executable

    def __init__(self, volfile: Path = LOCAL_VOL) -> None:
        self.volfile = Path(volfile)

    def unavailable(self):
        if os.geteuid() != 0 and shutil.which("fusermount3") is None:
            return "not root and no fusermount3"
        if not os.path.exists("/dev/fuse"):
            return "no /dev/fuse"
        return None

    def version(self) -> str:
        try:
            out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        return f"xlfs {out}" if out else "xlfs"

    def env(self):
        return dict(os.environ, PYTHONPATH=str(ROOT))

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        return ([self.python, "-m", "fuse_bridge.cli", "-N", "-L", "WARNING",
                 "-l", str(log), "-f", str(self.volfile),
                 f"--xlator-option=posix.directory={brick}", NO_PASSTHROUGH]
                + _timeout_flags(timeouts) + [str(mountpoint)])


class XlfsMirrorPeer(XlfsPeer):
    """cluster/replicate over two posix bricks: the cost of keeping two copies."""
    name = "xlfs-mirror"
    description = "xlfs on volfiles/mirror.vol (replicate over 2 posix bricks + locks)"

    def __init__(self, volfile: Path = MIRROR_VOL) -> None:
        super().__init__(volfile)

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        second = Path(str(brick) + "-b")
        second.mkdir(parents=True, exist_ok=True)
        return ([self.python, "-m", "fuse_bridge.cli", "-N", "-L", "WARNING",
                 "-l", str(log), "-f", str(self.volfile),
                 f"--xlator-option=brick-a.directory={brick}",
                 f"--xlator-option=brick-b.directory={second}"]
                + _timeout_flags(timeouts) + [str(mountpoint)])


class XlfsDist3Peer(XlfsPeer):
    """volfiles/dist3.vol: cluster/distribute over three posix bricks (directories on the
    same disk), the same locks and io-stats on top as local.vol."""
    name = "xlfs-dist3"
    description = "xlfs on volfiles/dist3.vol (distribute over 3 posix bricks + locks + io-stats)"

    def __init__(self) -> None:
        super().__init__(DIST3_VOL)

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        dirs = []
        for i in range(3):
            d = Path(workdir) / f"brick{i}"
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(f"--xlator-option=brick{i}.directory={d}")
        return ([self.python, "-m", "fuse_bridge.cli", "-N", "-L", "WARNING",
                 "-l", str(log), "-f", str(self.volfile)] + dirs
                + _timeout_flags(timeouts) + [str(mountpoint)])


class Pyfuse3Peer(FusePeer):
    name = "pyfuse3"
    description = "benchmarks/pyfuse3_passthrough.py (pyfuse3 on libfuse 3)"

    def unavailable(self):
        if not os.path.exists("/dev/fuse"):
            return "no /dev/fuse"
        try:
            import pyfuse3  # noqa: F401
        except ImportError as exc:
            return (f"pyfuse3 is not installed ({exc}); install the extra: "
                    f"pip install -e '.[bench]' (needs libfuse3-dev and pkg-config)")
        return None

    def version(self) -> str:
        try:
            import pyfuse3
            return f"pyfuse3 {pyfuse3.__version__}"
        except (ImportError, AttributeError):
            return "pyfuse3"

    def env(self):
        return dict(os.environ, PYTHONPATH=str(ROOT))

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        attr, entry, neg = timeouts
        return [sys.executable, "-m", "benchmarks.pyfuse3_passthrough", str(brick),
                str(mountpoint), f"--attr-timeout={attr:g}", f"--entry-timeout={entry:g}",
                f"--negative-timeout={neg:g}"]


_TYPE_RE = re.compile(r"^\s*type\s+(\S+)", re.M)
_DIR_RE = re.compile(r"^(\s*option\s+directory\s+)\S+", re.M)


class GlusterfsPeer(FusePeer):
    name = "glusterfs"
    description = "GlusterFS client (Debian's glusterfs-client) on the same volfile"

    def __init__(self, volfile: Path = LOCAL_VOL) -> None:
        self.volfile = Path(volfile)

    def binary(self) -> Optional[str]:
        return shutil.which("glusterfs") or next(
            (p for p in ("/usr/sbin/glusterfs", "/sbin/glusterfs") if os.path.exists(p)), None)

    def xlator_dir(self, binary: str) -> Optional[str]:
        try:
            out = subprocess.run([binary, "--print-xlatordir"], capture_output=True,
                                 text=True, timeout=15).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out if out and os.path.isdir(out) else None

    def unavailable(self):
        binary = self.binary()
        if binary is None:
            return "no glusterfs client (apt-get install glusterfs-client)"
        if os.geteuid() != 0:
            return "the GlusterFS client mounts only as root"
        if not os.path.exists("/dev/fuse"):
            return "no /dev/fuse"
        xdir = self.xlator_dir(binary)
        if xdir is None:
            return "glusterfs --print-xlatordir names no directory"
        types = _TYPE_RE.findall(self.volfile.read_text())
        missing = [t for t in types if not os.path.exists(os.path.join(xdir, f"{t}.so"))]
        if missing:
            return f"GlusterFS has no translator for {', '.join(missing)} (types differ)"
        return None

    def version(self) -> str:
        binary = self.binary()
        if binary is None:
            return "glusterfs"
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 timeout=15).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "glusterfs"
        return out.splitlines()[0].strip() if out else "glusterfs"

    def check_brick(self, brick):
        why = _probe_trusted_xattr(str(brick))
        if why:
            raise PeerUnavailable(why)

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        vol = workdir / "glusterfs.vol"
        vol.write_text(_DIR_RE.sub(lambda m: m.group(1) + str(brick), self.volfile.read_text()))
        return ([self.binary(), "-N", "-L", "WARNING", "-l", str(log), f"--volfile={vol}"]
                + _timeout_flags(timeouts) + [str(mountpoint)])


class BindfsPeer(FusePeer):
    """bindfs (Debian's package): a C passthrough on libfuse 3's high-level API, run
    multithreaded, with the same kernel cache timeouts as the other peers."""
    name = "bindfs"
    description = "bindfs (C, libfuse 3 high-level API, --multithreaded)"

    def unavailable(self):
        if shutil.which("bindfs") is None:
            return "no bindfs (apt-get install bindfs, or benchmarks/setup-peers.sh)"
        if not os.path.exists("/dev/fuse"):
            return "no /dev/fuse"
        return None

    def version(self) -> str:
        try:
            out = subprocess.run(["bindfs", "--version"], capture_output=True, text=True,
                                 timeout=15).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "bindfs"
        return out.splitlines()[0].strip() if out else "bindfs"

    def argv(self, brick, mountpoint, log, timeouts, workdir):
        attr, entry, neg = timeouts
        return ["bindfs", "-f", "--multithreaded",
                "-o", f"default_permissions,attr_timeout={attr:g},entry_timeout={entry:g},"
                      f"negative_timeout={neg:g}",
                str(brick), str(mountpoint)]


#: The peers of this module by name (benchmarks.run.PEERS adds those on a GlusterFS volume).
PEERS: Dict[str, Type[Peer]] = {
    "raw": RawPeer, "xlfs": XlfsPeer, "pyfuse3": Pyfuse3Peer, "glusterfs": GlusterfsPeer,
    "bindfs": BindfsPeer,
    "xlfs-mirror": XlfsMirrorPeer, "xlfs-dist3": XlfsDist3Peer,
}

#: The peers of a run without --peers: the limit, the FUSE peers issue 10 compares with,
#: and xlfs's default, GlusterFS-like and fast stacks (the others are asked for by name;
#: the whole table is benchmarks.run.PEERS).
DEFAULT_PEERS = ("raw", "bindfs", "pyfuse3", "glusterfs", "glusterfs-perf", "xlfs",
                 "xlfs-perf", "xlfs-fast", "xlfs-fast-pt")
