"""Helpers of the POSIX behaviour suite: the filesystems under test, libc calls Python
lacks (renameat2, utimensat with UTIME_OMIT, fallocate modes, getxattr size probing),
running code as another user in a forked child, and a pool of shared mounts.

A *target* is one filesystem under test: ``raw`` (a plain directory on the disk that
backs the bricks: the oracle) or an xlfs mount of a shipped volfile.  Every test gets a
fresh subdirectory of its target, so one mount per volfile serves the whole session.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tests.mountlib import VOLFILES, Mounted, can_mount

# -- libc -------------------------------------------------------------------------------
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.getxattr.restype = ctypes.c_ssize_t
_libc.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.listxattr.restype = ctypes.c_ssize_t

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x1, 0x2, 0x10
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec),
                            ctypes.c_int]


def _check(rc: int, *what: Any) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *[os.fsdecode(w) for w in what[:1]])
    return rc


def renameat2(old: str | os.PathLike, new: str | os.PathLike, flags: int) -> None:
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags),
           old)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _check(_libc.fallocate(fd, mode, offset, length))


def utimensat(path: str | os.PathLike, atime: tuple[int, int], mtime: tuple[int, int],
              follow: bool = True) -> None:
    """``atime``/``mtime`` are (seconds, nanoseconds); nanoseconds may be UTIME_NOW/OMIT."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), times,
                           0 if follow else AT_SYMLINK_NOFOLLOW), path)


def getxattr_size(path: str | os.PathLike, name: str) -> int:
    """getxattr(path, name, NULL, 0): the value's size, as programs probe it."""
    return _check(_libc.getxattr(os.fsencode(path), name.encode(), None, 0), path)


def getxattr_into(path: str | os.PathLike, name: str, size: int) -> bytes:
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _check(_libc.getxattr(os.fsencode(path), name.encode(), buf, size), path)
    return buf.raw[:n]


def listxattr_size(path: str | os.PathLike) -> int:
    return _check(_libc.listxattr(os.fsencode(path), None, 0), path)


# -- other users ------------------------------------------------------------------------
class ChildTimeout(Exception):
    pass


def as_user(uid: int, fn: Callable[..., Any], *args: Any, gid: Optional[int] = None,
            groups: Sequence[int] = (), umask: int = 0o022, timeout: float = 30.0) -> Any:
    """Run ``fn(*args)`` in a forked child as ``uid``/``gid`` with supplementary
    ``groups``; return its result, or raise the exception it raised (OSError keeps its
    errno)."""
    gid = uid if gid is None else gid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(umask)
            out = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            if isinstance(exc, OSError):
                exc = OSError(exc.errno, exc.strerror, exc.filename)
            try:
                out = (False, exc)
                pickle.dumps(out)
            except Exception:  # noqa: BLE001
                out = (False, RuntimeError(repr(exc)))
        try:
            data = pickle.dumps(out)
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        os.set_blocking(r, False)
        while True:
            try:
                chunk = os.read(r, 65536)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    raise ChildTimeout(f"child as uid {uid} did not finish in {timeout}s")
                time.sleep(0.002)
                continue
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    ok, value = pickle.loads(b"".join(chunks))
    if ok:
        return value
    raise value


def in_children(fns: Sequence[Callable[[], Any]], timeout: float = 60.0) -> None:
    """Run each function in its own forked process at once; fail if any fails."""
    pids = []
    for fn in fns:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fn()
                code = 0
            except BaseException:  # noqa: BLE001
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    deadline = time.monotonic() + timeout
    failed = []
    pending = set(pids)
    while pending:
        for pid in list(pending):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                pending.discard(pid)
                if os.waitstatus_to_exitcode(status) != 0:
                    failed.append(pid)
        if pending and time.monotonic() > deadline:
            for pid in pending:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise ChildTimeout(f"{len(pending)} writer processes did not finish")
        time.sleep(0.005)
    assert not failed, f"{len(failed)} of {len(pids)} child processes failed"


def errno_of(fn: Callable[..., Any], *args: Any, **kw: Any) -> int:
    """The errno ``fn`` fails with (0 if it succeeds)."""
    try:
        fn(*args, **kw)
    except OSError as exc:
        return exc.errno
    return 0


# -- targets ----------------------------------------------------------------------------
@dataclass
class Target:
    name: str                       # "raw" or a volfile's stem
    root: Path                      # where tests make their subdirectories
    brick: Optional[Path] = None    # the backing directory (raw: root itself)
    mount: Optional[Mounted] = None
    backed: bool = False            # storage/posix bricks behind it (a cluster volfile's)

    @property
    def raw(self) -> bool:
        return self.mount is None

    @property
    def posix_backed(self) -> bool:
        return self.brick is not None or self.backed


def speed_overrides(volfile: str | os.PathLike) -> list[str]:
    """``--xlator-option`` values that keep a deliberately slow stack quick in tests:
    every debug/delay-gen delay becomes 5 ms (the stack itself stays as shipped)."""
    from xlators.core.volfile import load_volfile
    return [f"{v.name}.delay-duration=5000" for v in load_volfile(volfile)
            if v.type == "debug/delay-gen"]


