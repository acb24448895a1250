"""Mounting and unmounting a FUSE filesystem, with no libfuse.

As root: open /dev/fuse and call mount(2).  Otherwise: run ``fusermount3`` with
``_FUSE_COMMFD`` and receive the /dev/fuse descriptor over SCM_RIGHTS.  Also: finding a
mount's connection number (for the abort file), detecting stale mounts, and the
auto-unmount guard that removes the mount if the daemon dies.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Optional

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS = 1, 2, 4, 8, 16
MS_REMOUNT, MS_DIRSYNC, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME = 32, 128, 256, 1024, 2048
MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME = 1 << 21, 1 << 24, 1 << 25
MNT_FORCE, MNT_DETACH = 1, 2

# Options the kernel's FUSE data string accepts from us.
_DATA_OPTS = {"allow_other", "default_permissions", "max_read", "blksize"}
# The FUSE data options mount(8) repeats (from /proc/self/mountinfo) on a remount; the
# kernel ignores data options on a remount, and so do we.
FUSE_SUPER_OPTS = _DATA_OPTS | {"user_id", "group_id", "rootmode", "fd", "subtype", "fsname"}


@dataclass
class VfsFlags:
    """A mount's generic (VFS) options, resolved: what mount(2) gets as MS_* flags.

    ``atime`` is one of relatime (the kernel's default), noatime, strictatime; the
    words follow mount(8): the last one wins, ``atime``/``nostrictatime`` leave
    noatime/strictatime for the default, ``norelatime`` alone changes nothing (the
    kernel defaults to relatime; ``strictatime`` asks for full atime updates).
    """
    read_only: bool = False
    nosuid: bool = True          # FUSE mounts default to nosuid,nodev (as fusermount3)
    nodev: bool = True
    noexec: bool = False
    sync: bool = False
    dirsync: bool = False
    lazytime: bool = False
    nosymfollow: bool = False
    atime: str = "relatime"
    nodiratime: bool = False

    _BOOLS = {"ro": ("read_only", True), "rw": ("read_only", False),
              "nosuid": ("nosuid", True), "suid": ("nosuid", False),
              "nodev": ("nodev", True), "dev": ("nodev", False),
              "noexec": ("noexec", True), "exec": ("noexec", False),
              "sync": ("sync", True), "async": ("sync", False), "dirsync": ("dirsync", True),
              "lazytime": ("lazytime", True), "nolazytime": ("lazytime", False),
              "nosymfollow": ("nosymfollow", True), "symfollow": ("nosymfollow", False),
              "nodiratime": ("nodiratime", True), "diratime": ("nodiratime", False)}
    WORDS = frozenset(_BOOLS) | {"atime", "noatime", "relatime", "norelatime", "strictatime",
                                 "nostrictatime"}

    def apply(self, word: str) -> bool:
        """Apply one mount(8) word; False when it is not a VFS option."""
        if word in self._BOOLS:
            name, value = self._BOOLS[word]
            setattr(self, name, value)
        elif word in ("noatime", "relatime", "strictatime"):
            self.atime = word
        elif word == "atime":
            if self.atime == "noatime":
                self.atime = "relatime"
        elif word == "nostrictatime":
            if self.atime == "strictatime":
                self.atime = "relatime"
        elif word != "norelatime":
            return False
        return True

    def ms_flags(self) -> int:
        flags = {"relatime": MS_RELATIME, "noatime": MS_NOATIME,
                 "strictatime": MS_STRICTATIME}[self.atime]
        for bit, on in ((MS_RDONLY, self.read_only), (MS_NOSUID, self.nosuid),
                        (MS_NODEV, self.nodev), (MS_NOEXEC, self.noexec),
                        (MS_SYNCHRONOUS, self.sync), (MS_DIRSYNC, self.dirsync),
                        (MS_LAZYTIME, self.lazytime), (MS_NOSYMFOLLOW, self.nosymfollow),
                        (MS_NODIRATIME, self.nodiratime)):
            if on:
                flags |= bit
        return flags

    def words(self) -> str:
        """As mount(8) would show them: ``ro,nosuid,nodev,noatime``."""
        out = ["ro" if self.read_only else "rw"]
        out += [w for w in ("nosuid", "nodev", "noexec", "sync", "dirsync", "lazytime",
                            "nosymfollow", "nodiratime") if getattr(self, w)]
        return ",".join(out + ([] if self.atime == "relatime" else [self.atime]))

    @classmethod
    def from_mountinfo(cls, entry: dict) -> "VfsFlags":
        """The flags of a /proc/self/mountinfo entry (per-mount and superblock options;
        no atime word there means strictatime)."""
        f = cls(nosuid=False, nodev=False, atime="strictatime")
        for word in entry["options"].split(","):
            f.apply(word)
        for word in entry["super_options"].split(","):
            if word in ("ro", "sync", "dirsync", "lazytime"):
                f.apply(word)
        return f


class MountError(Exception):
    """A mount that cannot be made; str() is one line for the user."""


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def is_stale(mountpoint: str) -> bool:
    """True when ``mountpoint`` is a dead FUSE mount (ENOTCONN)."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo; the rest is as is."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo_entry(line: str) -> dict:
    parts = line.split()
    sep = parts.index("-")
    major, minor = parts[2].split(":")
    return {"id": int(parts[0]), "mountpoint": _unescape(parts[4]),
            "major": int(major), "minor": int(minor), "options": parts[5],
            "fstype": parts[sep + 1], "source": parts[sep + 2],
            "super_options": parts[sep + 3] if len(parts) > sep + 3 else ""}


def find_mount(mountpoint: str, resolved: bool = False) -> Optional[dict]:
    """The /proc/self/mountinfo entry of ``mountpoint`` (last one wins), or None.

    ``resolved``: the path is already absolute and free of symlinks, so nothing is
    stat-ed (the daemon must never stat its own mountpoint)."""
    if resolved:
        target = mountpoint
    elif is_stale(mountpoint):
        target = os.path.abspath(mountpoint)
    else:
        target = os.path.realpath(mountpoint)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            entry = _mountinfo_entry(line)
            if entry["mountpoint"] == target:
                found = entry
    return found


def mount_by_id(mount_id: int) -> Optional[dict]:
    """The /proc/self/mountinfo entry with this mount id, or None (unmounted)."""
    prefix = f"{mount_id} "
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.startswith(prefix):
                return _mountinfo_entry(line)
    return None


def connection_id(mountpoint: str) -> Optional[int]:
    """The FUSE connection number (the device minor) of a mount, never by stat-ing it."""
    m = find_mount(mountpoint)
    if m is None or not m["fstype"].startswith("fuse"):
        return None
    return m["minor"]


def ensure_fusectl() -> str:
    path = "/sys/fs/fuse/connections"
    if os.path.isdir(path) and not os.listdir(path):
        try:
            subprocess.run(["mount", "-t", "fusectl", "fusectl", path], check=False,
                           capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return path


def abort_connection(conn: int) -> bool:
    """Write 1 to the connection's abort file: breaks every wait on it."""
    path = os.path.join(ensure_fusectl(), str(conn), "abort")
    try:
        with open(path, "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def check_mountpoint(mountpoint: str) -> None:
    """Fail with one clear line when the mountpoint is unusable."""
    if is_stale(mountpoint):
        raise MountError(f"{mountpoint}: a dead FUSE mount is still there (Transport endpoint "
                         f"is not connected); clear it with: fusermount3 -u -z {mountpoint}")
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"{mountpoint}: mountpoint does not exist") from None
    except OSError as exc:
        raise MountError(f"{mountpoint}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{mountpoint}: mountpoint is not a directory")
    m = find_mount(mountpoint)
    if m is not None and m["fstype"].startswith("fuse"):
        raise MountError(f"{mountpoint}: already mounted ({m['fstype']} from {m['source']}); "
                         f"unmount it first: umount {mountpoint}")


def split_options(options: Iterable[str],
                  base: Optional[VfsFlags] = None) -> tuple[int, list[str], list[str]]:
    """(MS_* flags, kernel FUSE data options, unknown options)."""
    vfs = VfsFlags() if base is None else base
    data, unknown = [], []
    for opt in options:
        if not opt or vfs.apply(opt):
            continue
        if opt.split("=", 1)[0] in _DATA_OPTS:
            data.append(opt)
        else:
            unknown.append(opt)
    return vfs.ms_flags(), data, unknown


def mount(mountpoint: str, fsname: str, subtype: str = "xlfs",
          options: Iterable[str] = ()) -> int:
    """Mount and return the /dev/fuse fd (non-blocking, close-on-exec)."""
    check_mountpoint(mountpoint)
    flags, data, unknown = split_options(options)
    if unknown:
        raise MountError(f"unknown mount option(s): {', '.join(unknown)}")
    if os.geteuid() == 0:
        return _mount_root(mountpoint, fsname, subtype, flags, data)
    return _mount_fusermount(mountpoint, fsname, subtype, options)


def remount(mountpoint: str, words: Iterable[str]) -> tuple[VfsFlags, VfsFlags]:
    """Change the VFS options of the xlfs mount on ``mountpoint`` in place: mount(2) with
    MS_REMOUNT on the same superblock, so the FUSE connection and its daemon stay.

    The kernel replaces every per-mount flag on a remount, so the mount's current
    options are the base and ``words`` (mount(8) option words) apply on top.  FUSE
    accepts any flag change but MS_MANDLOCK and ignores data options on a remount.
    Returns (before, after)."""
    entry = find_mount(mountpoint)
    if entry is None or entry["fstype"] != "fuse.xlfs":
        what = f"a {entry['fstype']} mount" if entry else "nothing is mounted there"
        raise MountError(f"{mountpoint}: cannot remount: {what}, not an xlfs mount")
    before = VfsFlags.from_mountinfo(entry)
    after = VfsFlags.from_mountinfo(entry)
    for word in words:
        if word and not after.apply(word):
            raise MountError(f"{mountpoint}: cannot remount: '{word}' is not a mount flag")
    if os.geteuid() != 0:
        raise MountError(f"{mountpoint}: remount needs root (CAP_SYS_ADMIN)")
    rc = _libc.mount(None, os.fsencode(entry["mountpoint"]), None,
                     MS_REMOUNT | after.ms_flags(), None)
    if rc != 0:
        err = ctypes.get_errno()
        hint = " (a file is open for writing)" if err == errno.EBUSY else ""
        raise MountError(f"{mountpoint}: remount failed: {os.strerror(err)}{hint}")
    return before, after


def _mount_root(mountpoint: str, fsname: str, subtype: str, flags: int,
                data: list[str]) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    st = os.stat(mountpoint)
    opts = [f"fd={fd}", f"rootmode={stat.S_IFMT(st.st_mode) & 0o170000:o}",
            f"user_id={os.getuid()}", f"group_id={os.getgid()}"] + data
    source = fsname.replace(",", "_").encode()
    rc = _libc.mount(source, os.fsencode(mountpoint), f"fuse.{subtype}".encode(), flags,
                     ",".join(opts).encode())
    if rc != 0:
        err = _oserror("mount")
        os.close(fd)
        raise MountError(f"{mountpoint}: mount failed: {err.strerror}")
    os.set_blocking(fd, False)
    return fd


def _mount_fusermount(mountpoint: str, fsname: str, subtype: str,
                      options: Iterable[str]) -> int:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
    opts = ",".join([f"fsname={fsname}", f"subtype={subtype}"] + [o for o in options if o])
    try:
        proc = subprocess.run(["fusermount3", "-o", opts, "--", mountpoint], env=env,
                              pass_fds=(theirs.fileno(),), capture_output=True, timeout=30)
        theirs.close()
        if proc.returncode != 0:
            raise MountError(f"{mountpoint}: fusermount3 failed: "
                             f"{proc.stderr.decode(errors='replace').strip()}")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    except FileNotFoundError:
        raise MountError("fusermount3 not found (install the fuse3 package)") from None
    finally:
        ours.close()
    if not fds:
        raise MountError(f"{mountpoint}: fusermount3 sent no /dev/fuse descriptor")
    os.set_blocking(fds[0], False)
    os.set_inheritable(fds[0], False)
    return fds[0]


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmount (umount2 as root, fusermount3 -u otherwise)."""
    if os.geteuid() == 0:
        if _libc.umount2(os.fsencode(mountpoint), MNT_DETACH if lazy else 0) != 0:
            raise _oserror(f"umount {mountpoint}")
        return
    args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + ["--", mountpoint]
    proc = subprocess.run(args, capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise OSError(errno.EBUSY, proc.stderr.decode(errors="replace").strip())


def start_unmount_guard(mountpoint: str) -> Optional[subprocess.Popen]:
    """A tiny watcher process that lazily unmounts ``mountpoint`` when we die.

    It holds the read end of a pipe whose write end only this process has; when the
    daemon exits for any reason (SIGKILL included) the pipe closes and the watcher
    unmounts, so no dead mount is left behind.
    """
    r, w = os.pipe()
    code = ("import os,sys,ctypes,subprocess\n"
            "os.setsid()\n"
            "r=int(sys.argv[1]); mp=sys.argv[2]\n"
            "while os.read(r,1): pass\n"
            "libc=ctypes.CDLL('libc.so.6')\n"
            "if os.geteuid()==0: libc.umount2(mp.encode(),2)\n"
            "else: subprocess.run(['fusermount3','-u','-z','--',mp],capture_output=True)\n")
    import sys
    try:
        proc = subprocess.Popen([sys.executable, "-c", code, str(r), mountpoint],
                                pass_fds=(r,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                close_fds=True)
    except OSError:
        os.close(r)
        os.close(w)
        return None
    os.close(r)
    os.set_inheritable(w, False)
    proc._xlfs_guard_fd = w  # type: ignore[attr-defined]  # keep the write end alive
    return proc


def stop_unmount_guard(proc: Optional[subprocess.Popen]) -> None:
    if proc is None:
        return
    fd = getattr(proc, "_xlfs_guard_fd", None)
    proc.kill()
    proc.wait(timeout=5)
    if fd is not None:
        os.close(fd)


def answers_within(path: str, timeout: float) -> bool:
    """Whether stat(path) returns within ``timeout`` seconds (run in a thread, so a
    wedged mount cannot block the caller; the thread is abandoned then)."""
    done = threading.Event()

    def probe() -> None:
        try:
            os.stat(path)
        except OSError:
            pass
        done.set()
    threading.Thread(target=probe, daemon=True).start()
    return done.wait(timeout)


def force_unmount(mountpoint: str, conn: Optional[int] = None, tries: int = 100) -> bool:
    """Lazily unmount until the mount is gone, aborting the connection when unmounting
    fails.  Never stats the mountpoint.  True when it is gone."""
    for _ in range(tries):
        m = find_mount(mountpoint)
        if m is None:
            return True
        if conn is None and m["fstype"].startswith("fuse"):
            conn = m["minor"]
        try:
            unmount(mountpoint, lazy=True)
        except OSError:
            if conn is not None:
                abort_connection(conn)
        time.sleep(0.05)
    return find_mount(mountpoint) is None
