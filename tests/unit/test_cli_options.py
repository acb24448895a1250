"""The command line's -o lists, help per program and exit statuses (no mount needed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuse_bridge.cli_args import UsageError, help_text, parse_args

ROOT = Path(__file__).resolve().parents[2]
VOLFILES = ROOT / "volfiles"


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=str(ROOT), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_commas_inside_an_xlator_option_value_stay_in_it():
    a = parse_args(["v.vol", "/mnt", "-o",
                    "ro,xlator-option=trace.include-ops=lookup,getattr,readv,noatime,"
                    "attribute-timeout=0"])
    assert a.get("xlator_options") == ["trace.include-ops=lookup,getattr,readv"]
    assert a.kernel_opts == ["ro", "noatime"] and a.get("attribute_timeout") == 0


def test_double_quotes_protect_commas():
    from fuse_bridge.cli_args import split_mount_options
    assert split_mount_options('xlator-option="t.include-ops=ro,rw",ro') == \
        ["xlator-option=t.include-ops=ro,rw", "ro"]
    a = parse_args(["v.vol", "/mnt", "-o", 'xlator_option="t.x=a,b",xlator-option=u.y=c'])
    assert a.get("xlator_options") == ["t.x=a,b", "u.y=c"]
    with pytest.raises(UsageError, match="unbalanced double quote"):
        parse_args(["v.vol", "/mnt", "-o", 'xlator-option="t.x=a,b'])


def test_an_unknown_word_after_a_plain_option_is_still_refused():
    with pytest.raises(UsageError, match="Invalid option 'bogus'"):
        parse_args(["v.vol", "/mnt", "-o", "attribute-timeout=0,bogus"])


def test_mount_helper_help_names_mount_xlfs():
    proc = run("fuse_bridge.mount_helper", "--help")
    assert proc.returncode == 0
    first = proc.stdout.splitlines()[0]
    assert first.startswith("Usage: mount.xlfs VOLFILE MOUNTPOINT"), first
    assert "Usage: xlfs" not in proc.stdout
    assert help_text().startswith("Usage: xlfs [OPTIONS]")
    assert "Exit status:" in proc.stdout and "Exit status:" in help_text()


MEM = str(VOLFILES / "memory.vol")


# (xlfs arguments, the same error through mount.xlfs, expected status)
CASES = {
    "flag": (["--no-such-flag", "-f", MEM, "/mnt"], [MEM, "/mnt", "-o", "no-such-flag"], 2),
    "flag-value": (["--attribute-timeout=soon", "-f", MEM, "/mnt"],
                   [MEM, "/mnt", "-o", "attribute-timeout=soon"], 2),
    "flag-range": (["--reader-thread-count=0", "-f", MEM, "/mnt"],
                   [MEM, "/mnt", "-o", "reader-thread-count=0"], 2),
    "override-volume": (["--volfile-check", "-f", MEM, "--xlator-option=nosuch.size=1"],
                        [MEM, "/mnt", "-f", "-o", "xlator-option=nosuch.size=1"], 2),
    "override-syntax": (["--volfile-check", "-f", MEM, "--xlator-option=memory.size"],
                        [MEM, "/mnt", "-f", "-o", "xlator-option=memory.size"], 2),
    "override-value": (["--volfile-check", "-f", MEM, "--xlator-option=memory.size=huge"],
                       [MEM, "/mnt", "-f", "-o", "xlator-option=memory.size=huge"], 2),
    "no-mountpoint": (["-f", MEM], [MEM], 2),
    "volfile": (["--volfile-check", "-f", "/no/such.vol"], ["/no/such.vol", "/mnt", "-f"], 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("module", ["fuse_bridge.cli", "fuse_bridge.mount_helper"])
def test_exit_status_is_one_per_kind_of_error(case, module):
    direct, helper, status = CASES[case]
    helper_form = module.endswith("mount_helper")
    proc = run(module, *(helper if helper_form else direct))
    assert proc.returncode == status, (case, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("mount.xlfs: " if helper_form else "xlfs: "), err
