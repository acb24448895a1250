"""GlusterFS daemons for tests: bricks with no glusterd, and GlusterFS's FUSE client.

:class:`Bricks` stands up ``glusterfsd`` bricks on 127.0.0.1 and free ports, each with
the graph storage/posix -> features/access-control -> features/locks -> features/upcall
-> performance/io-threads -> features/index -> debug/io-stats -> protocol/server (the
translators of glusterd's brick graph that matter here, in its order, io-stats named
after the brick as the client's remote-subvolume; features/index answers the
"link-count" replicate asks every lookup for: without it replicate believes a heal is
always pending and strips the attributes of listed entries, so libgfapi then looks up
every entry of a listing, which glusterd's volumes never do), and
writes a replica client volfile (low ping-timeout, client-side self-heal on, since there
is no self-heal daemon without glusterd) that ``glfs_set_volfile`` and ``glusterfs -f``
both take.  With ``profile=True`` the bricks' io-stats count the requests they serve
(``Bricks.fop_stats()``, from a statedump): what a client sent over the network, by
fop.  glusterd-managed volumes are in :mod:`tests.gluster.glusterd`.

Every daemon started here is remembered by pid and killed by pid (never by name) on
``stop()``, and at interpreter exit (atexit) whatever a crashed test left.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

_LIVE: dict[int, subprocess.Popen] = {}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the daemon gets SIGKILL when the test process dies, however it dies
    (a hard pytest timeout skips atexit)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _spawn(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    _LIVE[proc.pid] = proc
    return proc


def _kill_all() -> None:
    for pid, proc in list(_LIVE.items()):
        _kill(proc)


atexit.register(_kill_all)


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    _LIVE.pop(proc.pid, None)


def missing() -> Optional[str]:
    """None when the GlusterFS daemons and libgfapi are here, else why not."""
    if os.geteuid() != 0:
        return "GlusterFS bricks need root (trusted.* xattrs)"
    for tool in ("glusterfsd", "glusterfs", "glusterd", "gluster"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return (f"{tool} is not installed (apt-get install glusterfs-server "
                    "glusterfs-client; scripts/setup.sh does it)")
    try:
        import xlators.storage.gfapi_binding  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"glusterfsd exited ({proc.returncode}): "
                               f"{_tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"brick on port {port} did not listen: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


BRICK_VOLFILE = """\
volume {name}-posix
    type storage/posix
    option directory {directory}
end-volume

volume {name}-access
    type features/access-control
    subvolumes {name}-posix
end-volume

volume {name}-locks
    type features/locks
    subvolumes {name}-access
end-volume

volume {name}-upcall
    type features/upcall
    option cache-invalidation {cache_invalidation}
    option cache-invalidation-timeout 600
    subvolumes {name}-locks
end-volume

volume {name}-io-threads
    type performance/io-threads
    subvolumes {name}-upcall
end-volume
{index}
volume {name}
    type debug/io-stats
    option count-fop-hits {profile}
    option latency-measurement {profile}
    subvolumes {below_stats}
end-volume

volume {name}-server
    type protocol/server
    option statedump-path {dump_dir}
    option transport-type tcp
    option transport.socket.bind-address 127.0.0.1
    option transport.socket.listen-port {port}
    option transport.address-family inet
    option auth.addr.{name}.allow 127.0.0.1
    option auth-path {name}
    subvolumes {name}
end-volume
"""

BRICK_INDEX = """
volume {name}-index
    type features/index
    option index-base {directory}/.glusterfs/indices
    option xattrop-dirty-watchlist trusted.afr.dirty
    option xattrop-pending-watchlist trusted.afr.{volume}-
    subvolumes {name}-io-threads
end-volume
"""

CLIENT_BRICK = """\
volume {volume}-client-{i}
    type protocol/client
    option remote-host 127.0.0.1
    option remote-port {port}
    option remote-subvolume {brick}
    option transport-type tcp
    option transport.address-family inet
    option ping-timeout {ping_timeout}
