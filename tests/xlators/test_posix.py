"""storage/posix against the raw directory as the oracle: every namespace fop is done
through the translator on brick A and with os.* on a twin directory B, and the outcomes
(stat fields, errnos, contents) compared.  Escapes, odd names, deep paths, readdir."""
from __future__ import annotations

import ctypes
import errno
import os
import resource
import stat
import subprocess
from types import SimpleNamespace

import pytest

from xlators import FOP_NAMES, NOW, Fd, Loc, SetAttr
from xlators.core.inode import InodeTable
from xlators.storage.posix import Posix
from xlators.testing import Harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def raw_renameat2(src: str, dst: str, flags: int) -> None:
    if _libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def make_brick(tmp_path, mode: str = "inline", **opts: str) -> SimpleNamespace:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(exist_ok=True)
    b.mkdir(exist_ok=True)
    options = {"directory": str(a), "reserve": "0"}
    if mode == "threads":
        options["io-threads"] = "on"
    options.update(opts)
    h = Harness.stack(leaf="storage/posix", options={"storage/posix": options})
    return SimpleNamespace(h=h, xl=h.top, a=str(a), b=str(b))


@pytest.fixture(params=["inline", "threads"])
def br(tmp_path, request):
    brick = make_brick(tmp_path, request.param)
    yield brick
    brick.h.fini()


async def outcome(coro):
    try:
        return ("ok", await coro)
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def raw(fn, *args, **kw):
    try:
        return ("ok", fn(*args, **kw))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def kind(result):
    """("ok", None) or ("err", name): outcomes without values."""
    return ("ok", None) if result[0] == "ok" else result


async def fails(err: int, coro) -> None:
    with pytest.raises(OSError) as info:
        await coro
    assert info.value.errno == err, (errno.errorcode[err],
                                     errno.errorcode.get(info.value.errno))


def same_stat(attr, st, times: bool = True) -> None:
    assert (attr.ino, attr.mode, attr.nlink, attr.uid, attr.gid, attr.size, attr.rdev) == \
        (st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size, st.st_rdev)
    assert attr.blocks == st.st_blocks
    if times:
        assert (attr.mtime_ns, attr.ctime_ns) == (st.st_mtime_ns, st.st_ctime_ns)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- basics ----------------------------------------------------------------------------------
async def test_every_fop_is_implemented():
    assert set(Posix.overridden_fops()) == set(FOP_NAMES)
    assert Posix.children_range == (0, 0)


async def test_root_and_getattr_match_the_directory(br):
    attr = await br.h.stat("/")
    same_stat(attr, os.stat(br.a))
    assert br.h.root.ino == os.stat(br.a).st_ino


async def test_directory_option_is_required_and_checked(tmp_path):
    xl = Posix("p", (), {}, itable=InodeTable())
    with pytest.raises(ValueError, match="directory"):
        xl.init()
    xl = Posix("p", (), {"directory": str(tmp_path / "missing")}, itable=InodeTable())
    with pytest.raises(ValueError, match="missing"):
        xl.init()


async def test_rlimit_nofile_raised_to_hard_limit(br):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard


async def test_lookup_and_getattr_against_oracle(br):
    h = br.h
    for d in (br.a, br.b):
        os.mkdir(f"{d}/dir")
        with open(f"{d}/dir/f", "wb") as f:
            f.write(b"x" * 5000)
        os.symlink("f", f"{d}/dir/ln")
        os.mkfifo(f"{d}/dir/fifo")
    for name in ("dir", "dir/f", "dir/ln", "dir/fifo"):
        same_stat(await h.stat(name), os.lstat(f"{br.a}/{name}"))
    assert kind(await outcome(h.lookup("dir/nope"))) == \
        kind(raw(os.lstat, f"{br.b}/dir/nope")) == ("err", "ENOENT")
    assert (await outcome(h.lookup("dir/f/x")))[1] == raw(os.lstat, f"{br.b}/dir/f/x")[1] \
        == "ENOTDIR"


async def test_inodes_dedupe_by_number_and_forget_closes(br):
    h = br.h
    await h.write_file("/f", b"data")
    e1 = await h.lookup("/f")
    base = open_fds()
    for _ in range(50):
        e = await h.lookup("/f")
        assert e.inode is e1.inode
    assert open_fds() == base                     # the spare O_PATH fds were closed
    await br.xl.link(h.frame(), e1.inode, Loc(h.root, b"g"))
    assert (await h.lookup("/g")).inode is e1.inode
    ctx = e1.inode.ctx[br.xl]
    await br.xl.forget(h.frame(), e1.inode)
    assert br.xl not in e1.inode.ctx
    with pytest.raises(OSError):
        os.fstat(ctx.fd)
    await fails(errno.ESTALE, br.xl.getattr(h.frame(), e1.inode))


async def test_create_excl_unlink_rmdir_errnos_match(br):
    h = br.h
    for d in (br.a, br.b):
        os.mkdir(f"{d}/d")
        os.mkdir(f"{d}/full")
        open(f"{d}/full/x", "w").close()
        open(f"{d}/f", "w").close()
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
    got = await outcome(h.create("/f", flags=flags))
    assert kind(got) == kind(raw(os.open, f"{br.b}/f", flags)) == ("err", "EEXIST")
    got = await outcome(h.unlink("/d"))
    assert got == raw(os.unlink, f"{br.b}/d") == ("err", "EISDIR")
    got = await outcome(h.rmdir("/full"))
    assert got == raw(os.rmdir, f"{br.b}/full") == ("err", "ENOTEMPTY")
    got = await outcome(h.rmdir("/f"))
    assert got == raw(os.rmdir, f"{br.b}/f") == ("err", "ENOTDIR")
    got = await outcome(h.mkdir("/d"))
    assert kind(got) == kind(raw(os.mkdir, f"{br.b}/d")) == ("err", "EEXIST")
    await h.unlink("/full/x")
    await h.rmdir("/full")
    await h.unlink("/f")
    assert sorted(os.listdir(br.a)) == ["d"]
    await fails(errno.ENOENT, h.unlink("/f"))


