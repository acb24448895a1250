"""POSIX behaviour that FUSE leaves to the server (issue 13): execute-only files, POSIX
ACLs, and clearing set-user-ID, set-group-ID and file capabilities when another user
writes, truncates or allocates.

Each scenario runs on the raw backing directory (the oracle) and on xlfs mounts, as root
and as uid 1000, and returns what it saw (modes, ACL texts, capabilities, exit codes,
errnos) in terms that do not depend on where it ran: the two results must be equal.
The mounts keep attributes for 60 s, so a stale attribute shows.

    pytest tests/posix/test_posix_privs.py -k acl
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.posix.posixlib import as_user, errno_of, fallocate, get_target, rmtree

USER = 1000
GROUP = 1000
LONG = ("--attribute-timeout=60", "--entry-timeout=60", "--acl")
MOUNTS = {
    "local": ("local", *LONG),
    "local-writeback": ("local", *LONG, "--kernel-writeback-cache"),
    "local-direct-io": ("local", *LONG, "--direct-io-mode=yes"),
    "local-passthrough": ("local", *LONG, "--fuse-passthrough=yes"),
    "write-behind-direct-io": ("write-behind", *LONG, "--direct-io-mode=yes"),
    "write-behind-writeback": ("write-behind", *LONG, "--kernel-writeback-cache"),
    "memory": ("memory", *LONG),
    "memory-direct-io": ("memory", *LONG, "--direct-io-mode=yes"),
}

pytestmark = pytest.mark.mount


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _dirs(request, mount_pool, name: str) -> tuple[Path, Path]:
    """A fresh directory on the raw target and on mount ``name``, world-writable."""
    raw = get_target(mount_pool, "raw")
    mnt = get_target(mount_pool, *MOUNTS[name])
    out = []
    for t in (raw, mnt):
        d = t.root / f"privs-{request.node.name}".replace("/", "_")[:120]
        rmtree(d)
        d.mkdir()
        os.chmod(d, 0o777)
        out.append(d)
    yield tuple(out)
    for d in out:
        rmtree(d)
    if mnt.mount.proc.poll() is not None:
        pytest.fail(f"the xlfs daemon died: {mnt.mount.read_log()[-3000:]}")


@pytest.fixture(params=sorted(MOUNTS))
def pair(request, mount_pool):
    yield from _dirs(request, mount_pool, request.param)


def same_on_both(pair, scenario: Callable[[Path], object]) -> object:
    raw, mnt = pair
    want = scenario(raw)
    got = scenario(mnt)
    assert got == want, f"mount differs from the raw directory:\n raw:   {want}\n mount: {got}"
    return want


# -- 1. execute-only files -----------------------------------------------------------
def _exec_as_user(path: str) -> tuple[int, bool]:
    try:
        r = _run(path)
    except OSError as e:               # execve itself failed
        return -e.errno, True
    return r.returncode, "Permission denied" in r.stderr


def exec_only(d: Path) -> object:
    prog, script, readable = d / "prog", d / "script", d / "readable"
    shutil.copy("/bin/true", prog)
    script.write_text("#!/bin/sh\nexit 7\n")
    readable.write_text("#!/bin/sh\nexit 7\n")
    os.chmod(prog, 0o711)
    os.chmod(script, 0o711)
    os.chmod(readable, 0o755)
    return [
        as_user(USER, _exec_as_user, str(prog)),        # runs: execute is enough
        as_user(USER, _exec_as_user, str(script)),      # sh cannot read it: refused
        as_user(USER, _exec_as_user, str(readable)),    # exits 7
        as_user(USER, errno_of, os.open, str(prog), os.O_RDONLY),   # no reading it
        # open(2) drops the kernel's exec bit (0o40): no way to pose as execve
        as_user(USER, errno_of, os.open, str(prog), os.O_RDONLY | 0o40),
        as_user(USER, errno_of, os.open, str(script), os.O_RDONLY),
        as_user(USER, errno_of, os.execv, str(d / "missing"), ["x"]),
    ]


def test_execute_only_files(pair):
    got = same_on_both(pair, exec_only)
    assert got[0] == (0, False) and got[3] == got[4] == errno.EACCES


# -- 2. POSIX ACLs ---------------------------------------------------------------------
def _acl(path: Path) -> str:
    r = _run(_tool("getfacl"), "-cp", str(path))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _setfacl(*args: str) -> None:
    r = _run(_tool("setfacl"), *args)
    if r.returncode and "Operation not supported" in r.stderr:
        pytest.skip("this storage keeps no POSIX ACLs (the bridge does not negotiate them)")
    assert r.returncode == 0, r.stderr


def _mode(path: Path) -> str:
    return oct(os.lstat(path).st_mode)


def default_acl_replaces_umask(d: Path) -> object:
    inherit = d / "inherit"
    os.mkdir(inherit, 0o755)
    _setfacl("-d", "-m", f"u::rwx,g::rx,o::r,u:{USER}:rwx,m::rwx", str(inherit))
    made = []
    for base in (inherit, d):          # d: no default ACL, the umask applies
        def create(base=base) -> None:
            os.close(os.open(base / "file", os.O_CREAT | os.O_WRONLY, 0o666))
            os.mkdir(base / "dir", 0o777)
            os.mknod(base / "fifo", stat.S_IFIFO | 0o666)
            os.symlink("file", base / "link")
        as_user(0, create, umask=0o077)
        made += [(f"{base.name}/{n}", _mode(base / n),
                  "" if n == "link" else _acl(base / n))
                 for n in ("file", "dir", "fifo", "link")]
    # the new directory inherited the default ACL, and passes it on
    as_user(0, lambda: os.mkdir(inherit / "dir" / "deeper"), umask=0o077)
    made.append(("deeper", _mode(inherit / "dir" / "deeper"),
                 _acl(inherit / "dir" / "deeper")))
    # a user with an ACL entry may create in a directory whose mode says no
    as_user(USER, lambda: open(inherit / "dir" / "byuser", "w").close(), umask=0o022)
    made.append(("byuser", _mode(inherit / "dir" / "byuser")))
    return made


def test_default_acl_replaces_umask(pair):
    got = same_on_both(pair, default_acl_replaces_umask)
    assert got[0][1] == oct(stat.S_IFREG | 0o664), got[0]      # not 0600: umask 077 ignored


def setfacl_mode_visible(d: Path) -> object:
    f = d / "f"
    f.write_bytes(b"secret")
    os.chmod(f, 0o600)
    seen = [_mode(f)]                  # the kernel now caches the attributes (60 s)
    _setfacl("-m", "g::rwx", str(f))
    seen.append(_mode(f))              # 0670 at once
    _setfacl("-m", f"u:{USER}:r", str(f))
    seen += [_mode(f), _acl(f)]
    seen.append(as_user(USER, errno_of, lambda: open(f, "rb").read()))    # the ACL grants
    os.chmod(f, 0o600)                 # chmod sets the ACL mask
    seen += [_mode(f), _acl(f)]
    seen.append(as_user(USER, errno_of, lambda: open(f, "rb").read()))    # masked out
    g = d / "g"
    g.write_bytes(b"open")
    os.chmod(g, 0o644)
    _setfacl("-m", f"u:{USER}:-", str(g))
    seen += [_mode(g), as_user(USER, errno_of, lambda: open(g, "rb").read())]
    _setfacl("-b", str(g))             # removing the ACL gives the mode back its say
    seen += [_mode(g), as_user(USER, errno_of, lambda: open(g, "rb").read())]
    return seen


def test_setfacl_changes_mode_at_once(pair):
    got = same_on_both(pair, setfacl_mode_visible)
    assert got[:2] == [oct(stat.S_IFREG | 0o600), oct(stat.S_IFREG | 0o670)]
    assert got[4] == 0 and got[7] == errno.EACCES and got[9] == errno.EACCES


# -- 3. killing privileges -----------------------------------------------------------------
def _write(path: str) -> None:
    with open(path, "r+b") as f:
        f.write(b"w")


def _truncate(path: str) -> None:
    os.truncate(path, 1)


def _open_trunc(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))


def _fallocate(path: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        fallocate(fd, 0, 0, 65536)
    finally:
        os.close(fd)


OPS = {"write": _write, "truncate": _truncate, "open-trunc": _open_trunc,
       "fallocate": _fallocate}
# name -> (mode, group of the file, setcap?); uid 1000 may write every one of them
FILES = {
    "setuid": (0o4777, 0, False),
    "setgid-gx": (0o2777, 0, False),
    "setgid-gnx": (0o2767, 0, False),          # not in the group: cleared all the same
    "setgid-gnx-member": (0o2767, GROUP, False),   # writer in the group: kept
    "setgid-gx-member": (0o2777, GROUP, False),
    "both": (0o6777, 0, False),
    "caps": (0o766, 0, True),
    "caps-setuid": (0o4777, 0, True),
}


def _caps(path: Path) -> str:
    r = _run(_tool("getcap"), str(path))
    return r.stdout.replace(str(path), "").strip()


def kill_privileges(d: Path) -> object:
    setcap = _tool("setcap")
    seen = []
    for name, (mode, gid, caps) in FILES.items():
        for op, fn in OPS.items():
            p = d / f"{name}.{op}"
            p.write_bytes(b"0123456789")
            os.chown(p, 0, gid)
            os.chmod(p, mode)
            if caps:
                r = _run(setcap, "cap_net_raw+ep", str(p))
                assert r.returncode == 0, r.stderr
            before = _caps(p)
            err = as_user(USER, errno_of, fn, str(p))
            seen.append((name, op, err, oct(os.stat(p).st_mode & 0o7777), before, _caps(p)))
    return seen


def test_writer_clears_privileges(pair):
    got = same_on_both(pair, kill_privileges)
    assert ("setuid", "write", 0, "0o777", "", "") in got
    assert ("caps", "write", 0, "0o766", "cap_net_raw=ep", "") in got
