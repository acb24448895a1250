"""Real mounts for tests: the xlfs daemon in a subprocess, bounded in time, never leaked.

    with Mounted("volfiles/local.vol", tmp_path, "--attribute-timeout=0") as m:
        open(m.path("f"), "w").write("x")

- The daemon runs in the foreground (``-N``) in its own process, logging to ``m.log``.
- A watchdog thread aborts the FUSE connection (``/sys/fs/fuse/connections/N/abort``) if
  the mount outlives its time limit, so a wedged mount cannot hang the test run.
- Teardown on every path: SIGTERM, wait, then abort + SIGKILL, then a lazy unmount; the
  mount is gone when ``__exit__`` returns (asserted).
- ``MountedByHelper`` is the same for a mount that ``mount -t xlfs`` makes (the daemon in
  the background; teardown: umount, wait, then abort + SIGKILL, then a lazy unmount).
- ``two_mounts`` mounts one brick twice (a caching mount and a plain second one), for
  coherence tests: a change made through one must be seen through the other.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import platform
import re
from collections import Counter
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import pytest

from fuse_bridge import mount as mnt

ROOT = Path(__file__).resolve().parent.parent
VOLFILES = ROOT / "volfiles"


def can_mount() -> Optional[str]:
    """None when real mounts work here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "mount tests need root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


#: Marks a test module (``pytestmark``) or test that needs real mounts: skipped, with the
#: reason, where they cannot work.
needs_mount = pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, *,
               detail: Union[str, Callable[[], str], None] = None,
               interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something true, and return that.  After
    ``timeout`` seconds (it is asked once more then) fail with an AssertionError naming
    ``what`` was awaited, followed by ``detail`` (a string, or a callable such as
    ``m.read_log`` asked only then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    message = f"timed out after {timeout}s waiting for {what}"
    if detail is not None:
        text = detail() if callable(detail) else detail
        message += f":\n{text[-4000:]}"
    raise AssertionError(message)


#: Bridge flags: the kernel caches nothing, so every stat, lookup and readdir reaches the
#: translators (what a test then sees is the translators' caches, not the kernel's).
KERNEL_NO_CACHE = ("--attribute-timeout=0", "--entry-timeout=0", "--negative-timeout=0")
#: Bridge flags: the kernel's attribute, entry and negative entry caches outlive any test,
#: so only an invalidation (an upcall the bridge passes on) can refresh them.
KERNEL_LONG_CACHE = ("--attribute-timeout=60", "--entry-timeout=60", "--negative-timeout=60")


def read_all(path: str | os.PathLike) -> bytes:
    """The whole file, read through a new open (a new open is what the caches that keep
    data across opens are about)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def overwrite_keeping_times(path: str | os.PathLike, data: bytes, offset: int = 0) -> None:
    """Overwrite in place, then put the old atime and mtime back: size and mtime are
    unchanged, so a cache that checks them cannot tell; only an invalidation (the brick
    watch's upcall) can.  ``path`` is in a brick or on another mount of it."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def cache_drops() -> int:
    """How often anyone dropped the kernel's caches (``echo N >
    /proc/sys/vm/drop_caches``) since boot: /proc/vmstat's drop_pagecache + drop_slab."""
    try:
        with open("/proc/vmstat") as f:
            return sum(int(line.split()[1]) for line in f
                       if line.startswith(("drop_pagecache ", "drop_slab ")))
    except OSError:
        return 0


@contextlib.contextmanager
def unless_caches_dropped(since: Optional[int] = None):
    """For a hazard half that shows the kernel's caches serving a stale state: an
    AssertionError in the block becomes a skip when some process dropped the kernel's
    caches meanwhile (the benchmarks' "after dropping caches" cases do, on a shared
    machine), since the kernel then had nothing stale left to show.  ``since``: a
    ``cache_drops()`` count taken earlier, when the state was read before the block."""
    before = cache_drops() if since is None else since
    try:
        yield
    except AssertionError:
        if cache_drops() != before:
            pytest.skip("the kernel's caches were dropped (drop_caches) during the "
                        "hazard half: it cannot show them stale")
        raise


_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61}.get(platform.machine())
#: Marks a test that calls getdents(2) itself (``getdents``, ``PlusListing``).
needs_getdents = pytest.mark.skipif(_SYS_GETDENTS64 is None,
                                    reason="getdents64's number is not known here")


def getdents(fd: int, size: int) -> list[str]:
    """The names (without "." and "..") one getdents64(2) of ``size`` bytes returns: on
    a FUSE mount, one READDIR(PLUS) request of that size when the kernel does not cache
    the directory (os.scandir reads with glibc's buffer, so a test could not put a
    lookup between two requests)."""
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(size)
    got = syscall(_SYS_GETDENTS64, fd, buf, size)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    raw, names, pos = buf.raw[:got], [], 0
    while pos < got:                       # struct linux_dirent64: ino, off, reclen, type
        reclen = struct.unpack_from("<H", raw, pos + 16)[0]
        names.append(os.fsdecode(raw[pos + 19:pos + reclen].split(b"\0", 1)[0]))
        pos += reclen
    return [n for n in names if n not in (".", "..")]


class PlusListing:
    """A directory of a mount listed as ``ls -l`` makes the kernel list it: before each
    getdents(2), a lookup of a name (from ``probes``) not listed yet, so that every
    request is READDIRPLUS (with READDIRPLUS_AUTO the kernel asks READDIRPLUS at offset
    0 and for the first request after a lookup found a new name in the directory).
    Needs an entry timeout above 0 (a name listed is not looked up again)."""

    def __init__(self, path: str, probes: Sequence[str]) -> None:
        self.path = path
        self.listed: list[str] = []
        self._probes = iter(probes)
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)

    def next(self, size: int) -> list[str]:
        """One getdents of ``size`` bytes after a probe; its names (also in ``listed``)."""
        for probe in self._probes:
            if probe not in self.listed:
                os.stat(os.path.join(self.path, probe))
                break
        batch = getdents(self.fd, size)
        self.listed.extend(batch)
        return batch

    def __enter__(self) -> "PlusListing":
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


