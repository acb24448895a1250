"""``mount -o remount,...`` on a live xlfs mount, and the atime mount options.

A remount changes the VFS flags of the mount in place (same FUSE connection, same
daemon): through mount.fuse3 (``mount -o remount,ro MNT`` on a fuse.xlfs mount runs
``xlfs SOURCE MNT -o ...`` with a fixed PATH), through mount.xlfs (``mount -t xlfs``),
and with the ``xlfs`` helper form directly.  Under ``noatime`` reads through the mount
leave the brick's atimes alone; under ``strictatime`` they update them.
"""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from fuse_bridge import mount as mnt
from fuse_bridge.cli_args import UsageError, parse_args
from fuse_bridge.mount import (MS_NOATIME, MS_NODIRATIME, MS_RDONLY, MS_RELATIME,
                               MS_STRICTATIME, VfsFlags, split_options)
from tests.mount.test_cli import mount_helper_installed, run_xlfs  # noqa: F401
from tests.mountlib import (VOLFILES, Mounted, MountedByHelper, can_mount, installed_script,
                            run_in_child)

LOCAL = VOLFILES / "local.vol"
ATIME_WORDS = ("atime", "noatime", "relatime", "norelatime", "strictatime",
               "nostrictatime", "lazytime", "nolazytime", "diratime", "nodiratime")


# -- option words (no mount) ------------------------------------------------------------
@pytest.mark.parametrize("word", ATIME_WORDS)
def test_every_atime_option_is_accepted(word: str):
    a = parse_args(["vol.vol", "/mnt", "-o", f"{word},attribute-timeout=0"])
    assert a.kernel_opts == [word]
    flags, data, unknown = split_options([word])
    assert unknown == [] and data == []


def test_atime_words_resolve_to_one_mode():
    def resolve(*words: str) -> int:
        return split_options(words)[0] & (MS_NOATIME | MS_RELATIME | MS_STRICTATIME)
    assert resolve() == MS_RELATIME                      # the kernel's default
    assert resolve("noatime") == MS_NOATIME
    assert resolve("strictatime") == MS_STRICTATIME
    assert resolve("noatime", "strictatime") == MS_STRICTATIME   # the last one wins
    assert resolve("strictatime", "noatime") == MS_NOATIME
    assert resolve("noatime", "atime") == MS_RELATIME
    assert resolve("strictatime", "nostrictatime") == MS_RELATIME
    assert resolve("strictatime", "norelatime") == MS_STRICTATIME
    assert split_options(["nodiratime"])[0] & MS_NODIRATIME
    assert not split_options(["nodiratime", "diratime"])[0] & MS_NODIRATIME


def test_flags_of_a_mountinfo_entry():
    entry = {"options": "ro,nosuid,nodev,noatime", "super_options": "ro,user_id=0,group_id=0"}
    f = VfsFlags.from_mountinfo(entry)
    assert f.read_only and f.nosuid and f.nodev and not f.noexec and f.atime == "noatime"
    entry = {"options": "rw,nodev", "super_options": "rw,sync,user_id=0"}
    f = VfsFlags.from_mountinfo(entry)
    assert f.atime == "strictatime" and f.sync and not f.nosuid and not f.read_only
    assert f.words() == "rw,nodev,sync,strictatime"


def test_remount_options_keep_only_vfs_flags():
    a = parse_args(["xlfs:/etc/a.vol", "/mnt", "-o", "ro,nosuid,nodev,noatime,remount,"
                    "user_id=0,group_id=0,default_permissions,allow_other,rootmode=40000,"
                    "attribute-timeout=0,_netdev,x-systemd.foo"])
    assert a.get("remount") is True
    assert a.kernel_opts == ["ro", "nosuid", "nodev", "noatime"]
    assert parse_args(["/mnt", "-o", "remount,rw"]).kernel_opts == ["rw"]
    with pytest.raises(UsageError, match="Invalid option 'bogus'"):
        parse_args(["/mnt", "-o", "remount,bogus"])