end-volume
"""

CLIENT_TOP = """\
volume {volume}-replicate-0
    type cluster/replicate
    option data-self-heal on
    option metadata-self-heal on
    option entry-self-heal on
    option self-heal-daemon off
    subvolumes {clients}
end-volume

volume {volume}
    type debug/io-stats
    subvolumes {volume}-replicate-0
end-volume
"""


class Brick:
    def __init__(self, base: Path, name: str, cache_invalidation: bool = True,
                 volume: str = "gv0", index: bool = True, profile: bool = False) -> None:
        self.name = name
        self.profile = profile      # io-stats counts the fops it serves: fop_stats()
        self.volume = volume        # the client volume: AFR's pending xattrs' prefix
        self.index = index          # False: no features/index (what the bricks had)
        self.cache_invalidation = cache_invalidation    # upcalls to the clients
        self.directory = base / name
        self.volfile = base / f"{name}.vol"
        self.log = base / f"{name}.log"
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        # features/index keeps its files under .glusterfs (storage/posix makes that
        # directory too, but index is initialised first)
        (self.directory / ".glusterfs").mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        fields = dict(name=self.name, port=self.port, directory=self.directory,
                      volume=self.volume)
        self.volfile.write_text(BRICK_VOLFILE.format(
            **fields, index=BRICK_INDEX.format(**fields) if self.index else "",
            below_stats=f"{self.name}-index" if self.index else f"{self.name}-io-threads",
            profile="on" if self.profile else "off", dump_dir=self.volfile.parent,
            cache_invalidation="on" if self.cache_invalidation else "off"))
        self.proc = _spawn(["glusterfsd", "-N", "-f", str(self.volfile), "-l",
                            str(self.log), "--brick-name", self.name, "--brick-port",
                            str(self.port)])
        _wait_port(self.port, self.proc, self.log)

    def kill(self) -> None:
        if self.proc is not None:
            _kill(self.proc)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.proc.pid, sig)

    def stopped(self) -> bool:
        """Every thread of the brick is stopped (SIGSTOP delivered, not just sent)."""
        try:
            tasks = os.listdir(f"/proc/{self.proc.pid}/task")
            states = []
            for tid in tasks:
                with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except (OSError, AttributeError):
            return False
        return bool(states) and all(s in "tT" for s in states)

    def fop_stats(self, timeout: float = 10.0) -> dict[str, tuple[int, int]]:
        """The requests this brick has served since it started, by fop (LOOKUP, STAT,
        ...; those not served left out): ``(count, nanoseconds spent below io-stats in
        all)``, from its statedump (SIGUSR1).  io-stats at the top of its graph counts
        what the clients sent.  Needs ``profile``."""
        if not self.profile:
            raise RuntimeError(f"{self.name}: started without profile=True")
        if not self.running:
            raise RuntimeError(f"{self.name}: not running")
        # named BRICK-NAME.PID.dump.TIME, less the brick name's first character (which
        # GlusterFS takes for the leading slash of a brick path)
        pattern = f"*.{self.proc.pid}.dump.*"
        directory = self.volfile.parent
        for old in directory.glob(pattern):
            old.unlink()
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(directory.glob(pattern))
            if found:           # the dump is written under a temporary name, then renamed
                text = found[0].read_text(errors="replace")
                found[0].unlink()
                return _cumulative_fops(text, self.name)
            time.sleep(0.01)
        raise TimeoutError(f"{self.name}: no statedump in {directory} within {timeout} s")


def _cumulative_fops(dump: str, stats: str) -> dict[str, tuple[int, int]]:
    """``{fop: (count, total ns)}`` from io-stats ``stats``'s lines of a statedump
    (``NAME.cumulative.FOP=count,total,min,max,avg``)."""
    prefix = f"{stats}.cumulative."
    out = {}
    for line in dump.splitlines():
        if line.startswith(prefix):
            fop, _, value = line[len(prefix):].partition("=")
            count, total = value.split(",")[:2]
            if int(count):
                out[fop] = (int(count), int(total))
    return out


class Bricks:
    """``count`` bricks and a replica client volfile, ``with``-able."""

    def __init__(self, base: Path, count: int = 2, volume: str = "gv0",
                 ping_timeout: int = 3, cache_invalidation: bool = True,
                 index: bool = True, profile: bool = False) -> None:
        self.base = Path(base)
        self.volume = volume
        self.bricks = [Brick(self.base, f"{volume}-brick{i}", cache_invalidation, volume,
                             index, profile)
                       for i in range(count)]
        self.client_volfile = self.base / f"{volume}-client.vol"
        self.ping_timeout = ping_timeout

    def start(self) -> "Bricks":
        self.base.mkdir(parents=True, exist_ok=True)
        try:
            for b in self.bricks:
                b.start()
        except BaseException:
            self.stop()
            raise
        parts = [CLIENT_BRICK.format(volume=self.volume, i=i, port=b.port, brick=b.name,
                                     ping_timeout=self.ping_timeout)
                 for i, b in enumerate(self.bricks)]
        clients = " ".join(f"{self.volume}-client-{i}" for i in range(len(self.bricks)))
        parts.append(CLIENT_TOP.format(volume=self.volume, clients=clients))
        self.client_volfile.write_text("\n".join(parts))
        return self

    def stop(self) -> None:
        for b in self.bricks:
            b.kill()

    @contextlib.contextmanager
    def frozen(self):
        """Every brick stopped (SIGSTOP) inside the block, continued (SIGCONT) on
        every way out: the connections stay open and nothing answers, so the clients
        wait for protocol/client's ping-timeout (a killed brick closes its
        connections, which the clients notice at once).  The block starts once every
        thread of every brick is stopped: kill() only sends the signal, and a brick
        thread running meanwhile could still answer."""
        try:
            for b in self.bricks:
                b.signal(signal.SIGSTOP)
            deadline = time.monotonic() + 10
            while not all(b.stopped() for b in self.bricks):
                if time.monotonic() > deadline:
                    raise TimeoutError("the bricks did not stop")
                time.sleep(0.001)
            yield self
        finally:
            for b in self.bricks:
                b.signal(signal.SIGCONT)

    def fop_stats(self) -> dict[str, tuple[int, int]]:
        """The requests all bricks have served, by fop: (count, total ns) as
        :meth:`Brick.fop_stats` (needs ``profile``)."""
        total: dict[str, tuple[int, int]] = {}
        for b in self.bricks:
            for fop, (n, ns) in b.fop_stats().items():
                n0, ns0 = total.get(fop, (0, 0))
                total[fop] = (n0 + n, ns0 + ns)
        return total

    def __enter__(self) -> "Bricks":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class GlusterFuse:
    """GlusterFS's own FUSE client (``glusterfs -N``) on ``mountpoint``, from a client
    volfile or from glusterd (``server`` + ``volume``); unmounted and killed by pid."""

    def __init__(self, mountpoint: Path, log: Path, volfile: Optional[Path] = None,
                 server: str = "", volume: str = "") -> None:
        self.mountpoint = Path(mountpoint)
        self.log = log
        source = (["-f", str(volfile)] if volfile is not None
                  else [f"--volfile-server={server}", f"--volfile-id={volume}"])
        self.args = ["glusterfs", "-N", *source, "-l", str(log), "--attribute-timeout=0",
                     "--entry-timeout=0", str(self.mountpoint)]
        self.proc: Optional[subprocess.Popen] = None

    def _mounted(self) -> bool:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == str(self.mountpoint) for line in f)

    def __enter__(self) -> "GlusterFuse":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = _spawn(self.args)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"glusterfs exited ({self.proc.returncode}): "
                                   f"{_tail(self.log)}")
            if self._mounted():
                try:
                    os.listdir(self.mountpoint)
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise TimeoutError(f"glusterfs did not mount {self.mountpoint}: {_tail(self.log)}")

    def __exit__(self, *exc) -> None:
        if self._mounted():
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
        if self.proc is not None:
            _kill(self.proc, signal.SIGTERM)
            self.proc = None