def xlfs_command() -> list[str]:
    return [sys.executable, "-m", "fuse_bridge.cli"]


def requests_in_dump(dump: str | os.PathLike) -> Counter:
    """How many requests of each opcode the kernel sent, from a ``--dump-fuse`` file."""
    import struct
    from fuse_bridge import abi
    from fuse_bridge.dump import read_dump
    c: Counter = Counter()
    with open(dump, "rb") as f:
        for rec in read_dump(f):
            if rec.direction == "R":
                c[abi.Opcode(struct.unpack_from("<II", rec.message)[1]).name] += 1
    return c


class Mounted:
    def __init__(self, volfile: str | os.PathLike, workdir: Path, *flags: str,
                 brick: Optional[Path] = None, limit: float = 90.0,
                 overrides: Sequence[str] = (), env: Optional[dict] = None,
                 prefix: Sequence[str] = ()) -> None:
        self.volfile = str(volfile)
        self.workdir = Path(workdir)
        self.mountpoint = self.workdir / "mnt"
        self.brick = brick if brick is not None else self.workdir / "brick"
        self.log = self.workdir / "xlfs.log"
        self.flags = list(flags)
        self.overrides = list(overrides)
        self.limit = limit
        self.env = env
        self.prefix = list(prefix)      # e.g. nsenter into a test network namespace
        self.proc: Optional[subprocess.Popen] = None
        self.conn: Optional[int] = None
        self._watchdog: Optional[threading.Timer] = None
        self.aborted = False

    def extra_bricks(self) -> dict[str, Path]:
        """Directories for the storage/posix volumes not named "posix" (a mirror's
        bricks): ``WORKDIR/brick-NAME``, by volume name."""
        from xlators.core.volfile import load_volfile
        return {v.name: self.workdir / f"brick-{v.name}" for v in load_volfile(self.volfile)
                if v.type == "storage/posix" and v.name != "posix"}

    def path(self, *parts: str) -> str:
        return os.path.join(str(self.mountpoint), *parts)

    def __enter__(self) -> "Mounted":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.brick.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._watchdog = threading.Timer(self.limit, self.abort)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def _start(self) -> None:
        """Start the daemon and wait until the mount answers."""
        args = self.prefix + xlfs_command() + ["-N", "-L", "DEBUG", "-l", str(self.log), "-f", self.volfile]
        if "volume posix" in Path(self.volfile).read_text():
            args += [f"--xlator-option=posix.directory={self.brick}"]
        for name, brick in self.extra_bricks().items():
            brick.mkdir(parents=True, exist_ok=True)
            args += [f"--xlator-option={name}.directory={brick}"]
        args += [f"--xlator-option={o}" for o in self.overrides] + self.flags
        args.append(str(self.mountpoint))
        env = dict(os.environ, PYTHONPATH=str(ROOT), **(self.env or {}))
        self.proc = subprocess.Popen(args, cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._wait_ready(20.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                raise RuntimeError(f"xlfs exited with {self.proc.returncode}: {out}\n"
                                   f"log: {self.read_log()}")
            conn = mnt.connection_id(str(self.mountpoint))
            if conn is not None:
                self.conn = conn
                if mnt.answers_within(str(self.mountpoint), 5.0):
                    return
            time.sleep(0.02)
        raise TimeoutError(f"mount of {self.volfile} did not answer in {timeout}s; "
                           f"log: {self.read_log()}")

    def abort(self) -> None:
        """Last resort: break every wait on the connection."""
        self.aborted = True
        if self.conn is not None:
            mnt.abort_connection(self.conn)

    def private(self, volume: str) -> dict[str, str]:
        """The ``key=value`` state of translator ``volume`` in the running graph
        (``.meta/graphs/active/VOLUME/private``: the statedump's section, read whole)."""
        with open(self.path(".meta", "graphs", "active", volume, "private")) as f:
            return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)

    def statedump(self, timeout: float = 5.0) -> str:
        """A fresh statedump's text (SIGUSR1; the daemon logs the file it wrote, once it is
        complete), its file removed.  Unlike ``private`` it sends no request."""
        before = self.read_log().count("statedump written to")
        self.proc.send_signal(signal.SIGUSR1)
        log = wait_until(lambda: self.read_log().count("statedump written to") > before
                         and self.read_log(), timeout, "a statedump")
        path = re.findall(r"statedump written to (\S+)", log)[-1]
        try:
            with open(path) as f:
                return f.read()
        finally:
            os.unlink(path)

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the daemon and wait for it; abort and kill if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.abort()
            self.proc.kill()
            return self.proc.wait(10)

    def __exit__(self, *exc) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            self.stop()
        finally:
            if self.proc is not None and self.proc.stdout is not None:
                self.proc.stdout.close()
            mnt.force_unmount(str(self.mountpoint), self.conn)
        assert mnt.find_mount(str(self.mountpoint)) is None, "mount left behind"


@contextlib.contextmanager
def two_mounts(volfile: str | os.PathLike, workdir: Path, *flags: str,
               overrides: Sequence[str] = (), second: str | os.PathLike = VOLFILES / "local.vol",
               second_flags: Sequence[str] = KERNEL_NO_CACHE, limit: float = 60.0):
    """Two mounts of one brick (``workdir/brick``, which may be filled before): A mounts
    ``volfile`` with ``flags`` and ``overrides`` (in ``workdir/a``), B mounts ``second``
    with ``second_flags`` (in ``workdir/b``; by default local.vol, no translator cache,
    kernel caches off, no brick watch).  Yields ``(a, b)``; both are unmounted on every
    path."""
    brick = Path(workdir) / "brick"
    with Mounted(volfile, Path(workdir) / "a", *flags, brick=brick, overrides=overrides,
                 limit=limit) as a, \
            Mounted(second, Path(workdir) / "b", *second_flags, brick=brick,
                    limit=limit) as b:
        yield a, b


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class MountedByHelper(Mounted):
    """The mount ``mount -t xlfs VOLFILE MNT -o OPTIONS`` makes (mount.xlfs must be
    installed): the daemon runs in the background, its pid read from ``WORKDIR/pid``;
    the brick, the log and the pid file are passed as options before ``options``.
    Mounted's watchdog and cleanup on every path: umount, wait for the daemon to go,
    abort and SIGKILL it if it does not, then force the unmount."""

    def __init__(self, volfile: str | os.PathLike, workdir: Path, *options: str,
                 limit: float = 90.0) -> None:
        super().__init__(volfile, workdir, limit=limit)
        self.pidfile = self.workdir / "pid"
        self.options = [f"xlator-option=posix.directory={self.brick}",
                        f"log-file={self.log}", f"pid-file={self.pidfile}", *options]
        self.pid: Optional[int] = None

    def _start(self) -> None:
        proc = subprocess.run(["mount", "-t", "xlfs", self.volfile, str(self.mountpoint),
                               "-o", ",".join(self.options)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"mount -t xlfs exited with {proc.returncode}: "
                               f"{proc.stderr}\nlog: {self.read_log()}")
        self.pid = int(self.pidfile.read_text())
        self.conn = mnt.connection_id(str(self.mountpoint))

    def daemon_alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """umount (the daemon exits after it), wait for the daemon; abort the connection
        and SIGKILL the daemon if it does not go."""
        if mnt.find_mount(str(self.mountpoint)) is not None:
            subprocess.run(["umount", str(self.mountpoint)], capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout
        while self.daemon_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.daemon_alive():
            self.abort()
            os.kill(self.pid, signal.SIGKILL)
        return 0


@contextlib.contextmanager
def installed_script(path: Path, mark: str, module: str, lock_name: str):
    """For the block, ``path`` is a shell script running ``python -m module`` of this
    tree (mount(8) looks for helpers and programs on fixed paths).  One test at a time
    holds it (the lock file ``lock_name`` under /run/lock); the test is skipped when
    ``path`` exists without ``mark`` in it (not ours) or cannot be written."""
    lock_dir = "/run/lock" if os.path.isdir("/run/lock") else "/tmp"
    with open(f"{lock_dir}/{lock_name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and mark not in path.read_text(errors="replace"):
            pytest.skip(f"{path} exists and is not ours")
        try:
            path.write_text(f"#!/bin/sh\n{mark}\nPYTHONPATH={ROOT} exec {sys.executable} "
                            f"-m {module} \"$@\"\n")
            path.chmod(0o755)
        except OSError as exc:
            pytest.skip(f"cannot install {path}: {exc}")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


def run_in_child(fn, *args, timeout: float = 30.0):
    """Run ``fn(*args)`` in a forked child (e.g. as another uid); returns its exit code,
    or raises TimeoutError (after killing it)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn(*args) or 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise TimeoutError(f"child did not finish in {timeout}s")
