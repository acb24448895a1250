"""The command line: argument parsing (fuse_bridge/cli_args.py), error reporting of the
``xlfs`` program, ``--volfile-check``, and ``mount -t xlfs`` through the mount.xlfs helper.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuse_bridge import mount as mnt
from fuse_bridge.cli_args import FLAGS, UsageError, help_text, parse_args
from tests.mountlib import (ROOT, VOLFILES, MountedByHelper, can_mount, installed_script,
                            wait_until, xlfs_command)

SHIPPED = sorted(VOLFILES.glob("*.vol"))


def run_xlfs(*args: str, module: str = "fuse_bridge.cli",
             timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=str(ROOT), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


# -- parsing ----------------------------------------------------------------------------
def test_bare_boolean_flag_does_not_swallow_the_mountpoint():
    a = parse_args(["-f", "x.vol", "--fuse-flush-handle-interrupt", "/mnt"])
    assert a.get("flush_handle_interrupt") is True
    assert a.positionals == ["/mnt"]
    a = parse_args(["--read-only", "-f", "x.vol", "/mnt"])
    assert a.get("read_only") is True and a.get("volfile") == "x.vol"
    assert a.positionals == ["/mnt"]


def test_boolean_values():
    assert parse_args(["--use-readdirp=no"]).get("use_readdirp") is False
    assert parse_args(["--use-readdirp=yes"]).get("use_readdirp") is True
    assert parse_args(["--use-readdirp"]).get("use_readdirp") is True
    for text, value in (("on", True), ("off", False), ("true", True), ("false", False),
                        ("enable", True), ("disable", False), ("1", True), ("0", False)):
        assert parse_args([f"--kernel-writeback-cache={text}"]).get(
            "kernel_writeback_cache") is value, text
    with pytest.raises(UsageError, match="use-readdirp"):
        parse_args(["--use-readdirp=maybe"])


def test_value_flags_both_spellings():
    for argv in (["--attribute-timeout", "0"], ["--attribute-timeout=0"]):
        a = parse_args(argv + ["/mnt"])
        assert a.get("attribute_timeout") == 0
        assert a.positionals == ["/mnt"]
    assert parse_args(["--entry-timeout=1.5"]).get("entry_timeout") == 1.5
    with pytest.raises(UsageError, match="requires an argument"):
        parse_args(["--attribute-timeout"])
    with pytest.raises(UsageError, match="attribute-timeout"):
        parse_args(["--attribute-timeout=soon"])
    with pytest.raises(UsageError):
        parse_args(["--lru-limit=-1"])


def test_short_flags():
    a = parse_args(["-Nf", "x.vol", "-L", "DEBUG", "-lLOG", "/mnt"])
    assert a.get("no_daemon") is True and a.get("volfile") == "x.vol"
    assert a.get("log_level") == "DEBUG" and a.get("log_file") == "LOG"
    assert a.positionals == ["/mnt"]
    with pytest.raises(UsageError, match="log level"):
        parse_args(["-L", "LOUD"])
    with pytest.raises(UsageError, match="invalid option"):
        parse_args(["-Z"])


def test_repeatable_xlator_option():
    a = parse_args(["--xlator-option=posix.directory=/b", "--xlator-option",
                    "stats.latency-measurement=off", "/mnt"])
    assert a.get("xlator_options") == ["posix.directory=/b", "stats.latency-measurement=off"]
    assert a.positionals == ["/mnt"]


def test_unknown_flag():
    with pytest.raises(UsageError, match="unrecognized option '--no-such-flag'"):
        parse_args(["--no-such-flag", "/mnt"])
    with pytest.raises(UsageError, match="doesn't allow an argument"):
        parse_args(["--no-daemon=yes"])


def test_double_dash_ends_options():
    a = parse_args(["-f", "x.vol", "--", "--weird-mountpoint"])
    assert a.positionals == ["--weird-mountpoint"]


def test_helper_form_with_mount_options():
    a = parse_args(["vol.vol", "/mnt", "-o",
                    "ro,attribute-timeout=0,fuse-flush-handle-interrupt=yes,_netdev,"
                    "x-systemd.foo,noatime,defaults"])
    assert a.positionals == ["vol.vol", "/mnt"]
    assert a.get("read_only") is True
    assert a.get("attribute_timeout") == 0
    assert a.get("flush_handle_interrupt") is True
    assert a.kernel_opts == ["ro", "noatime"]
    # underscores work as dashes; a bare boolean key means yes; -oOPTS sticks
    a = parse_args(["vol.vol", "/mnt", "-ouse_readdirp=no,fuse-flush-handle-interrupt"])
    assert a.get("use_readdirp") is False and a.get("flush_handle_interrupt") is True


def test_helper_form_bad_options():
    with pytest.raises(UsageError, match="Invalid option 'bogus'"):
        parse_args(["vol.vol", "/mnt", "-o", "bogus=1"])
    with pytest.raises(UsageError, match="Invalid option"):
        parse_args(["vol.vol", "/mnt", "-o", "help"])
    with pytest.raises(UsageError, match="needs a value"):
        parse_args(["vol.vol", "/mnt", "-o", "attribute-timeout"])
    with pytest.raises(UsageError, match="requires an argument"):
        parse_args(["vol.vol", "/mnt", "-o"])


def test_resolve_forms():
    from fuse_bridge.cli import resolve
    assert resolve(parse_args(["-f", "a.vol", "/mnt"])) == ("a.vol", "/mnt")
    assert resolve(parse_args(["a.vol", "/mnt"])) == ("a.vol", "/mnt")
    assert resolve(parse_args(["-f", "a.vol"])) == ("a.vol", None)
    with pytest.raises(UsageError, match="no volfile"):
        resolve(parse_args(["/mnt"]))
    with pytest.raises(UsageError, match="too many"):
        resolve(parse_args(["-f", "a.vol", "/x", "/y"]))


def test_hidden_flags_absent_from_help():
    text = help_text()
    hidden = [f for f in FLAGS if f.hidden]
    assert hidden, "some flags are meant to be hidden"
    for f in hidden:
        assert f"--{f.long}" not in text, f.long
    for f in FLAGS:
        if not f.hidden:
            assert f"--{f.long}" in text, f.long
    # ... but they still parse
    for f in hidden:
        if f.kind == "bool?":
            parse_args([f"--{f.long}", "/mnt"])
        elif f.kind == "value":
            parse_args([f"--{f.long}=x", "/mnt"])


def test_help_and_version_programs():
    proc = run_xlfs("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: xlfs")
    for f in FLAGS:
        assert (f"--{f.long}" in proc.stdout) != f.hidden, f.long
    proc = run_xlfs("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("xlfs ")


def test_usage_errors_are_one_line():
    for args in (["--no-such-flag"], ["/mnt"], ["-f", str(VOLFILES / "memory.vol")],
                 ["--attribute-timeout"]):
        proc = run_xlfs(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("xlfs: "), err
        assert "Traceback" not in err


# -- volfile errors and --volfile-check -------------------------------------------------
BAD_VOLFILES = {
    "undefined-subvolume": ("volume posix\n    type storage/posix\n    option directory /tmp\n"
                            "end-volume\n\nvolume x\n    type features/locks\n"
                            "    subvolumes missing\nend-volume\n", 8),
    "unterminated": ("volume posix\n    type storage/posix\n    option directory /tmp\n", 3),
    "unknown-type": ("volume posix\n    type storage/no-such-type\n    option a b\n"
                     "end-volume\n", (1, 2)),          # the volume's line or the type's
    "bad-value": ("# comment\nvolume posix\n    type storage/posix\n    option directory /tmp\n"
                  "    option reserve lots\nend-volume\n", 5),
}


@pytest.mark.parametrize("kind", sorted(BAD_VOLFILES))
@pytest.mark.parametrize("check", [True, False], ids=["volfile-check", "mount"])
def test_bad_volfile_gives_file_and_line(tmp_path: Path, kind: str, check: bool):
    text, line = BAD_VOLFILES[kind]
    vol = tmp_path / f"{kind}.vol"
    vol.write_text(text)
    mp = tmp_path / "mnt"
    mp.mkdir()
    args = ["--volfile-check", "-f", str(vol)] if check else ["-N", "-f", str(vol), str(mp)]
    proc = run_xlfs(*args)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"xlfs: {vol}:"), err
    got = int(err[len(f"xlfs: {vol}:"):].split(":", 1)[0])
    assert got in (line if isinstance(line, tuple) else (line,)), \
        f"{kind}: reported line {got}, expected {line}: {err}"
    assert mnt.find_mount(str(mp)) is None


def test_missing_volfile(tmp_path: Path):
    proc = run_xlfs("--volfile-check", "-f", str(tmp_path / "nope.vol"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"xlfs: {tmp_path / 'nope.vol'}: volfile not found"


@pytest.mark.parametrize("volfile", SHIPPED, ids=[v.stem for v in SHIPPED])
def test_volfile_check_of_shipped_volfiles(volfile: Path):
    proc = run_xlfs("--volfile-check", "-f", str(volfile))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{volfile}: ok"


def test_volfile_check_through_helper():
    vol = str(VOLFILES / "local.vol")
    proc = run_xlfs(vol, "/nonexistent-mountpoint", "-f", "-o", "ro,_netdev,x-systemd.foo",
                    module="fuse_bridge.mount_helper")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{vol}: ok"
    proc = run_xlfs(vol, "/mnt", "-o", "bogus=1", module="fuse_bridge.mount_helper")
    assert proc.returncode == 2
    assert "Invalid option 'bogus'" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_volfile_check_with_bad_override():
    proc = run_xlfs("--volfile-check", "-f", str(VOLFILES / "local.vol"),
                    "--xlator-option=nosuchvolume.x=1")
    assert proc.returncode == 2          # a command-line error
    assert "nosuchvolume" in proc.stderr and "Traceback" not in proc.stderr


# -- mount -t xlfs ----------------------------------------------------------------------
HELPER = Path("/sbin/mount.xlfs")
MARK = "# installed by xlfs tests/mount/test_cli.py"


@pytest.fixture
def mount_helper_installed():
    """/sbin/mount.xlfs (mount(8) looks only in /sbin and /usr/sbin) for this test."""
    why = can_mount()
    if why:
        pytest.skip(why)
    with installed_script(HELPER, MARK, "fuse_bridge.mount_helper",
                          "xlfs-mount-helper-test.lock") as path:
        yield path


@pytest.mark.mount
def test_mount_t_xlfs(tmp_path: Path, mount_helper_installed):
    brick = tmp_path / "brick"
    brick.mkdir()
    (brick / "there").write_bytes(b"before")
    with MountedByHelper(VOLFILES / "local.vol", tmp_path, "attribute-timeout=0", "noatime",
                         "_netdev", "x-systemd.foo") as m:
        mp = m.mountpoint
        found = mnt.find_mount(str(mp))
        assert found is not None and found["fstype"] == "fuse.xlfs", found
        assert "noatime" in found["options"]
        assert os.listdir(mp) == ["there"]
        (mp / "new").write_bytes(b"through mount -t")
        assert (brick / "new").read_bytes() == b"through mount -t"
        assert m.daemon_alive()
        proc = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: not m.daemon_alive(), 15, "the daemon to exit after umount")
        assert mnt.find_mount(str(mp)) is None


@pytest.mark.mount
def test_mount_t_xlfs_bad_option(tmp_path: Path, mount_helper_installed):
    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = subprocess.run(["mount", "-t", "xlfs", str(VOLFILES / "memory.vol"), str(mp),
                           "-o", "bogus=1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Invalid option 'bogus'" in proc.stderr, proc.stderr
    assert mnt.find_mount(str(mp)) is None


def test_xlfs_command_is_the_cli():
    assert xlfs_command()[-1] == "fuse_bridge.cli"
