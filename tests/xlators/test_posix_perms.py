"""storage/posix permission checks for non-root callers, with the raw directory as the
oracle: the same operations run through the translator (frames with the caller's uid,
gid and groups) on brick A and, on a twin tree B, in a child process that really is that
user (subprocess with user=/group=/extra_groups=, working relative to an inherited
directory descriptor).  Every outcome (errno or result) and the final trees must agree."""
from __future__ import annotations

import errno
import json
import os
import stat
import struct
import subprocess
import sys

import pytest

from xlators import NOW, Fd, Loc, SetAttr
from xlators.testing import Harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (switches users)")

R, W, RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR


def acl(*entries: tuple[int, int, int]) -> bytes:
    """A system.posix_acl_access value: (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i & 0xFFFFFFFF)
                                           for t, p, i in entries)


DENY_1000 = acl((0x01, 7, -1), (0x02, 0, 1000), (0x04, 5, -1), (0x10, 5, -1), (0x20, 5, -1))
OWNER_ACL = acl((0x01, 6, -1), (0x02, 4, 1002), (0x04, 4, -1), (0x10, 4, -1), (0x20, 4, -1))


def build(d: str) -> None:
    """The same starting tree in A and B (made as root, directly)."""
    def mk(p, mode, uid=0, gid=0):
        os.mkdir(f"{d}/{p}")
        os.chown(f"{d}/{p}", uid, gid)
        os.chmod(f"{d}/{p}", mode)

    def fl(p, mode, uid=0, gid=0, data=b"data"):
        with open(f"{d}/{p}", "wb") as f:
            f.write(data)
        os.chown(f"{d}/{p}", uid, gid)
        os.chmod(f"{d}/{p}", mode)
    os.chmod(d, 0o755)
    mk("pub", 0o755)
    fl("pub/file", 0o644)
    fl("pub/wr", 0o666)
    fl("pub/exe", 0o755)
    mk("priv", 0o700)
    fl("priv/secret", 0o644)
    mk("grp", 0o770, 0, 1001)
    fl("grp/gfile", 0o660, 0, 1001)
    mk("home", 0o755, 1000, 1000)
    fl("home/own", 0o644, 1000, 1000)
    fl("home/ro", 0o444, 1000, 1000)
    fl("home/setid", 0o6755, 1000, 1000)
    mk("sticky", 0o1777)
    fl("sticky/other", 0o666, 1002, 1002)
    fl("sticky/mine", 0o644, 1000, 1000)
    mk("sgid", 0o2777, 0, 1001)
    mk("ro", 0o555)
    fl("ro/f", 0o666)
    mk("xonly", 0o711)
    fl("xonly/f", 0o644)
    mk("ronly", 0o744)
    fl("ronly/f", 0o644)
    mk("acl", 0o755)
    fl("acl/f", 0o644)
    os.setxattr(f"{d}/acl", "system.posix_acl_access", DENY_1000)
    fl("setid", 0o6777)
    os.symlink("pub/file", f"{d}/lnk")
    os.setxattr(f"{d}/pub/file", "user.k", b"v")
    os.setxattr(f"{d}/pub/file", "trusted.t", b"t")


OPS = [
    ["stat", "pub/file"], ["stat", "priv/secret"], ["stat", "grp/gfile"], ["stat", "xonly/f"],
    ["stat", "ronly/f"], ["stat", "acl/f"], ["stat", "lnk"], ["stat", "pub/none"],
    ["listdir", "pub"], ["listdir", "priv"], ["listdir", "xonly"], ["listdir", "ronly"],
    ["listdir", "grp"], ["listdir", "acl"],
    ["open", "pub/file", R], ["open", "pub/file", W], ["open", "pub/wr", RW],
    ["open", "priv/secret", R], ["open", "grp/gfile", RW], ["open", "home/ro", W],
    ["open", "pub/file", R | os.O_TRUNC], ["open", "xonly/f", R],
    ["create", "pub/new", 0o644, 0o022], ["create", "home/new", 0o666, 0],
    ["create", "home/new2", 0o640, 0o027], ["create", "grp/new", 0o664, 0o002],
    ["create", "sgid/new", 0o2755, 0], ["create", "sgid/new2", 0o644, 0o022],
    ["mkdir", "sgid/dir", 0o755, 0o022], ["create", "sticky/new", 0o600, 0],
    ["create", "ro/new", 0o644, 0], ["create", "xonly/new", 0o644, 0],
    ["create", "home/suid", 0o4755, 0o022],
    ["mkdir", "home/d", 0o777, 0o022], ["mkdir", "pub/d", 0o755, 0],
    ["mkdir", "grp/d", 0o3775, 0], ["mknod", "home/fifo", 0o644, 0],
    ["symlink", "target", "home/sl"], ["symlink", "t", "pub/sl"],
    ["unlink", "sticky/other"], ["unlink", "sticky/mine"], ["unlink", "pub/file"],
    ["rename", "home/new", "home/renamed"], ["rename", "home/renamed", "pub/x"],
    ["rename", "sticky/other", "home/stolen"], ["rename", "sticky/new", "home/fromsticky"],
    ["link", "pub/wr", "home/hl"], ["link", "pub/file", "home/hl2"],
    ["link", "home/own", "pub/hl3"],
    ["chmod", "home/own", 0o600], ["chmod", "pub/file", 0o777], ["chmod", "home/own", 0o2644],
    ["chmod", "home/new2", 0o4711],
    ["chown", "home/own", 1000, 1001], ["chown", "home/own", 0, -1],
    ["chown", "home/own", -1, 1000], ["chown", "home/new2", -1, 1002],
    ["truncate", "pub/wr", 2], ["truncate", "pub/file", 0], ["truncate", "home/ro", 0],
    ["utime", "pub/wr", None], ["utime", "pub/wr", 10 ** 9], ["utime", "home/own", 10 ** 9],
    ["utime", "pub/file", None],
    ["setxattr", "home/own", "user.a", "31"], ["setxattr", "pub/file", "user.a", "31"],
    ["setxattr", "home/own", "trusted.a", "31"], ["setxattr", "home/own", "security.a", "31"],
    ["setxattr", "home/own", "system.posix_acl_access", OWNER_ACL.hex()],
    ["setxattr", "pub/wr", "system.posix_acl_access", OWNER_ACL.hex()],
    ["getxattr", "pub/file", "user.k"], ["getxattr", "pub/file", "trusted.t"],
    ["getxattr", "priv/secret", "user.k"], ["getxattr", "home/own", "user.a"],
    ["listxattr", "pub/file"], ["removexattr", "pub/file", "user.k"],
    ["removexattr", "home/own", "user.a"],
    ["access", "pub/file", os.W_OK], ["access", "pub/exe", os.X_OK],
    ["access", "home/own", os.W_OK], ["access", "pub/file", os.R_OK],
    ["write", "setid", "7a"], ["write", "pub/wr", "7a"],
    ["rmdir", "home/d"], ["rmdir", "pub/d"], ["rmdir", "sgid/dir"],
    ["unlink", "home/own"],
]

CHILD = r"""
import json, os, sys
bfd = int(sys.argv[1])
root = "/proc/self/fd/%d/" % bfd
def owner(st):
    return [st.st_uid, st.st_gid, st.st_mode & 0o7777]
