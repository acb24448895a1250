"""A network namespace of the test run's own, for daemons that refuse loopback addresses.

glusterd will not create a brick on 127.0.0.0/8 or ::1, and tests must never send traffic
to the machine's real addresses.  :class:`PrivateNetns` makes ``xlfs-test-<pid>``: loopback
up and a veth pair whose both ends stay inside, one carrying a private address from the
benchmarking range 198.18.0.0/15 (RFC 2544, never routed; nothing outside the namespace
can see it, so it cannot clash with the machine's own).

- :meth:`PrivateNetns.prefix` is the command prefix that runs a program inside it
  (``nsenter --net=...``: the network namespace only, so a FUSE mount the program makes
  is in the caller's mount namespace and visible to the test).
- :meth:`PrivateNetns.pids` finds every process in it (by the namespace's inode), so
  :meth:`PrivateNetns.remove` can kill them by pid (only GlusterFS and xlfs ones) before
  deleting it.  Namespaces left by a run that died (its pid gone) are removed by the next.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

NETNS_DIR = Path("/run/netns")
PREFIX = "xlfs-test-"
ADDRESS = "198.18.0.1"
_KILLABLE = (b"gluster", b"fuse_bridge", b"nsenter", b"unshare")


class NetnsUnavailable(RuntimeError):
    """This machine does not let the run make a network namespace (no CAP_SYS_ADMIN,
    no ``ip``, no veth): the tests needing one skip with this message, which says which
    of those is missing (``.ci/run`` prints skip reasons)."""


#: The capabilities ``ip netns add`` and the veth pair need (bit numbers of
#: ``linux/capability.h``).
_NEEDED_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}


def missing_capabilities() -> list[str]:
    """Those of :data:`_NEEDED_CAPS` this process does not have (its effective set)."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return []
    return [name for name, bit in _NEEDED_CAPS.items() if not eff >> bit & 1]


def _refused(what: str, exc: Exception) -> NetnsUnavailable:
    """The skip reason for a refused ``ip`` command: the missing capabilities when that
    is why, and ``ip``'s own message."""
    if isinstance(exc, FileNotFoundError):
        return NetnsUnavailable(f"cannot make {what}: no ip command (Debian package "
                                "iproute2)")
    caps = missing_capabilities()
    lacks = f"this process lacks {' and '.join(caps)}: " if caps else ""
    return NetnsUnavailable(f"cannot make {what}: {lacks}{exc}")


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def _ns_id(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in(path: Path) -> list[int]:
    """Every process whose network namespace is the one bound at ``path``."""
    want = _ns_id(path)
    if want is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ns_id(Path("/proc", entry, "ns", "net")) == want:
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _kill_pids(pids: list[int]) -> list[int]:
    """SIGKILL those of ``pids`` that are ours to kill; returns the ones refused."""
    refused = []
    for pid in pids:
        if pid == os.getpid():
            continue
        if not any(k in _cmdline(pid) for k in _KILLABLE):
            refused.append(pid)
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return refused


def _remove(path: Path) -> None:
    """Kill what runs in the namespace at ``path`` and delete it."""
    for _ in range(100):
        live = [p for p in pids_in(path) if _cmdline(p)]      # zombies have none
        refused = _kill_pids(live)
        if not live or live == refused:
            break
        time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", path.name], capture_output=True, timeout=30)


def remove_stale() -> None:
    """Remove the namespaces of earlier runs whose process is gone."""
    if not NETNS_DIR.is_dir():
        return
    for p in NETNS_DIR.iterdir():
        if not p.name.startswith(PREFIX):
            continue
        try:
            owner = int(p.name[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            _remove(p)


class PrivateNetns:
    """``xlfs-test-<pid>-<n>`` with ``ADDRESS`` on a veth inside; ``with``-able."""

    _count = 0

    def __init__(self) -> None:
        PrivateNetns._count += 1
        self.name = f"{PREFIX}{os.getpid()}-{PrivateNetns._count}"
        self.path = NETNS_DIR / self.name
        self.address = ADDRESS
        self.created = False

    def create(self) -> "PrivateNetns":
        remove_stale()
        try:
            _ip("netns", "add", self.name)
        except (OSError, RuntimeError) as exc:
            raise _refused("a test network namespace", exc) from exc
        self.created = True
        atexit.register(self.remove)
        try:
            for what, args in (
                    ("its loopback up", ("link", "set", "lo", "up")),
                    ("a veth pair in it", ("link", "add", "xt0", "type", "veth", "peer",
                                           "name", "xt1")),
                    ("its address", ("addr", "add", f"{self.address}/24", "dev", "xt0")),
                    ("its veth up", ("link", "set", "xt0", "up")),
                    ("its veth up", ("link", "set", "xt1", "up"))):
                try:
                    _ip("-n", self.name, *args)
                except (OSError, RuntimeError) as exc:
                    raise _refused(f"a test network namespace with {what}", exc) from exc
        except BaseException:
            self.remove()
            raise
        return self

    def prefix(self) -> list[str]:
        """Run a command in this network namespace, in the caller's mount namespace."""
        return ["nsenter", f"--net={self.path}", "--"]

    def pids(self) -> list[int]:
        return pids_in(self.path)

    def listening(self, port: int) -> bool:
        """Whether something in the namespace listens on TCP ``port`` (read through the
        proc view of a process inside, so the test process never enters it)."""
        for pid in self.pids():
            for table in ("tcp", "tcp6"):
                try:
                    lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                except OSError:
                    continue
                for line in lines:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
            return False
        return False

    def remove(self) -> None:
        if self.created:
            _remove(self.path)
            self.created = False

    def __enter__(self) -> "PrivateNetns":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.remove()