# -- helpers ----------------------------------------------------------------------------
XLFS_ON_PATH = Path("/usr/local/bin/xlfs")
MARK = "# installed by xlfs tests/mount/test_remount.py"


@pytest.fixture
def xlfs_on_fixed_path():
    """/usr/local/bin/xlfs for this test: mount(8) drops PATH and mount.fuse3 runs ``xlfs``
    through /bin/sh, whose default PATH has /usr/local/bin (a temporary PATH is ignored)."""
    why = can_mount()
    if why:
        pytest.skip(why)
    if not os.path.exists("/sbin/mount.fuse3") and not os.path.exists("/usr/sbin/mount.fuse3"):
        pytest.skip("no mount.fuse3 (fuse3 package)")
    with installed_script(XLFS_ON_PATH, MARK, "fuse_bridge.cli",
                          "xlfs-on-path-test.lock") as path:
        yield path


def mount_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)


def remount_direct(m: Mounted, opts: str) -> subprocess.CompletedProcess:
    """The helper form, as mount.fuse3 runs it (the volfile argument is the source)."""
    return run_xlfs(f"xlfs:{m.volfile}", str(m.mountpoint), "-o", f"remount,{opts}")


def entries(m: Mounted) -> list[dict]:
    target = str(m.mountpoint.resolve())
    with open("/proc/self/mountinfo") as f:
        found = [mnt._mountinfo_entry(line) for line in f]
    return [e for e in found if e["mountpoint"] == target]


def vfs(m: Mounted) -> VfsFlags:
    (entry,) = entries(m)           # one mount: a remount never stacks a second one
    return VfsFlags.from_mountinfo(entry)


def assert_read_only(m: Mounted) -> None:
    assert vfs(m).read_only
    with pytest.raises(OSError) as exc:
        open(m.path("new"), "w")
    assert exc.value.errno == errno.EROFS
    with pytest.raises(OSError) as exc:
        open(m.path("f"), "a")
    assert exc.value.errno == errno.EROFS
    with pytest.raises(OSError) as exc:
        os.mkdir(m.path("d"))
    assert exc.value.errno == errno.EROFS
    assert open(m.path("f")).read() == "one"


def assert_writable(m: Mounted, name: str) -> None:
    assert not vfs(m).read_only
    with open(m.path(name), "w") as f:
        f.write(name)
    assert (m.brick / name).read_text() == name
    os.mkdir(m.path(name + ".d"))
    os.rmdir(m.path(name + ".d"))


def assert_same_daemon(m: Mounted) -> None:
    assert m.proc.poll() is None, "the daemon exited"
    assert mnt.connection_id(str(m.mountpoint)) == m.conn, "a new FUSE connection"


# -- remount ----------------------------------------------------------------------------
@pytest.mark.mount
def test_remount_ro_and_rw_through_mount_fuse3(tmp_path: Path, xlfs_on_fixed_path):
    with Mounted(LOCAL, tmp_path) as m:
        Path(m.path("f")).write_text("one")
        proc = mount_cmd("-o", "remount,ro", str(m.mountpoint))
        assert proc.returncode == 0, proc.stderr
        assert_read_only(m)
        assert_same_daemon(m)
        proc = mount_cmd("-o", "remount,rw", str(m.mountpoint))
        assert proc.returncode == 0, proc.stderr
        assert_writable(m, "after-rw")
        proc = mount_cmd("-o", "remount,noatime", str(m.mountpoint))
        assert proc.returncode == 0, proc.stderr
        f = vfs(m)
        assert f.atime == "noatime" and not f.read_only and f.nosuid and f.nodev
        assert_same_daemon(m)
        assert "remounted: rw,nosuid,nodev -> ro,nosuid,nodev" in m.read_log()


