"""One glusterd for tests, made to run on a machine it must not touch.

glusterd refuses bricks on loopback addresses, keeps its state in /var/lib/glusterd,
its sockets and pid files in /run and its daemons' logs in /var/log/glusterfs.  So
:class:`Glusterd` runs it:

- in a network namespace of the run's own (:class:`tests.gluster.netns.PrivateNetns`),
  bricks on its private 198.18.0.1;
- in a private mount namespace (``unshare -m --propagation private``) where a tmpfs
  covers /run and directories under the test's base are bind-mounted over
  /var/lib/glusterd and /var/log/glusterfs: the host's GlusterFS state is never
  read or written;
- in a PID namespace of its own (with its own /proc), glusterd being its first
  process: if the test process is killed outright, glusterd is killed
  (``--kill-child``) and every brick it forked with it.  The bricks inherit all
  three namespaces.

The ``gluster`` CLI enters glusterd's namespaces (``nsenter -t PID -m -n``).  A client
(the xlfs daemon, GlusterFS's FUSE client) runs under :meth:`Glusterd.prefix`: the
network namespace only, so its FUSE mount is seen by the test.  :meth:`Glusterd.stop`
stops the volumes, kills every process left in the namespace by pid and deletes it;
an atexit hook does the same for a run that ends without it.

Not without the network namespace, even as root with port 24007 free: the bricks would
have to be on one of the machine's real addresses, glusterd and every brick would listen
on all its interfaces (a volume with no authentication, open to the network, for the
length of the run), and a dummy interface for a private address needs the same
CAP_NET_ADMIN as a namespace.  Where no namespace can be made, the glusterd tests skip
with the reason (:class:`tests.gluster.netns.NetnsUnavailable` names the missing
capability or command; ``.ci/run`` prints skip reasons).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from tests.gluster.bricks import _kill, _spawn, _tail
from tests.gluster.netns import PrivateNetns

GLUSTERD_PORT = 24007
_PRIVATE_MOUNTS = """\
set -e
mount -t tmpfs -o mode=0755 xlfs-test-run /run
mount --bind {lib} /var/lib/glusterd
mount --bind {logs} /var/log/glusterfs
exec glusterd -N -l {log}
"""


class Glusterd:
    """One glusterd in its own namespaces, and volumes made with the gluster CLI."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.state = self.base / "var-lib-glusterd"
        self.logs = self.base / "var-log-glusterfs"
        self.log = self.base / "glusterd.log"
        self.netns = PrivateNetns()
        self.proc: Optional[subprocess.Popen] = None
        self.volumes: list[str] = []

    @property
    def host(self) -> str:
        """The address bricks are created on and clients reach glusterd at."""
        return self.netns.address

    def prefix(self) -> list[str]:
        """Command prefix for a client of this glusterd (network namespace only)."""
        return self.netns.prefix()

    def start(self) -> "Glusterd":
        for d in (self.state, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.netns.create()
        try:
            script = _PRIVATE_MOUNTS.format(lib=self.state, logs=self.logs, log=self.log)
            # a PID namespace too, glusterd its init: when the test process dies, even
            # by SIGKILL, unshare goes (PDEATHSIG), glusterd with it (--kill-child)
            # and with glusterd every brick it forked
            self.proc = _spawn(self.netns.prefix() + [
                "unshare", "-m", "-p", "--kill-child", "--mount-proc",
                "--propagation", "private", "sh", "-c", script])
            deadline = time.monotonic() + 20
            while not self.netns.listening(GLUSTERD_PORT):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"glusterd exited ({self.proc.returncode}): "
                                       f"{_tail(self.log)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"glusterd did not listen: {_tail(self.log)}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _glusterd_pid(self) -> int:
        """glusterd's pid as this machine sees it: the child unshare forked."""
        assert self.proc is not None
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            children = f.read().split()
        if not children:
            raise RuntimeError(f"glusterd is not running: {_tail(self.log)}")
        return int(children[0])

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """The gluster CLI in glusterd's namespaces (its /run, its /proc, its network)."""
        res = subprocess.run(["nsenter", "-t", str(self._glusterd_pid()), "-m", "-n", "-p",
                              "--", "gluster", "--mode=script", *args],
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"gluster {' '.join(args)}: {res.stdout}{res.stderr}")
        return res.stdout

    def create_volume(self, name: str, replica: int = 2) -> list[Path]:
        dirs = [self.base / f"{name}-b{i}" for i in range(replica)]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.cli("volume", "create", name, "replica", str(replica),
                 *[f"{self.host}:{d}" for d in dirs], "force")
        self.volumes.append(name)
        self.cli("volume", "set", name, "features.cache-invalidation", "on")
        self.cli("volume", "set", name, "network.ping-timeout", "3")
        self.cli("volume", "set", name, "cluster.self-heal-daemon", "off")
        self.cli("volume", "start", name)
        return dirs

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for name in list(self.volumes):
                try:
                    self.cli("volume", "stop", name, "force", timeout=30)
                    self.cli("volume", "delete", name, timeout=30)
                except Exception:  # noqa: BLE001 - every process is killed below anyway
                    pass
        self.volumes.clear()
        if self.proc is not None and self.proc.poll() is None:
            # glusterd first, and unshare left to reap it: killed together, glusterd
            # would be orphaned unreaped (a zombie on a machine whose init never reaps)
            try:
                os.kill(self._glusterd_pid(), signal.SIGKILL)
                self.proc.wait(10)
            except (RuntimeError, ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.netns.remove()          # kills its bricks and anything else left inside
        if self.proc is not None:
            _kill(self.proc)
            self.proc = None