class MountPool:
    """One mount per volfile for the whole session (and a raw directory)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.targets: dict[str, Target] = {}

    def get(self, name: str, *flags: str,
            prepare: Optional[Callable[[Path], None]] = None) -> Target:
        """The target ``name`` ("raw" or a volfile's stem), mounted on first use;
        ``prepare(brick)`` fills a new posix brick before it is mounted."""
        key = " ".join((name,) + flags)
        if key in self.targets:
            return self.targets[key]
        work = self.base / (name + (f"-{len(self.targets)}" if flags else ""))
        work.mkdir(mode=0o755)
        if name == "raw":
            root = work / "dir"
            root.mkdir(mode=0o755)
            t = Target(name, root, brick=root)
        else:
            volfile = VOLFILES / f"{name}.vol"
            m = Mounted(volfile, work, *flags, limit=1800.0,
                        overrides=speed_overrides(volfile))
            m.brick.mkdir(mode=0o755, exist_ok=True)
            if prepare is not None:
                prepare(m.brick)
            m.__enter__()
            posix = "volume posix" in volfile.read_text()
            extra = list(m.extra_bricks().values())     # a cluster's bricks: the first
            brick = m.brick if posix else extra[0] if extra else None
            t = Target(name, m.mountpoint, brick=brick, mount=m,
                       backed="storage/posix" in volfile.read_text())
        self.targets[key] = t
        return t

    def close(self) -> None:
        errors = []
        for t in self.targets.values():
            if t.mount is not None:
                try:
                    t.mount.__exit__(None, None, None)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
        self.targets.clear()
        if errors:
            raise errors[0]


def get_target(pool: MountPool, name: str, *flags: str,
               prepare: Optional[Callable[[Path], None]] = None) -> Target:
    """pool.get(), or skip the test when this machine cannot mount."""
    if name != "raw":
        why = can_mount()
        if why:
            import pytest
            pytest.skip(why)
    return pool.get(name, *flags, prepare=prepare)


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        # a test may leave a directory without permissions behind
        for dirpath, dirnames, _ in os.walk(path):
            for dn in dirnames:
                try:
                    os.chmod(os.path.join(dirpath, dn), 0o700)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)


def probe(fn: Callable[[], Any]) -> Optional[int]:
    """None if ``fn()`` works, else the errno it fails with."""
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return None


# -- FUSE passthrough -------------------------------------------------------------------
#: The shipped stacks whose every translator declares ``passes_data_through``: with
#: ``--fuse-passthrough=auto`` the kernel reads and writes their brick files itself.
PASSTHROUGH_USED = frozenset({"local", "fast", "md-cache", "nl-cache", "io-threads",
                              "readdir-ahead"})
#: The shipped stacks that decline it, each with the volume that refuses (the first
#: from the top), as the log and ``.meta/root/private`` name it.
PASSTHROUGH_REFUSED_BY = {
    "perf": "volume 'open-behind' (performance/open-behind)",
    "io-cache": "volume 'ioc' (performance/io-cache)",
    "read-ahead": "volume 'ra' (performance/read-ahead)",
    "quick-read": "volume 'qr' (performance/quick-read)",
    "open-behind": "volume 'open-behind' (performance/open-behind)",
    "write-behind": "volume 'wb' (performance/write-behind)",
}


def passthrough_mode(flags: Sequence[str]) -> Optional[str]:
    """The ``--fuse-passthrough=MODE`` among a target's bridge flags, or None."""
    modes = [f.split("=", 1)[1] for f in flags if f.startswith("--fuse-passthrough=")]
    return modes[-1] if modes else None


def bridge_state(mount: Mounted) -> dict[str, str]:
    """The bridge's statedump lines, read from the running daemon
    (``.meta/root/private``: ``KEY=VALUE``)."""
    text = Path(mount.path(".meta", "root", "private")).read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def check_passthrough_decision(target: Target, mode: str) -> bool:
    """Assert that the mount of ``target`` (a shipped volfile mounted with
    ``--fuse-passthrough=mode``) took passthrough exactly when its stack allows it, and
    says why not otherwise; return whether it is on."""
    state = {k: v for k, v in bridge_state(target.mount).items()
             if k.startswith("passthrough.")}
    enabled, declined = state["passthrough.enabled"], state["passthrough.declined"]
    where = f"{target.name} with --fuse-passthrough={mode}"
    if mode == "no":
        assert (enabled, declined) == ("no", "--fuse-passthrough=no"), (where, state)
        return False
    if target.name in PASSTHROUGH_USED:
        assert (enabled, declined) == ("yes", "(none)"), (where, state)
        return True
    refuser = PASSTHROUGH_REFUSED_BY[target.name]
    assert enabled == "no", (where, state)
    assert declined == f"{refuser} may change or must see file data", (where, declined)
    assert f"FUSE passthrough not used: {refuser}" in target.mount.read_log(), where
    return False


def check_data_path(target: Target, used: bool, sent: dict[str, int]) -> None:
    """READ and WRITE (``sent``: requests the kernel sent, by opcode) reach the daemon
    exactly when passthrough is off."""
    reads, writes = sent.get("READ", 0), sent.get("WRITE", 0)
    if used:
        assert reads == 0 and writes == 0, (target.name, sent)
        assert int(bridge_state(target.mount)["passthrough.opens"]) > 0, target.name
    else:
        assert reads > 0 and writes > 0, (target.name, sent)


class RequestCount:
    """Requests the kernel sends to one mount while the block runs, by opcode, from the
    kernel's fuse tracepoint (benchmarks.fuse_trace); ``counts`` stays None where that
    cannot count (Linux before 6.15, no tracefs), and ``why`` says why."""

    def __init__(self, mount: Mounted, events: int = 100_000) -> None:
        from benchmarks.fuse_trace import FuseTrace, unavailable
        self.why = unavailable()
        self.counts: Optional[dict[str, int]] = None
        self._trace = FuseTrace(mount.conn, events=events) if self.why is None else None

    def __enter__(self) -> "RequestCount":
        if self._trace is not None:
            self._trace.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._trace is None:
            return
        self._trace.__exit__(*exc)
        if exc[0] is None:           # (a failure in the block is the one to report)
            assert not self._trace.lost(), "the trace buffer overflowed: counts are short"
            self.counts = self._trace.counts()