@pytest.mark.mount
def test_remount_ro_and_rw_through_mount_t_xlfs(tmp_path: Path, mount_helper_installed):
    with Mounted(LOCAL, tmp_path) as m:
        Path(m.path("f")).write_text("one")
        proc = mount_cmd("-t", "xlfs", "-o", "remount,ro", str(m.mountpoint))
        assert proc.returncode == 0, proc.stderr
        assert_read_only(m)
        proc = mount_cmd("-t", "xlfs", "-o", "remount,rw", str(m.mountpoint))
        assert proc.returncode == 0, proc.stderr
        assert_writable(m, "after-rw")
        assert_same_daemon(m)


@pytest.mark.mount
def test_mount_t_xlfs_then_remount(tmp_path: Path, mount_helper_installed):
    """The daemon mount.xlfs started (in the background) follows mount -t xlfs -o remount."""
    brick = tmp_path / "brick"
    brick.mkdir()
    f = aged(brick, "f")
    with MountedByHelper(LOCAL, tmp_path, "strictatime") as m:
        mp = m.mountpoint
        proc = mount_cmd("-t", "xlfs", "-o", "remount,ro,noatime", str(mp))
        assert proc.returncode == 0, proc.stderr
        found = mnt.find_mount(str(mp))
        assert found["options"].split(",")[0] == "ro" and "noatime" in found["options"]
        with pytest.raises(OSError) as exc:
            open(mp / "new", "w")
        assert exc.value.errno == errno.EROFS
        assert (mp / "f").read_text() == "data"
        assert f.stat().st_atime_ns == OLD
        assert m.daemon_alive() and mnt.connection_id(str(mp)) == m.conn
        proc = mount_cmd("-t", "xlfs", "-o", "remount,rw", str(mp))
        assert proc.returncode == 0, proc.stderr
        (mp / "new").write_text("x")
        assert (brick / "new").read_text() == "x"
        assert m.daemon_alive() and mnt.connection_id(str(mp)) == m.conn


@pytest.mark.mount
def test_remount_rw_of_a_read_only_mount(tmp_path: Path):
    """-o ro puts features/read-only on the graph; it follows remount,rw and remount,ro."""
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "f").write_text("one")
    with Mounted(LOCAL, tmp_path, "-o", "ro") as m:
        assert_read_only(m)
        proc = remount_direct(m, "rw")
        assert proc.returncode == 0, proc.stderr
        assert_writable(m, "after-rw")
        proc = remount_direct(m, "ro")
        assert proc.returncode == 0, proc.stderr
        assert_read_only(m)
        assert_same_daemon(m)


@pytest.mark.mount
def test_remount_ro_refused_while_a_file_is_open_for_writing(tmp_path: Path):
    with Mounted(LOCAL, tmp_path) as m:
        with open(m.path("f"), "w") as f:
            f.write("one")
            proc = remount_direct(m, "ro")
            assert proc.returncode == 1
            assert proc.stderr.strip() == (f"xlfs: {m.mountpoint}: remount failed: Device or "
                                           f"resource busy (a file is open for writing)")
        assert not vfs(m).read_only
        assert_writable(m, "still")


@pytest.mark.mount
def test_remount_errors_are_one_line(tmp_path: Path):
    if can_mount():
        pytest.skip(can_mount())
    proc = run_xlfs(str(tmp_path), "-o", "remount,ro")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"xlfs: {tmp_path}: cannot remount: nothing is mounted "
                                   f"there, not an xlfs mount")
    with Mounted(LOCAL, tmp_path) as m:
        proc = remount_direct(m, "ro,bogus")
        assert proc.returncode == 2 and "Invalid option 'bogus'" in proc.stderr
        assert not vfs(m).read_only


# -- atime ------------------------------------------------------------------------------
OLD = 1_000_000_000 * 10**9      # 2001: older than the mtime, so even relatime updates


def aged(brick: Path, name: str, data: str = "data") -> Path:
    p = brick / name
    p.write_text(data)
    os.utime(p, ns=(OLD, p.stat().st_mtime_ns))
    return p


