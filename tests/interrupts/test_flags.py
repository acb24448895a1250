"""The two interrupt flags on the command line, in mount -o form and in --help."""
from __future__ import annotations

import pytest

from fuse_bridge import mount_helper
from fuse_bridge.cli import bridge_options
from fuse_bridge.cli_args import help_text, parse_args


def opts(*argv: str):
    args = parse_args(list(argv))
    return bridge_options(args), args.positionals


@pytest.mark.parametrize("flag, attr", [
    ("fuse-flush-handle-interrupt", "flush_handle_interrupt"),
    ("fuse-setlk-handle-interrupt", "setlk_handle_interrupt"),
])
def test_flag_values(flag, attr):
    o, _ = opts("-f", "v.vol", "/mnt")
    assert getattr(o, attr) is False                          # off by default
    o, pos = opts(f"--{flag}", "-f", "v.vol", "/mnt")
    assert getattr(o, attr) is True and pos == ["/mnt"]      # bare means yes
    o, pos = opts("-f", "v.vol", f"--{flag}", "/mnt")         # the next word is not a value
    assert getattr(o, attr) is True and pos == ["/mnt"]
    for word, value in [("yes", True), ("on", True), ("1", True), ("enable", True),
                        ("no", False), ("off", False), ("0", False), ("false", False)]:
        o, _ = opts(f"--{flag}={word}", "-f", "v.vol", "/mnt")
        assert getattr(o, attr) is value, word
    o, _ = opts("v.vol", "/mnt", "-o", f"{flag}=yes")          # mount helper form
    assert getattr(o, attr) is True


def test_mount_xlfs_passes_the_option_on(monkeypatch):
    """mount -t xlfs VOLFILE /mnt -o fuse-flush-handle-interrupt=yes runs mount.xlfs."""
    seen = []
    monkeypatch.setattr(mount_helper, "xlfs_main", lambda argv, **kw: seen.append(argv) or 0)
    assert mount_helper.main(["/etc/xlfs/v.vol", "/mnt", "-o",
                              "rw,fuse-flush-handle-interrupt=yes"]) == 0
    o, _ = opts(*seen[0])
    assert o.flush_handle_interrupt is True and o.setlk_handle_interrupt is False


def test_help_hides_the_flush_flag_only():
    text = help_text()
    assert "fuse-flush-handle-interrupt" not in text          # hidden, as in GlusterFS
    assert "--fuse-setlk-handle-interrupt[=BOOL]" in text
