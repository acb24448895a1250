"""Storage translators (posix, memory) without a mount: execute-only files, a default ACL
replacing the umask, set-id bits and file capabilities cleared after a write, truncate or
fallocate by another user, and the kernel's KILL_SUIDGID flag (issue 13).  The real-mount
comparison with the raw directory is tests/posix/test_posix_privs.py."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess

import pytest

from xlators import Fd, SetAttr
from xlators.core.types import KILL_SUIDGID, O_EXEC_OPEN
from xlators.testing import Harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (switches users)")

CAPS = b"security.capability"
# a valid VFS_CAP_REVISION_2 value: cap_net_raw permitted and effective
CAP_VALUE = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")


@pytest.fixture(params=["storage/posix", "storage/memory"])
def h(request, tmp_path):
    os.chmod(tmp_path, 0o755)
    opts = {"directory": str(tmp_path)} if request.param == "storage/posix" else {}
    h = Harness.stack(leaf=request.param, options={request.param: opts})
    h.brick = tmp_path if request.param == "storage/posix" else None
    try:
        yield h
    finally:
        h.fini()


async def _file(h, path: str, mode: int, gid: int = 0, data: bytes = b"0123456789"):
    await h.write_file(path, data, 0o600)
    await h.setattr(path, uid=0, gid=gid)
    await h.setattr(path, mode=mode)


async def _mode(h, path: str) -> int:
    return stat.S_IMODE((await h.stat(path)).mode)


async def test_exec_open_of_an_execute_only_file(h):
    await _file(h, "/prog", 0o711, data=b"\x7fELF...")
    await _file(h, "/plain", 0o644)
    user = h.frame(1000, 1000)
    fd = await h.open("/prog", os.O_RDONLY | O_EXEC_OPEN, frame=user)
    try:
        assert await h.read(fd, 100, frame=user) == b"\x7fELF..."
    finally:
        await h.close(fd, frame=user)
    with pytest.raises(OSError) as e:                      # reading it is still refused
        await h.open("/prog", os.O_RDONLY, frame=user)
    assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:                      # no execute permission
        await h.open("/plain", os.O_RDONLY | O_EXEC_OPEN, frame=user)
    assert e.value.errno == errno.EACCES


async def _as_writer(h, path: str, op: str, frame) -> None:
    if op == "truncate":
        await h.top.setattr(frame, (await h.lookup(path)).inode, SetAttr(size=1))
        return
    flags = os.O_WRONLY | (os.O_TRUNC if op == "open-trunc" else 0)
    fd = await h.open(path, flags, frame=frame)
    try:
        if op == "write":
            await h.write(fd, b"w", frame=frame)
        elif op == "fallocate":
            await h.top.fallocate(frame, fd, 0, 0, 65536)
    finally:
        await h.close(fd, frame=frame)


@pytest.mark.parametrize("op", ["write", "fallocate", "open-trunc"])
async def test_writer_clears_set_id_bits(h, op):
    """Linux's rule: set-user-ID goes; set-group-ID goes with group execute, or when the
    writer is not in the file's group."""
    cases = {"setuid": (0o4777, 0, 0o777), "sgid-gx": (0o2777, 0, 0o777),
             "sgid-gnx": (0o2767, 0, 0o767), "sgid-gnx-member": (0o2767, 1000, 0o2767),
             "sgid-gx-member": (0o2777, 1000, 0o777)}
    for name, (mode, gid, _) in cases.items():
        await _file(h, f"/{name}", mode, gid)
    user = h.frame(1000, 1000)
    for name in cases:
        await _as_writer(h, f"/{name}", op, user)
    assert {n: await _mode(h, f"/{n}") for n in cases} == {n: c[2] for n, c in cases.items()}