def aged_dir(brick: Path, name: str) -> Path:
    p = brick / name
    p.mkdir()
    (p / "entry").write_text("")
    os.utime(p, ns=(OLD, p.stat().st_mtime_ns))
    return p


def read_through(m: Mounted, name: str) -> None:
    assert open(m.path(name)).read() == "data"


def list_through(m: Mounted, name: str) -> None:
    assert os.listdir(m.path(name)) == ["entry"]


@pytest.mark.mount
@pytest.mark.parametrize("options, mode, file_read, dir_read", [
    ("noatime", "noatime", False, False),
    ("strictatime", "strictatime", True, True),
    ("strictatime,nodiratime", "strictatime", True, False),
])
def test_atime_mount_options_on_brick_atimes(tmp_path: Path, options: str, mode: str,
                                             file_read: bool, dir_read: bool):
    """Reading a file and listing a directory through the mount: whether the brick's
    atimes move (they start older than the mtimes, so even relatime would move them)."""
    brick = tmp_path / "brick"
    brick.mkdir()
    f, d = aged(brick, "f"), aged_dir(brick, "d")
    with Mounted(LOCAL, tmp_path, "-o", options) as m:
        assert vfs(m).atime == mode
        read_through(m, "f")
        list_through(m, "d")
        assert (f.stat().st_atime_ns > OLD) is file_read
        assert (d.stat().st_atime_ns > OLD) is dir_read


@pytest.mark.mount
def test_remount_noatime_then_strictatime(tmp_path: Path):
    brick = tmp_path / "brick"
    brick.mkdir()
    before, during, after = aged(brick, "a"), aged(brick, "b"), aged(brick, "c")
    with Mounted(LOCAL, tmp_path) as m:
        read_through(m, "a")
        assert before.stat().st_atime_ns > OLD          # relatime: atime was older than mtime
        proc = remount_direct(m, "noatime")
        assert proc.returncode == 0, proc.stderr
        read_through(m, "b")
        assert during.stat().st_atime_ns == OLD
        proc = remount_direct(m, "strictatime")
        assert proc.returncode == 0, proc.stderr
        assert vfs(m).atime == "strictatime"
        read_through(m, "c")
        assert after.stat().st_atime_ns > OLD
        assert_same_daemon(m)


@pytest.mark.mount
def test_noatime_mount_serves_files_the_reader_does_not_own(tmp_path: Path):
    """Another user's read on a noatime mount works and leaves the brick's atime alone
    (the open as that user cannot have O_NOATIME; the daemon sets it afterwards)."""
    brick = tmp_path / "brick"
    brick.mkdir()
    f = aged(brick, "f")
    f.chmod(0o644)
    brick.chmod(0o755)
    with Mounted(LOCAL, tmp_path, "-o", "noatime") as m:
        root = os.open(m.mountpoint, os.O_PATH | os.O_DIRECTORY)   # tmp_path is root's

        def read_as_user() -> int:
            os.setgid(1000)
            os.setuid(1000)
            fd = os.open("f", os.O_RDONLY, dir_fd=root)
            return 0 if os.read(fd, 10) == b"data" else 1
        try:
            assert run_in_child(read_as_user) == 0
        finally:
            os.close(root)
        assert f.stat().st_atime_ns == OLD


@pytest.mark.mount
def test_remount_of_a_mountpoint_with_space_and_non_ascii_name(tmp_path: Path):
    work = tmp_path / "a dir é"
    brick = work / "brick"
    brick.mkdir(parents=True)
    f = aged(brick, "f")
    with Mounted(LOCAL, work) as m:
        proc = remount_direct(m, "noatime")
        assert proc.returncode == 0, proc.stderr
        assert vfs(m).atime == "noatime"
        read_through(m, "f")            # the daemon found its own mount in mountinfo
        assert f.stat().st_atime_ns == OLD