async def test_create_without_excl_opens_the_existing_file(br):
    h = br.h
    with open(f"{br.a}/f", "wb") as f:
        f.write(b"keep")
    os.chmod(f"{br.a}/f", 0o600)
    fd = await h.create("/f", 0o777, os.O_RDWR | os.O_CREAT)
    assert await h.read(fd, 10) == b"keep"
    await h.close(fd)
    assert stat.S_IMODE(os.stat(f"{br.a}/f").st_mode) == 0o600   # mode left alone
    fd = await h.create("/f", 0o644, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    await h.close(fd)
    assert os.stat(f"{br.a}/f").st_size == 0


async def test_create_mkdir_mknod_modes_and_umask(br):
    h = br.h
    for mode, umask in ((0o666, 0), (0o666, 0o022), (0o640, 0o077), (0o4755, 0o002)):
        name = f"/f{mode:o}_{umask:o}"
        fd = await h.create(name, mode, umask=umask)
        await h.close(fd)
        assert stat.S_IMODE(os.stat(br.a + name).st_mode) == mode & ~umask
        d = f"/d{mode:o}_{umask:o}"
        await h.mkdir(d, mode & 0o777, umask=umask)
        assert stat.S_IMODE(os.stat(br.a + d).st_mode) == mode & 0o777 & ~umask
    e = await br.xl.mknod(h.frame(), Loc(h.root, b"fifo"), stat.S_IFIFO | 0o666, 0, 0o002)
    st = os.lstat(br.a + "/fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o664
    same_stat(e.attr, st)
    e = await br.xl.mknod(h.frame(), Loc(h.root, b"chr"), stat.S_IFCHR | 0o600,
                          os.makedev(1, 3), 0)
    assert os.lstat(br.a + "/chr").st_rdev == os.makedev(1, 3) == e.attr.rdev


async def test_create_on_existing_fifo_does_not_block(br):
    os.mkfifo(br.a + "/p")
    await fails(errno.ENXIO, br.h.create("/p", flags=os.O_RDONLY | os.O_CREAT))
    e = await br.h.lookup("/p")
    await fails(errno.ENXIO, br.xl.open(br.h.frame(), e.inode, os.O_RDONLY, Fd(e.inode)))


async def test_a_new_file_is_not_set_blocking_again(br, monkeypatch):
    # O_CREAT|O_EXCL never opens O_NONBLOCK: only an existing file (maybe a FIFO) opened
    # by a create needs its blocking mode set back (two fcntl calls)
    import xlators.storage.posix_io as posix_io
    calls = []
    real = os.set_blocking
    monkeypatch.setattr(posix_io.os, "set_blocking",
                        lambda fd, flag: (calls.append(flag), real(fd, flag))[1])
    for i in range(3):      # umask 0: the kernel applied it (no mode fix-up either)
        await br.h.create(f"/new{i}", umask=0)
    assert calls == []
    await br.h.create("/new0", flags=os.O_RDWR | os.O_CREAT, umask=0)   # exists: opened
    assert calls == [True]


async def test_rename_plain_noreplace_exchange(br):
    h = br.h
    for d in (br.a, br.b):
        for name, data in (("x", b"X"), ("y", b"Y"), ("z", b"Z")):
            with open(f"{d}/{name}", "wb") as f:
                f.write(data)
        os.mkdir(f"{d}/sub")
        os.mkdir(f"{d}/sub2")
        open(f"{d}/sub2/f", "w").close()
    ex = (await h.lookup("/x")).inode
    await h.rename("/x", "/sub/x2")
    os.rename(f"{br.b}/x", f"{br.b}/sub/x2")
    assert (await h.lookup("/sub/x2")).inode is ex
    got = await outcome(h.rename("/y", "/z", RENAME_NOREPLACE))
    assert got == raw(raw_renameat2, f"{br.b}/y", f"{br.b}/z", RENAME_NOREPLACE) \
        == ("err", "EEXIST")
    await h.rename("/y", "/z", RENAME_EXCHANGE)
    raw_renameat2(f"{br.b}/y", f"{br.b}/z", RENAME_EXCHANGE)
    for d in (br.a, br.b):
        assert open(f"{d}/y", "rb").read() == b"Z" and open(f"{d}/z", "rb").read() == b"Y"
    got = await outcome(h.rename("/nope", "/q", RENAME_EXCHANGE))
    assert got == raw(raw_renameat2, f"{br.b}/nope", f"{br.b}/q", RENAME_EXCHANGE)
    got = await outcome(h.rename("/sub", "/sub2"))
    assert got == raw(os.rename, f"{br.b}/sub", f"{br.b}/sub2") == ("err", "ENOTEMPTY")
    got = await outcome(h.rename("/sub", "/sub/inner"))
    assert got == raw(os.rename, f"{br.b}/sub", f"{br.b}/sub/inner") == ("err", "EINVAL")
    await h.rename("/z", "/y")                       # replace an existing file
    os.rename(f"{br.b}/z", f"{br.b}/y")
    assert sorted(os.listdir(br.a)) == sorted(os.listdir(br.b))


async def test_hard_links_and_nlink(br):
    h, xl = br.h, br.xl
    await h.write_file("/f", b"abc")
    open(f"{br.b}/f", "wb").write(b"abc")
    await h.mkdir("/d")
    os.mkdir(f"{br.b}/d")
    e = await h.lookup("/f")
    for i in range(3):
        le = await xl.link(h.frame(), e.inode, Loc(h.root, b"l%d" % i))
        os.link(f"{br.b}/f", f"{br.b}/l{i}")
        assert le.inode is e.inode and le.attr.nlink == os.stat(f"{br.b}/f").st_nlink == i + 2
    assert (await h.stat("/l2")).nlink == 4
    got = await outcome(xl.link(h.frame(), e.inode, Loc(h.root, b"l0")))
    assert kind(got) == kind(raw(os.link, f"{br.b}/f", f"{br.b}/l0")) == ("err", "EEXIST")
    de = await h.lookup("/d")
    got = await outcome(xl.link(h.frame(), de.inode, Loc(h.root, b"dl")))
    assert got == raw(os.link, f"{br.b}/d", f"{br.b}/dl") == ("err", "EPERM")
    await h.unlink("/f")
    assert (await xl.getattr(h.frame(), e.inode)).nlink == 3
    assert (await h.stat("/d")).nlink == os.stat(f"{br.b}/d").st_nlink == 2
    await h.mkdir("/d/sub")
    assert (await h.stat("/d")).nlink == 3


async def test_max_hardlinks(tmp_path):
    br = make_brick(tmp_path, **{"max-hardlinks": "2"})
    try:
        await br.h.write_file("/f", b"")
        e = await br.h.lookup("/f")
        await br.xl.link(br.h.frame(), e.inode, Loc(br.h.root, b"g"))
        await fails(errno.EMLINK, br.xl.link(br.h.frame(), e.inode, Loc(br.h.root, b"h")))
    finally:
        br.h.fini()


async def test_symlink_and_readlink(br):
    h, xl = br.h, br.xl
    for target in (b"f", b"../../../etc/passwd", b"/abs/path", b"\xff\xfeodd", b"x" * 4000):
        e = await h.symlink(target, "/ln")
        os.symlink(target, f"{br.b}/ln")
        assert await xl.readlink(h.frame(), e.inode) == target == os.readlink(
            os.fsencode(br.b) + b"/ln")
        same_stat(e.attr, os.lstat(f"{br.a}/ln"), times=False)
        await h.unlink("/ln")
        os.unlink(f"{br.b}/ln")
    got = await outcome(h.symlink(b"", "/empty"))
    assert got == raw(os.symlink, b"", f"{br.b}/empty") == ("err", "ENOENT")
    await fails(errno.EINVAL, h.symlink(b"a\0b", "/nul"))
    await h.write_file("/f", b"")
    await fails(errno.EINVAL, xl.readlink(h.frame(), (await h.lookup("/f")).inode))


async def test_setattr_chmod_chown_truncate_utimens(br):
    h, xl = br.h, br.xl
    await h.write_file("/f", b"0123456789")
    with open(f"{br.b}/f", "wb") as f:
        f.write(b"0123456789")
    e = await h.lookup("/f")
    a = await xl.setattr(h.frame(), e.inode, SetAttr(mode=0o4751))
    os.chmod(f"{br.b}/f", 0o4751)
    assert a.mode == os.stat(f"{br.b}/f").st_mode == stat.S_IFREG | 0o4751
    a = await xl.setattr(h.frame(), e.inode, SetAttr(uid=1234, gid=5678))
    os.chown(f"{br.b}/f", 1234, 5678)
    sb = os.stat(f"{br.b}/f")
    assert (a.uid, a.gid, a.mode) == (sb.st_uid, sb.st_gid, sb.st_mode)  # chown kills suid
    a = await xl.setattr(h.frame(), e.inode, SetAttr(size=3))
    os.truncate(f"{br.b}/f", 3)
    assert a.size == 3 and open(f"{br.a}/f", "rb").read() == b"012"
    a = await xl.setattr(h.frame(), e.inode, SetAttr(size=1 << 20))
    os.truncate(f"{br.b}/f", 1 << 20)
    assert (a.size, a.blocks) == (1 << 20, os.stat(f"{br.b}/f").st_blocks)
    a = await xl.setattr(h.frame(), e.inode, SetAttr(atime_ns=1_000_000_123,
                                                     mtime_ns=2_000_000_456))
    assert (a.atime_ns, a.mtime_ns) == (1_000_000_123, 2_000_000_456)
    a2 = await xl.setattr(h.frame(), e.inode, SetAttr(mtime_ns=NOW))
    assert a2.atime_ns == 1_000_000_123 and a2.mtime_ns > 2_000_000_456
    a3 = await xl.setattr(h.frame(), e.inode, SetAttr(atime_ns=NOW, mtime_ns=NOW))
    assert a3.atime_ns >= a2.mtime_ns
    same_stat(a3, os.stat(f"{br.a}/f"))
    await h.mkdir("/d")
    de = await h.lookup("/d")
    got = await outcome(xl.setattr(h.frame(), de.inode, SetAttr(size=0)))
    assert got == raw(os.truncate, f"{br.b}", 0) == ("err", "EISDIR")


async def test_setattr_through_an_open_fd_truncates_it(br):
    h, xl = br.h, br.xl
    fd = await h.create("/f")
    await h.write(fd, b"abcdef")
    a = await xl.setattr(h.frame(), fd.inode, SetAttr(size=2), fd)
    assert a.size == 2 and await h.read(fd, 10) == b"ab"
    await h.close(fd)


async def test_xattrs_user_and_trusted(br):
    h, xl = br.h, br.xl
    await h.write_file("/f", b"")
    open(f"{br.b}/f", "w").close()
    ino = (await h.lookup("/f")).inode
    fr = h.frame()
    for name, value in ((b"user.a", b"1"), (b"trusted.t", b"\x00\xff"),
                        (b"user.big", b"v" * 3000)):
        await xl.setxattr(fr, ino, name, value, 0)
        os.setxattr(f"{br.b}/f", name, value)
        assert await xl.getxattr(fr, ino, name) == os.getxattr(f"{br.a}/f", name) == value
    assert sorted(await xl.listxattr(fr, ino)) == sorted(
        os.fsencode(n) for n in os.listxattr(f"{br.b}/f"))
    got = await outcome(xl.setxattr(fr, ino, b"user.a", b"2", os.XATTR_CREATE))
    assert got == raw(os.setxattr, f"{br.b}/f", b"user.a", b"2", os.XATTR_CREATE)
    assert got == ("err", "EEXIST")
    got = await outcome(xl.setxattr(fr, ino, b"user.none", b"2", os.XATTR_REPLACE))
    assert got == raw(os.setxattr, f"{br.b}/f", b"user.none", b"2", os.XATTR_REPLACE)
    got = await outcome(xl.getxattr(fr, ino, b"user.none"))
    assert got == raw(os.getxattr, f"{br.b}/f", b"user.none") == ("err", "ENODATA")
    got = await outcome(xl.setxattr(fr, ino, b"bogus.ns", b"1", 0))
    assert got == raw(os.setxattr, f"{br.b}/f", b"bogus.ns", b"1")
    acl = bytes.fromhex("02000000" "01000600ffffffff" "02000400e8030000" "04000400ffffffff"
                        "10000400ffffffff" "20000000ffffffff")
    for name, value in ((b"security.sec", b"s"), (b"system.posix_acl_access", acl)):
        await xl.setxattr(fr, ino, name, value, 0)
        os.setxattr(f"{br.b}/f", name, value)
        assert await xl.getxattr(fr, ino, name) == os.getxattr(f"{br.b}/f", name) == value
    sa, sb = os.stat(f"{br.a}/f"), os.stat(f"{br.b}/f")
    assert sa.st_mode == sb.st_mode                      # the ACL set the group mask
    await xl.removexattr(fr, ino, b"user.a")
    got = await outcome(xl.removexattr(fr, ino, b"user.a"))
    assert got == raw(os.removexattr, f"{br.b}/f", b"user.none") == ("err", "ENODATA")
    assert b"user.a" not in await xl.listxattr(fr, ino)


async def test_statfs_matches_statvfs(br):
    s = await br.xl.statfs(br.h.frame(), br.h.root)
    sv = os.statvfs(br.a)
    assert (s.bsize, s.frsize, s.namelen, s.blocks, s.files) == \
        (sv.f_bsize, sv.f_frsize, sv.f_namemax, sv.f_blocks, sv.f_files)
    assert abs(s.bavail - sv.f_bavail) < 4096 and abs(s.ffree - sv.f_ffree) < 4096


async def test_statfs_options(tmp_path):
    br = make_brick(tmp_path, **{"shared-brick-count": "2", "reserve": "10%"})
    try:
        s = await br.xl.statfs(br.h.frame(), br.h.root)
        sv = os.statvfs(br.a)
        assert s.blocks == sv.f_blocks // 2
        reserved = int(sv.f_blocks * 0.10 + 0.5)
        assert abs(s.bfree - max(0, sv.f_bfree - reserved) // 2) < 4096
        br.xl.reconfigure({"directory": br.a, "export-statfs-size": "off"})
        s = await br.xl.statfs(br.h.frame(), br.h.root)
        assert s.blocks == s.bfree == s.bavail == s.files == s.ffree == 0 and s.bsize
    finally:
        br.h.fini()


async def test_reserve_refuses_creation_and_writes(tmp_path):
    br = make_brick(tmp_path)
    try:
        fd = await br.h.create("/f")
        sv = os.statvfs(br.a)
        free = sv.f_bavail * sv.f_frsize
        br.xl.reconfigure({"directory": br.a, "reserve": f"{free // (1 << 20) + 1024}MB"})
        await fails(errno.ENOSPC, br.h.write(fd, b"x"))
        await fails(errno.ENOSPC, br.h.create("/g"))
        await fails(errno.ENOSPC, br.h.mkdir("/d"))
        await br.h.unlink("/f")                       # freeing space still works
        br.xl.reconfigure({"directory": br.a, "reserve": "0"})
        assert await br.h.write(fd, b"x") == 1
        await br.h.close(fd)
    finally:
        br.h.fini()


async def test_create_masks_and_forced_modes(tmp_path):
    br = make_brick(tmp_path, **{"create-mask": "0750", "force-create-mode": "0004",
                                 "create-directory-mask": "0700",
                                 "force-directory-mode": "0055"})
    try:
        await br.h.close(await br.h.create("/f", 0o4777, umask=0))
        assert stat.S_IMODE(os.stat(br.a + "/f").st_mode) == 0o4754
        await br.h.mkdir("/d", 0o777, umask=0)
        assert stat.S_IMODE(os.stat(br.a + "/d").st_mode) == 0o755
    finally:
        br.h.fini()


# -- readdir --------------------------------------------------------------------------------
async def test_readdir_3000_entries_with_offsets(br):
    h, xl = br.h, br.xl
    names = {b"n%04d" % i for i in range(3000)}
    for n in names:
        open(os.path.join(os.fsencode(br.a), n), "w").close()
    listed = await h.listdir("/")
    assert [e.name for e in listed[:2]] == [b".", b".."]
    assert {e.name for e in listed[2:]} == names == set(os.listdir(os.fsencode(br.a)))
    assert [e.off for e in listed] == list(range(1, 3003))
    for e in listed[2:12]:
        assert e.ino == os.lstat(os.path.join(os.fsencode(br.a), e.name)).st_ino
        assert e.type == stat.S_IFREG >> 12
    fd = Fd(h.root, os.O_RDONLY, is_dir=True)
    await xl.opendir(h.frame(), h.root, fd)
    first = await xl.readdir(h.frame(), fd, 0, 4096)
    assert 50 < len(first) < 300                      # about a page worth
    for off in (1500, 7, 2999, 3001):                 # resume anywhere (seekdir)
        batch = await xl.readdir(h.frame(), fd, off, 1 << 20)
        assert [e.name for e in batch] == [e.name for e in listed[off:]]
    assert await xl.readdir(h.frame(), fd, 3002, 4096) == []
    os.unlink(os.path.join(br.a, "n0000"))
    again = await xl.readdir(h.frame(), fd, 0, 1 << 22)   # offset 0: a new snapshot
    assert len(again) == 3001
    await xl.releasedir(h.frame(), fd)


async def test_readdirp_entries_are_lookups(br):
    h = br.h
    await h.mkdir("/d")
    await h.write_file("/d/f", b"123")
    await h.symlink("f", "/d/ln")
    for i in range(300):
        open(f"{br.a}/d/x{i}", "w").close()
    listed = await h.listdir("/d", plus=True)
    by = {e.name: e for e in listed}
    assert by[b"."].entry is None and by[b".."].entry is None
    assert by[b".."].ino == os.stat(br.a).st_ino and by[b"."].ino == os.stat(br.a + "/d").st_ino
    assert len(listed) == 304
    for name in (b"f", b"ln", b"x7"):
        e = by[name]
        same_stat(e.entry.attr, os.lstat(os.fsencode(br.a) + b"/d/" + name))
        assert e.entry.inode is (await h.lookup(b"/d/" + name)).inode
        assert e.type == stat.S_IFMT(e.entry.attr.mode) >> 12


async def test_readdirp_skips_names_removed_since_the_snapshot(br):
    h, xl = br.h, br.xl
    for i in range(5):
        open(f"{br.a}/f{i}", "w").close()
    fd = Fd(h.root, os.O_RDONLY, is_dir=True)
    await xl.opendir(h.frame(), h.root, fd)
    first = await xl.readdirp(h.frame(), fd, 0, 1)      # takes the snapshot
    for i in range(5):
        os.unlink(f"{br.a}/f{i}")
    rest = await xl.readdirp(h.frame(), fd, first[-1].off, 1)
    while rest:
        assert rest[-1].name in (b".", b"..")
        rest = await xl.readdirp(h.frame(), fd, rest[-1].off, 1)
    await xl.releasedir(h.frame(), fd)


async def test_a_listing_batch_holds_what_fits_in_its_budget(br):
    """Exactly the entries whose records fit (at least one): an entry past the budget
    would be dropped by the bridge, and readdir-ahead's stream would lose its place."""
    h, xl = br.h, br.xl
    names = [b"a" * k for k in range(1, 20)]
    for name in names:
        open(os.fsencode(br.a) + b"/" + name, "w").close()
    fd = Fd(h.root, os.O_RDONLY, is_dir=True)
    await xl.opendir(h.frame(), h.root, fd)
    for plus, head in ((False, 24), (True, 152)):
        fop = xl.readdirp if plus else xl.readdir
        one = [await fop(h.frame(), fd, off, 1) for off in range(len(names) + 3)]
        assert [len(b) for b in one] == [1] * (len(names) + 2) + [0]
        assert [b[0].off for b in one[:-1]] == list(range(1, len(names) + 3))
        listed = [b[0] for b in one[:-1]]
        assert [e.name for e in listed[:2]] == [b".", b".."]
        assert sorted(e.name for e in listed[2:]) == names
        record = [(head + len(e.name) + 7) & ~7 for e in listed]
        for start in range(len(listed)):
            for k in range(1, len(listed) - start + 1):
                budget = sum(record[start:start + k])
                for size, want in ((budget, k), (budget + 7, k), (budget - 1, max(k - 1, 1))):
                    got = await fop(h.frame(), fd, start, size)
                    assert [e.off for e in got] == list(range(start + 1, start + want + 1)), \
                        (plus, start, size)
                    assert all((e.entry is not None) == (plus and e.off > 2) for e in got)
    await xl.releasedir(h.frame(), fd)


async def test_readdirp_opens_a_descriptor_only_for_inodes_it_does_not_hold(br, monkeypatch):
    h, xl = br.h, br.xl
    for name in ("f1", "f2", "f3"):
        open(f"{br.a}/{name}", "w").close()
    fd = Fd(h.root, os.O_RDONLY, is_dir=True)
    await xl.opendir(h.frame(), h.root, fd)
    first = {e.name: e.entry for e in await xl.readdirp(h.frame(), fd, 0, 1 << 16)}
    open(f"{br.a}/g", "w").close()
    os.rename(f"{br.a}/g", f"{br.a}/f2")                # f2 is another file now
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    again = {e.name: e.entry for e in await xl.readdirp(h.frame(), fd, 0, 1 << 16)}
    monkeypatch.undo()
    assert opened == [b"f2"]
    assert again[b"f1"].inode is first[b"f1"].inode and again[b"f3"].inode is first[b"f3"].inode
    assert again[b"f2"].inode is not first[b"f2"].inode
    for name in (b"f1", b"f2", b"f3"):
        same_stat(again[name].attr, os.lstat(os.fsencode(br.a) + b"/" + name))
    await xl.releasedir(h.frame(), fd)


@pytest.mark.parametrize("with_link", [False, True])
async def test_readdir_gives_each_kind_its_type_and_inode(br, with_link):
    h, xl = br.h, br.xl
    os.mkdir(f"{br.a}/d")
    open(f"{br.a}/d/f", "w").close()
    os.mkdir(f"{br.a}/d/sub")
    os.mkfifo(f"{br.a}/d/fifo")
    if with_link:
        os.symlink("f", f"{br.a}/d/ln")                # a link to a file: DT_LNK, not REG
    listed = await h.listdir("/d")
    assert [e.name for e in listed[:2]] == [b".", b".."]
    assert [e.off for e in listed] == list(range(1, len(listed) + 1))
    got = {e.name: (e.type, e.ino) for e in listed[2:]}
    want = {}
    for name in os.listdir(f"{br.a}/d"):
        st = os.lstat(f"{br.a}/d/{name}")
        want[os.fsencode(name)] = (stat.S_IFMT(st.st_mode) >> 12, st.st_ino)
    assert got == want and (b"ln" in got) == with_link


async def test_opendir_of_a_file_is_enotdir(br):
    await br.h.write_file("/f", b"")
    e = await br.h.lookup("/f")
    await fails(errno.ENOTDIR, br.xl.opendir(br.h.frame(), e.inode, Fd(e.inode, is_dir=True)))


# -- names and escapes ------------------------------------------------------------------------
WEIRD = [b"\xff\xfe\xfd", b"a\nb", b" ", b"\x01\x02", b"-rf", b"\xc3\xa9t\xc3\xa9", b"*?[",
         b"x" * 255, b"..."]


async def test_weird_names_round_trip(br):
    h, xl = br.h, br.xl
    for name in WEIRD:
        fd = Fd(h.root)
        await xl.create(h.frame(), Loc(h.root, name), os.O_RDWR | os.O_CREAT, 0o100644,
                        0, fd)
        await xl.release(h.frame(), fd)
        os.close(os.open(os.fsencode(br.b) + b"/" + name, os.O_CREAT | os.O_RDWR))
    assert sorted(os.listdir(os.fsencode(br.a))) == sorted(os.listdir(os.fsencode(br.b)))
    listed = {e.name for e in await h.listdir("/")} - {b".", b".."}
    assert listed == set(WEIRD)
    for name in WEIRD:
        e = await xl.lookup(h.frame(), Loc(h.root, name))
        same_stat(e.attr, os.lstat(os.fsencode(br.a) + b"/" + name))
    got = await outcome(xl.create(h.frame(), Loc(h.root, b"y" * 256), os.O_CREAT, 0o100644,
                                  0, Fd(h.root)))
    assert kind(got) == kind(raw(os.open, os.fsencode(br.b) + b"/" + b"y" * 256,
                                 os.O_CREAT)) == ("err", "ENAMETOOLONG")


async def test_illegal_names_are_refused(br):
    h, xl = br.h, br.xl
    fr = h.frame()
    await h.mkdir("/d")
    d = (await h.lookup("/d")).inode
    for name in (b"a/b", b"x\0y", b"../escape", b"/abs"):
        await fails(errno.EINVAL, xl.lookup(fr, Loc(d, name)))
    await fails(errno.ENOENT, xl.lookup(fr, Loc(d, b"")))
    for name in (b".", b"..", b"", b"a/b", b"x\0y", b"../x"):
        loc = Loc(d, name)
        await fails(errno.EINVAL, xl.create(fr, loc, os.O_CREAT, 0o100644, 0, Fd(d)))
        await fails(errno.EINVAL, xl.mkdir(fr, loc, 0o40755, 0))
        await fails(errno.EINVAL, xl.mknod(fr, loc, 0o10644, 0, 0))
        await fails(errno.EINVAL, xl.symlink(fr, b"t", loc))
        await fails(errno.EINVAL, xl.unlink(fr, loc))
        await fails(errno.EINVAL, xl.rmdir(fr, loc))
        await fails(errno.EINVAL, xl.rename(fr, Loc(h.root, b"d"), loc))
        await fails(errno.EINVAL, xl.rename(fr, loc, Loc(h.root, b"z")))
        await fails(errno.EINVAL, xl.link(fr, d, loc))
    for name in ("a/b", "x\0y", ".."):            # str names are checked as their bytes
        await fails(errno.EINVAL, xl.unlink(fr, Loc(d, name)))
        await fails(errno.EINVAL, xl.rename(fr, Loc(d, name), Loc(h.root, b"z")))
    for xname in (b"user.x\0y", b""):
        await fails(errno.EINVAL, xl.getxattr(fr, d, xname))
        await fails(errno.EINVAL, xl.setxattr(fr, d, xname, b"v", 0))
    assert os.listdir(br.a) == ["d"] and os.listdir(br.a + "/d") == []
    assert sorted(os.listdir(os.path.dirname(br.a))) == ["a", "b"]   # nothing outside


async def test_dot_and_dotdot_lookup(br):
    h, xl = br.h, br.xl
    fr = h.frame()
    e = await xl.lookup(fr, Loc(h.root, b".."))
    assert e.inode is h.root and e.attr.ino == os.stat(br.a).st_ino   # the root stays
    e = await xl.lookup(fr, Loc(h.root, b"."))
    assert e.inode is h.root
    await h.mkdir("/d1")
    await h.mkdir("/d1/d2")
    d1, d2 = (await h.lookup("/d1")).inode, (await h.lookup("/d1/d2")).inode
    assert (await xl.lookup(fr, Loc(d2, b".."))).inode is d1
    assert (await xl.lookup(fr, Loc(d1, b".."))).inode is h.root
    assert (await xl.lookup(fr, Loc(d2, b"."))).inode is d2
    up = h.root
    for _ in range(5):                                  # climbing never leaves the brick
        up = (await xl.lookup(fr, Loc(up, b".."))).inode
    assert up is h.root


async def test_symlink_pointing_outside_is_never_followed(br, tmp_path):
    h, xl = br.h, br.xl
    fr = h.frame()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.chmod(outside / "secret", 0o600)
    before = os.stat(outside / "secret")
    os.symlink(str(outside), br.a + "/dirlink")
    os.symlink(str(outside / "secret"), br.a + "/filelink")
    os.symlink(str(outside / "new"), br.a + "/dangling")
    dl = await h.lookup("/dirlink")
    assert stat.S_ISLNK(dl.attr.mode)
    await fails(errno.ENOTDIR, xl.lookup(fr, Loc(dl.inode, b"secret")))
    await fails(errno.ENOTDIR, xl.create(fr, Loc(dl.inode, b"x"), os.O_CREAT, 0o100644, 0,
                                         Fd(dl.inode)))
    await fails(errno.ENOTDIR, xl.mkdir(fr, Loc(dl.inode, b"x"), 0o40755, 0))
    await fails(errno.ENOTDIR, xl.opendir(fr, dl.inode, Fd(dl.inode, is_dir=True)))
    fl = (await h.lookup("/filelink")).inode
    await fails(errno.ELOOP, xl.open(fr, fl, os.O_RDONLY, Fd(fl)))
    await fails(errno.EOPNOTSUPP, xl.setattr(fr, fl, SetAttr(mode=0o777)))
    await outcome(xl.setattr(fr, fl, SetAttr(size=0)))
    a = await xl.setattr(fr, fl, SetAttr(uid=4321, gid=4321, mtime_ns=5_000_000_000))
    assert a.uid == 4321 and os.lstat(br.a + "/filelink").st_uid == 4321
    await xl.setxattr(fr, fl, b"trusted.x", b"1", 0)
    await outcome(xl.setxattr(fr, fl, b"user.x", b"1", 0))
    after = os.stat(outside / "secret")
    assert (after.st_mode, after.st_uid, after.st_size, after.st_mtime_ns) == \
        (before.st_mode, before.st_uid, before.st_size, before.st_mtime_ns)
    assert os.listxattr(outside / "secret") == [] and os.listxattr(outside) == []
    await fails(errno.ELOOP, h.create("/dangling", flags=os.O_RDWR | os.O_CREAT))
    assert sorted(os.listdir(outside)) == ["secret"]
    await h.rename("/filelink", "/renamed")        # the link itself moves, not the target
    assert os.path.islink(br.a + "/renamed") and (outside / "secret").exists()
    await h.unlink("/renamed")
    assert (outside / "secret").read_bytes() == b"secret"
    await xl.link(fr, dl.inode, Loc(h.root, b"hardlink_of_symlink"))
    assert os.path.islink(br.a + "/hardlink_of_symlink")


async def test_directory_chain_deeper_than_path_max(br):
    h, xl = br.h, br.xl
    fr = h.frame()
    comp = b"d" * 50
    parent = h.root
    depth = 120                                          # 120 * 51 bytes > 4096
    for _ in range(depth):
        parent = (await xl.mkdir(fr, Loc(parent, comp), 0o40755, 0)).inode
    fd = Fd(parent)
    e = await xl.create(fr, Loc(parent, b"leaf"), os.O_RDWR | os.O_CREAT, 0o100644, 0, fd)
    assert await xl.writev(fr, fd, b"deep", 0, 0) == 4
    await xl.release(fr, fd)
    assert len(b"/".join([comp] * depth)) > 4096
    # check with the oracle, relatively (the absolute path is too long for the kernel)
    dfd = os.open(br.a, os.O_PATH)
    try:
        for _ in range(depth):
            nfd = os.open(comp, os.O_PATH, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        st = os.stat(b"leaf", dir_fd=dfd)
        assert st.st_ino == e.attr.ino and st.st_size == 4
    finally:
        os.close(dfd)
    with pytest.raises(OSError) as info:
        os.stat(os.fsencode(br.a) + b"/" + b"/".join([comp] * depth) + b"/leaf")
    assert info.value.errno == errno.ENAMETOOLONG
    up = parent
    for _ in range(depth):
        up = (await xl.lookup(fr, Loc(up, b".."))).inode
    assert up is h.root
    names = [x.name for x in await h.listdir(b"/" + b"/".join([comp] * depth))]
    assert names == [b".", b"..", b"leaf"]


async def test_access_like_the_kernel_for_root(br):
    h, xl = br.h, br.xl
    for d in (br.a, br.b):
        open(f"{d}/f", "w").close()
        os.chmod(f"{d}/f", 0o644)
    e = await h.lookup("/f")
    for mask in (os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.X_OK, os.F_OK):
        got = await outcome(xl.access(h.frame(), e.inode, mask))
        assert (got[0] == "ok") == os.access(f"{br.b}/f", mask)


async def test_submount_inode_numbers_are_folded(tmp_path):
    br = make_brick(tmp_path)
    mnt = br.a + "/mnt"
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", mnt],
                      capture_output=True).returncode != 0:
        br.h.fini()
        pytest.skip("cannot mount a tmpfs here")
    try:
        await br.h.write_file("/f", b"")
        await br.h.write_file("/mnt/f", b"")
        inner = os.stat(mnt + "/f")
        e = await br.h.lookup("/mnt/f")
        assert e.attr.ino == (1 << 56) | inner.st_ino
        assert (await br.h.lookup("/f")).attr.ino == os.stat(br.a + "/f").st_ino
        assert (await br.h.lookup("/mnt/..")).inode is br.h.root
        br.xl.reconfigure({"directory": br.a, "submounts": "off", "reserve": "0"})
        br.xl._devs.clear()
        await fails(errno.EXDEV, br.xl.lookup(br.h.frame(), Loc(br.h.root, b"mnt")))
    finally:
        br.h.fini()
        subprocess.run(["umount", "-l", mnt])


async def test_estale_without_context_and_ipc(br):
    from xlators.core.inode import Inode
    stray = Inode(99, 12345)
    await fails(errno.ESTALE, br.xl.getattr(br.h.frame(), stray))
    await fails(errno.ESTALE, br.xl.lookup(br.h.frame(), Loc(stray, b"x")))
    fr, root = br.h.frame(), br.h.root
    await fails(errno.ESTALE, br.xl.unlink(fr, Loc(stray, b"x")))
    await fails(errno.ESTALE, br.xl.rmdir(fr, Loc(stray, b"x")))
    await fails(errno.ESTALE, br.xl.mkdir(fr, Loc(stray, b"x"), 0o40755, 0))
    await fails(errno.ESTALE, br.xl.rename(fr, Loc(stray, b"x"), Loc(root, b"y")))
    await fails(errno.ESTALE, br.xl.rename(fr, Loc(root, b"x"), Loc(stray, b"y")))
    await fails(errno.ESTALE, br.xl.unlink(fr, Loc(None, b"x")))
    await fails(errno.EOPNOTSUPP, br.xl.ipc(br.h.frame(), "anything"))
    assert isinstance(br.xl.dump()["live-inodes"], int)


async def test_fini_closes_every_descriptor(tmp_path):
    base = open_fds()
    br = make_brick(tmp_path)
    await br.h.create("/f")
    await br.h.mkdir("/d")
    await br.h.listdir("/", plus=True)
    assert open_fds() > base
    br.h.fini()
    assert open_fds() == base


async def test_volfile_example_from_the_docstring(tmp_path):
    import xlators.storage.posix as module
    doc = module.__doc__
    text = doc[doc.index("volume posix"):doc.index("end-volume") + len("end-volume")]
    h = Harness.from_volfile(text.replace("/srv/brick", str(tmp_path)))
    try:
        await h.write_file("/f", b"via a volfile")
        assert (tmp_path / "f").read_bytes() == b"via a volfile"
        assert [e.name for e in await h.listdir("/")] == [b".", b"..", b"f"]
    finally:
        h.fini()


async def test_options_parse_like_glusterfs(tmp_path):
    from xlators.core.options import OptionError
    for bad in ({"create-mask": "0999"}, {"reserve": "lots"}, {"max-hardlinks": "-1"},
                {"create-mask": "01777"}):
        with pytest.raises(OptionError):
            Posix("p", (), {"directory": str(tmp_path), **bad}, itable=InodeTable())
    xl = Posix("p", (), {"directory": str(tmp_path), "reserve": "10GB",
                         "create-mask": "0o750", "io-thread-threshold": "1MB"},
               itable=InodeTable())
    assert xl.opts.reserve == ("size", float(10 << 30)) and xl.opts.create_mask == 0o750
    assert xl.opts.io_thread_threshold == 1 << 20
    assert Posix("p", (), {"directory": "/x", "reserve": "2%"},
                 itable=InodeTable()).opts.reserve == ("percent", 2.0)


async def test_nameless_lookup_revalidates(br):
    await br.h.write_file("/f", b"abc")
    e = await br.h.lookup("/f")
    again = await br.xl.lookup(br.h.frame(), Loc(None, None, e.inode))
    assert again.inode is e.inode and again.attr.size == 3


async def test_lookup_when_the_name_changes_between_stat_and_open(br):
    xl = br.xl
    open(f"{br.a}/f", "w").close()
    old = os.stat(f"{br.a}/f")
    os.rename(f"{br.a}/f", f"{br.a}/kept")              # keep the number in use
    open(f"{br.a}/f", "w").close()
    e = xl._entry(old, pfd=xl._root.fd, name=b"f")      # stat said old, open finds new
    assert e.attr.ino == os.stat(f"{br.a}/f").st_ino != old.st_ino
    assert br.h.itable.find(old.st_ino) is None          # no half-made inode left behind
    os.unlink(f"{br.a}/f")
    with pytest.raises(FileNotFoundError):              # gone: no inode either
        xl._entry(os.stat(f"{br.a}/kept"), pfd=xl._root.fd, name=b"f")
    assert br.h.itable.find(old.st_ino) is None