def run(op, a):
    if op == "stat":
        os.stat(a[0], dir_fd=bfd, follow_symlinks=False); return None
    if op == "listdir":
        return sorted(os.listdir(root + a[0]))
    if op == "open":
        os.close(os.open(a[0], a[1], dir_fd=bfd)); return None
    if op in ("create", "mkdir", "mknod"):
        os.umask(a[2])
        if op == "create":
            fd = os.open(a[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, a[1], dir_fd=bfd)
            st = os.fstat(fd); os.close(fd); return owner(st)
        if op == "mkdir":
            os.mkdir(a[0], a[1], dir_fd=bfd)
        else:
            os.mkfifo(a[0], a[1], dir_fd=bfd)
        return owner(os.stat(a[0], dir_fd=bfd, follow_symlinks=False))
    if op == "symlink":
        os.symlink(a[0], a[1], dir_fd=bfd)
        st = os.stat(a[1], dir_fd=bfd, follow_symlinks=False); return [st.st_uid, st.st_gid]
    if op == "unlink":
        os.unlink(a[0], dir_fd=bfd); return None
    if op == "rmdir":
        os.rmdir(a[0], dir_fd=bfd); return None
    if op == "rename":
        os.rename(a[0], a[1], src_dir_fd=bfd, dst_dir_fd=bfd); return None
    if op == "link":
        os.link(a[0], a[1], src_dir_fd=bfd, dst_dir_fd=bfd, follow_symlinks=False); return None
    if op == "chmod":
        os.chmod(a[0], a[1], dir_fd=bfd); return None
    if op == "chown":
        os.chown(a[0], a[1], a[2], dir_fd=bfd, follow_symlinks=False); return None
    if op == "truncate":
        fd = os.open(a[0], os.O_WRONLY, dir_fd=bfd); os.ftruncate(fd, a[1]); os.close(fd)
        return None
    if op == "utime":
        if a[1] is None:
            os.utime(a[0], dir_fd=bfd, follow_symlinks=False)
        else:
            os.utime(a[0], ns=(a[1], a[1]), dir_fd=bfd, follow_symlinks=False)
        return None
    if op == "setxattr":
        os.setxattr(root + a[0], a[1], bytes.fromhex(a[2])); return None
    if op == "getxattr":
        return os.getxattr(root + a[0], a[1]).hex()
    if op == "listxattr":
        return sorted(os.listxattr(root + a[0]))
    if op == "removexattr":
        os.removexattr(root + a[0], a[1]); return None
    if op == "access":
        os.stat(a[0], dir_fd=bfd)
        if not os.access(a[0], a[1], dir_fd=bfd):
            raise OSError(13, "access")
        return None
    if op == "write":
        fd = os.open(a[0], os.O_WRONLY, dir_fd=bfd)
        try:
            return os.pwrite(fd, bytes.fromhex(a[1]), 0)
        finally:
            os.close(fd)
    raise ValueError(op)
out = []
for op in json.loads(sys.stdin.read()):
    try:
        out.append(["ok", run(op[0], op[1:])])
    except OSError as e:
        out.append(["err", e.errno])
print(json.dumps(out))
"""


# The child must be able to run as any user: the venv's interpreter may live under /root.
PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
               if os.path.exists(p) and os.stat(p).st_mode & 0o001), sys.executable)


def oracle(b: str, uid: int, gid: int, groups: list[int], ops: list) -> list:
    bfd = os.open(b, os.O_PATH | os.O_DIRECTORY)
    try:
        proc = subprocess.run([PYTHON, "-I", "-c", CHILD, str(bfd)],
                              input=json.dumps(ops), capture_output=True, text=True,
                              user=uid, group=gid, extra_groups=groups, pass_fds=[bfd],
                              timeout=60)
    finally:
        os.close(bfd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


class Through:
    """The same operations through storage/posix with the caller's frames."""

    def __init__(self, h: Harness, uid: int, gid: int, groups: list[int]) -> None:
        self.h, self.xl = h, h.top
        self.frame = lambda: h.frame(uid, gid, groups)

    async def walk(self, path: str):
        inode = self.h.root
        entry = None
        for comp in path.split("/"):
            entry = await self.xl.lookup(self.frame(), Loc(inode, os.fsencode(comp)))
            inode = entry.inode
        return entry

    async def parent(self, path: str) -> Loc:
        head, _, name = path.rpartition("/")
        inode = (await self.walk(head)).inode if head else self.h.root
        return Loc(inode, os.fsencode(name))

    async def run(self, op: str, a: list):
        xl, fr = self.xl, self.frame()
        own = (lambda at: [at.uid, at.gid, at.mode & 0o7777])
        if op == "stat":
            await xl.getattr(fr, (await self.walk(a[0])).inode)
            return None
        if op == "listdir":
            ino = (await self.walk(a[0])).inode
            fd = Fd(ino, is_dir=True)
            await xl.opendir(fr, ino, fd)
            try:
                return sorted(os.fsdecode(e.name) for e in await xl.readdir(fr, fd, 0, 1 << 20)
                              if e.name not in (b".", b".."))
            finally:
                await xl.releasedir(fr, fd)
        if op in ("open", "write"):
            ino = (await self.walk(a[0])).inode
            fd = Fd(ino)
            await xl.open(fr, ino, a[1] if op == "open" else os.O_WRONLY, fd)
            try:
                if op == "write":
                    return await xl.writev(fr, fd, bytes.fromhex(a[1]), 0, 0)
                return None
            finally:
                await xl.release(fr, fd)
        if op == "create":
            loc = await self.parent(a[0])
            fd = Fd(loc.parent)
            e = await xl.create(fr, loc, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                                stat.S_IFREG | a[1], a[2], fd)
            await xl.release(fr, fd)
            return own(e.attr)
        if op == "mkdir":
            return own((await xl.mkdir(fr, await self.parent(a[0]), stat.S_IFDIR | a[1],
                                       a[2])).attr)
        if op == "mknod":
            return own((await xl.mknod(fr, await self.parent(a[0]), stat.S_IFIFO | a[1], 0,
                                       a[2])).attr)
        if op == "symlink":
            at = (await xl.symlink(fr, os.fsencode(a[0]), await self.parent(a[1]))).attr
            return [at.uid, at.gid]
        if op == "unlink":
            return await xl.unlink(fr, await self.parent(a[0]))
        if op == "rmdir":
            return await xl.rmdir(fr, await self.parent(a[0]))
        if op == "rename":
            return await xl.rename(fr, await self.parent(a[0]), await self.parent(a[1]), 0)
        if op == "link":
            src = (await self.walk(a[0])).inode
            await xl.link(fr, src, await self.parent(a[1]))
            return None
        ino = (await self.walk(a[0])).inode
        if op == "chmod":
            await xl.setattr(fr, ino, SetAttr(mode=a[1]))
        elif op == "chown":
            await xl.setattr(fr, ino, SetAttr(uid=None if a[1] < 0 else a[1],
                                              gid=None if a[2] < 0 else a[2]))
        elif op == "truncate":
            fd = Fd(ino)
            await xl.open(fr, ino, os.O_WRONLY, fd)
            try:
                await xl.setattr(fr, ino, SetAttr(size=a[1]), fd)
            finally:
                await xl.release(fr, fd)
        elif op == "utime":
            t = NOW if a[1] is None else a[1]
            await xl.setattr(fr, ino, SetAttr(atime_ns=t, mtime_ns=t))
        elif op == "setxattr":
            await xl.setxattr(fr, ino, a[1].encode(), bytes.fromhex(a[2]), 0)
        elif op == "getxattr":
            return (await xl.getxattr(fr, ino, a[1].encode())).hex()
        elif op == "listxattr":
            return sorted(os.fsdecode(n) for n in await xl.listxattr(fr, ino))
        elif op == "removexattr":
            await xl.removexattr(fr, ino, a[1].encode())
        elif op == "access":
            await xl.access(fr, ino, a[1])
        else:
            raise ValueError(op)
        return None

    async def all(self, ops: list) -> list:
        out = []
        for op in ops:
            try:
                out.append(["ok", await self.run(op[0], op[1:])])
            except OSError as e:
                out.append(["err", e.errno])
        return out


def snapshot(d: str) -> dict:
    """Everything comparable about a tree, keyed by relative path."""
    out = {}
    for top, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, d)
            x = {n: os.getxattr(p, n, follow_symlinks=False)
                 for n in os.listxattr(p, follow_symlinks=False)}
            data = os.readlink(p) if stat.S_ISLNK(st.st_mode) else (
                open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, x, data)
    return out


