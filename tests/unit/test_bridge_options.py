"""Bridge options are declared once (fields of fuse_bridge.options.BridgeOptions), and
the flag, the ``-o`` key, the help line, the parsing and the statedump line of each come
from that declaration: every declared option is checked here through all of them."""
from __future__ import annotations

from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from fuse_bridge import cli
from fuse_bridge.cli_args import DAEMON_FLAGS, FLAGS, INFO_FLAGS, UsageError, help_text, parse_args
from fuse_bridge.options import BridgeOptions, Declared, declared, on_command_line
from tests.protocol.kernel import serve
from xlators.core.statedump import format_statedump, format_value

#: A value to give each kind of option (by its metavar); a new metavar needs one here.
SAMPLES = {"SECONDS": "2.5", "N": "7", "OPTS": "noexec", "auto|yes|no": "no",
           "VALUE": "myfs", "PATH": "{tmp}/fuse.dump"}
OPTIONS = on_command_line()


def sample(d: Declared, tmp: str = "/tmp") -> str:
    """A text for the option that parses to something other than its default."""
    cli_ = d.cli
    assert cli_ is not None
    if cli_.kind == "bool?":
        return "no" if d.default is True else "yes"
    assert cli_.metavar in SAMPLES, f"give a sample value for metavar {cli_.metavar!r}"
    return SAMPLES[cli_.metavar].format(tmp=tmp)


def ids(d: Declared) -> str:
    return d.name


def test_every_option_is_declared_once():
    names = [d.name for d in declared()]
    assert names == [f.name for f in fields(BridgeOptions)]
    flags = [d.cli.flag for d in OPTIONS]
    assert not [f for f, n in Counter(flags + [f.long for f in DAEMON_FLAGS + INFO_FLAGS]).items()
                if n > 1], "a flag declared twice"
    assert not {d.name for d in OPTIONS} & {f.dest for f in DAEMON_FLAGS + INFO_FLAGS}
    # FLAGS is derived: the daemon's, then exactly one per declared bridge option
    bridge = [f for f in FLAGS if f not in DAEMON_FLAGS + INFO_FLAGS]
    assert [(f.long, f.dest) for f in bridge] == [(d.cli.flag, d.name) for d in OPTIONS]


@pytest.mark.parametrize("prog", ["xlfs", "mount.xlfs"])
@pytest.mark.parametrize("d", OPTIONS, ids=ids)
def test_help_lists_the_option(d, prog):
    text = help_text(prog)
    if d.cli.hidden:
        assert f"--{d.cli.flag}" not in text
        return
    spelled = (f"--{d.cli.flag}[=BOOL]" if d.cli.kind == "bool?"
               else f"--{d.cli.flag}={d.cli.metavar}")
    lines = [line for line in text.splitlines() if line.split()[:1] == [spelled]]
    assert len(lines) == 1 and lines[0].endswith(f" {d.cli.help}"), (spelled, lines)


@pytest.mark.parametrize("d", OPTIONS, ids=ids)
def test_the_option_parses_as_a_flag(d, tmp_path):
    text = sample(d, str(tmp_path))
    value = d.cli.parse(text)
    assert value != d.default, "the sample must differ from the default"
    argvs = [[f"--{d.cli.flag}={text}", "-f", "v.vol", "/mnt"]]
    if d.cli.kind == "value":
        argvs.append(["-f", "v.vol", f"--{d.cli.flag}", text, "/mnt"])
    for argv in argvs:
        args = parse_args(argv)
        assert args.positionals == ["/mnt"], argv
        assert getattr(cli.bridge_options(args), d.name) == value, argv
    if d.cli.kind == "bool?":       # bare: yes, and the next word stays a positional
        args = parse_args(["-f", "v.vol", f"--{d.cli.flag}", "/mnt"])
        assert args.positionals == ["/mnt"] and args.get(d.name) is True
    else:
        with pytest.raises(UsageError, match=f"option '--{d.cli.flag}' requires an argument"):
            parse_args([f"--{d.cli.flag}"])


@pytest.mark.parametrize("d", OPTIONS, ids=ids)
def test_the_option_parses_as_a_mount_option_key(d, tmp_path):
    text = sample(d, str(tmp_path))
    value = d.cli.parse(text)
    for key in {d.cli.flag, d.cli.flag.replace("-", "_")}:
        args = parse_args(["v.vol", "/mnt", "-o", f"{key}={text}"])
        assert args.positionals == ["v.vol", "/mnt"]
        assert getattr(cli.bridge_options(args), d.name) == value, key
    if d.cli.kind == "value":
        with pytest.raises(UsageError, match="needs a value"):
            parse_args(["v.vol", "/mnt", "-o", d.cli.flag])


async def test_every_option_shows_in_the_statedump(tmp_path):
    argv = ["-f", "v.vol", "/mnt"]
    for d in OPTIONS:
        argv.append(f"--{d.cli.flag}={sample(d, str(tmp_path))}")
    opts = cli.bridge_options(parse_args(argv))
    async with serve(options=opts) as (kernel, session):
        text = format_statedump(session.graph, extra={"fuse": cli._bridge_state(session)})
    fuse = text.split("[fuse]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    lines = dict(line.split("=", 1) for line in fuse)
    for d in declared():
        value = getattr(opts, d.name)
        assert lines[f"option.{d.name}"] == format_value(value), d.name
        if d.cli is not None:
            assert value == d.cli.parse(sample(d, str(tmp_path))), d.name


def test_a_minimum_is_checked_with_one_line():
    with pytest.raises(UsageError, match=r"^--reader-thread-count must be at least 1$"):
        cli.bridge_options(parse_args(["--reader-thread-count=0"]))
    with pytest.raises(UsageError, match=r"^--reader-thread-count must be at least 1$"):
        cli.bridge_options(parse_args(["v.vol", "/mnt", "-o", "reader-thread-count=0"]))
    assert cli.bridge_options(parse_args(["--reader-thread-count=2"])).reader_thread_count == 2


def test_options_without_a_flag_are_not_on_the_command_line():
    internal = [d for d in declared() if d.cli is None]
    assert {d.name for d in internal} >= {"max_write", "subtype", "idle_readers"}
    for d in internal:
        with pytest.raises(UsageError, match="unrecognized option"):
            parse_args([f"--{d.name.replace('_', '-')}=1"])


def test_the_readme_names_every_listed_flag():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [d.cli.flag for d in OPTIONS if not d.cli.hidden and f"`--{d.cli.flag}" not in readme]
    assert not missing, f"README.md's command-line paragraph lacks {missing}"