async def test_kill_flag_from_a_caller_without_cap_fsetid(h):
    """uid 0 without CAP_FSETID: the kernel says so with KILL_SUIDGID (on the frame)."""
    await _file(h, "/flagged", 0o6755)
    await _file(h, "/plain", 0o6755)
    root = h.frame(0, 0)
    await _as_writer(h, "/plain", "open-trunc", root)
    assert await _mode(h, "/plain") == 0o6755             # root keeps them
    flagged = h.frame(0, 0)
    flagged.xdata[KILL_SUIDGID] = True
    await _as_writer(h, "/flagged", "open-trunc", flagged)
    assert await _mode(h, "/flagged") == 0o0755


async def test_capabilities_end_with_a_write(h):
    await _file(h, "/f", 0o666)
    await _file(h, "/ro", 0o644)
    for p in ("/f", "/ro"):
        await h.top.setxattr(h.frame(), (await h.lookup(p)).inode, CAPS, CAP_VALUE, 0)
    user = h.frame(1000, 1000)
    # the kernel removes security.capability as the writer before a write or truncate
    await h.top.removexattr(user, (await h.lookup("/f")).inode, CAPS)
    with pytest.raises(OSError) as e:                      # not a writer: refused
        await h.top.removexattr(user, (await h.lookup("/ro")).inode, CAPS)
    assert e.value.errno in (errno.EPERM, errno.EACCES)
    with pytest.raises(OSError) as e:
        await h.top.getxattr(h.frame(), (await h.lookup("/f")).inode, CAPS)
    assert e.value.errno == errno.ENODATA
    # and a write by anyone (root included) ends them, as on a local disk
    await h.top.setxattr(h.frame(), (await h.lookup("/f")).inode, CAPS, CAP_VALUE, 0)
    await _as_writer(h, "/f", "write", h.frame(0, 0))
    with pytest.raises(OSError) as e:
        await h.top.getxattr(h.frame(), (await h.lookup("/f")).inode, CAPS)
    assert e.value.errno == errno.ENODATA


async def _inherit_dir(h) -> None:
    """/inherit with a default ACL (mask rwx) on the brick, or skip where that cannot be."""
    if h.brick is None:
        pytest.skip("storage/memory keeps no POSIX ACLs (posix_acl is not declared)")
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl is not installed (scripts/setup.sh installs it)")
    await h.mkdir("/inherit", 0o755)
    r = subprocess.run(["setfacl", "-d", "-m", "u::rwx,g::rx,o::r,u:1000:rwx,m::rwx",
                        str(h.brick / "inherit")], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"the brick's filesystem has no ACLs: {r.stderr.strip()}")


async def test_default_acl_replaces_the_umask(h):
    await _inherit_dir(h)
    fd = await h.create("/inherit/f", 0o666, umask=0o077)
    await h.close(fd)
    await h.mkdir("/inherit/d", 0o777, umask=0o077)
    fd = await h.create("/f", 0o666, umask=0o077)
    await h.close(fd)
    # the default ACL's mask (rwx) and the requested mode decide; the umask does not
    assert await _mode(h, "/inherit/f") == 0o664
    assert await _mode(h, "/inherit/d") == 0o774
    assert os.getxattr(h.brick / "inherit" / "d", "system.posix_acl_default")
    assert await _mode(h, "/f") == 0o600                  # no default ACL: the umask


async def test_default_acl_decides_without_a_umask_to_apply(h):
    """Without DONT_MASK the kernel applied the umask itself and the storage gets 0: a
    mode the process umask leaves alone needs no look at the parent's ACL (the result is
    the same either way), one it would cut still gets the ACL's answer."""
    await _inherit_dir(h)
    for name, mode, want in (("a", 0o644, 0o644), ("b", 0o666, 0o664), ("c", 0o600, 0o600)):
        fd = await h.create(f"/inherit/{name}", mode, umask=0)
        await h.close(fd)
        assert await _mode(h, f"/inherit/{name}") == want, name
    await h.mkdir("/inherit/d", 0o777, umask=0)
    assert await _mode(h, "/inherit/d") == 0o774
    fd = await h.create("/plain", 0o666, umask=0)       # no default ACL: the mode as asked
    await h.close(fd)
    assert await _mode(h, "/plain") == 0o666