@pytest.mark.parametrize("who", [(1000, 1000, []), (1000, 1000, [1001]), (1002, 1002, []),
                                 (1002, 1001, [1000]), (0, 1001, [])],
                         ids=["u1000", "u1000+g1001", "u1002", "u1002-g1001+g1000",
                              "root-g1001"])
@pytest.mark.parametrize("mode", ["inline", "threads"])
async def test_permissions_match_the_kernel(tmp_path, who, mode):
    uid, gid, groups = who
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    os.mkdir(a)
    os.mkdir(b)
    build(a)
    build(b)
    opts = {"directory": a, "reserve": "0"}
    if mode == "threads":
        opts["io-threads"] = "on"
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": opts})
    try:
        got = await Through(h, uid, gid, groups).all(OPS)
    finally:
        h.fini()
    want = oracle(b, uid, gid, groups, OPS)
    diffs = [(op, g, w) for op, g, w in zip(OPS, got, want) if g != w]
    assert not diffs, "\n".join(f"{op}: posix {g} kernel {w}" for op, g, w in diffs)
    sa, sb = snapshot(a), snapshot(b)
    for rel in sorted(set(sa) | set(sb)):
        ma, mb = sa.get(rel), sb.get(rel)
        if ma and mb and stat.S_ISDIR(ma[0]):
            ma, mb = ma[:3] + ma[4:], mb[:3] + mb[4:]     # directory sizes may differ
        assert ma == mb, rel
    # enough of the operations must actually have been refused to mean something
    if uid:
        assert sum(1 for r in want if r[0] == "err" and r[1] in (errno.EACCES,
                                                                  errno.EPERM)) > 15


async def test_lookup_fast_path_respects_acls_and_modes(tmp_path):
    a = str(tmp_path / "a")
    os.mkdir(a)
    build(a)
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {"directory": a}})
    try:
        t = Through(h, 1000, 1000, [])
        with pytest.raises(PermissionError):
            await t.walk("acl/f")                         # ACL denies although o+x
        await t.walk("pub/file")
        os.chmod(f"{a}/pub", 0o750)                       # changed behind posix's back
        with pytest.raises(PermissionError):
            await t.walk("pub/file")
        os.chmod(f"{a}/pub", 0o755)
        await t.walk("pub/file")
        os.setxattr(f"{a}/pub", "system.posix_acl_access", DENY_1000)
        with pytest.raises(PermissionError):
            await t.walk("pub/file")
        os.removexattr(f"{a}/pub", "system.posix_acl_access")
        await t.walk("pub/file")
        assert await Through(h, 1000, 1000, []).walk("home/own")
    finally:
        h.fini()


async def test_credentials_are_restored_after_every_call(tmp_path):
    a = str(tmp_path / "a")
    os.mkdir(a)
    build(a)
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {"directory": a}})
    try:
        t = Through(h, 1000, 1000, [1001])
        await t.all(OPS[:40])
        status = open("/proc/thread-self/status").read()
        uids = [ln for ln in status.splitlines() if ln.startswith(("Uid:", "Gid:", "Groups:"))]
        assert uids[0].split()[1:] == ["0", "0", "0", "0"]
        assert uids[1].split()[1:] == [str(os.getgid())] * 4
        assert sorted(int(g) for g in uids[2].split()[1:]) == sorted(os.getgroups())
        os.mkdir(f"{a}/priv/still-root")                   # full root powers again
    finally:
        h.fini()


async def test_caller_credentials_off_runs_as_the_daemon(tmp_path):
    a = str(tmp_path / "a")
    os.mkdir(a)
    build(a)
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {
        "directory": a, "caller-credentials": "off"}})
    try:
        t = Through(h, 1000, 1000, [])
        got = await t.all([["stat", "priv/secret"], ["create", "priv/new", 0o640, 0o022],
                           ["mkdir", "sgid/d", 0o755, 0], ["symlink", "x", "priv/sl"]])
        assert got == [["ok", None], ["ok", [1000, 1000, 0o640]],
                       ["ok", [1000, 1001, 0o2755]], ["ok", [1000, 1000]]]
        st = os.stat(f"{a}/priv/new")
        assert (st.st_uid, st.st_gid) == (1000, 1000)
    finally:
        h.fini()


async def test_writeback_cache_times_from_a_writer(tmp_path):
    """ctime_ns comes only from a writeback-cache kernel flushing its c/mtime after a
    write, truncate or touch by any writer: explicit times that utimensat allows the
    owner alone, so posix sets them as the daemon when the caller may write the file."""
    a = str(tmp_path / "a")
    os.mkdir(a)
    with open(f"{a}/f", "wb") as f:
        f.write(b"x")
    os.chmod(f"{a}/f", 0o666)
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": {"directory": a}})
    try:
        other = h.frame(1001, 1001)
        with pytest.raises(PermissionError):
            await h.setattr("/f", frame=other, mtime_ns=5_000_000_000)
        attr = await h.setattr("/f", frame=other, atime_ns=NOW, mtime_ns=5_000_000_000,
                               ctime_ns=6_000_000_000)
        assert attr.mtime_ns == 5_000_000_000 == os.stat(f"{a}/f").st_mtime_ns
        os.chmod(f"{a}/f", 0o644)
        with pytest.raises(PermissionError):
            await h.setattr("/f", frame=other, mtime_ns=7_000_000_000, ctime_ns=1)
        assert os.stat(f"{a}/f").st_mtime_ns == 5_000_000_000
    finally:
        h.fini()
