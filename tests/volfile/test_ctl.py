"""xlfsctl: check, graph, convert, xlators; errors as one line with a non-zero exit."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xlators import Option, Registry, Translator
from xlators.core.volfile import VolfileError, load_volfile, parse_toml, parse_volfile
from xlators.ctl import SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parent / "samples"


class Brick(Translator):
    """test/brick: a leaf that must never be inited by xlfsctl.

        volume brick
            type test/brick
            option directory /srv/brick
        end-volume
    """
    type = "test/brick"
    children_range = (0, 0)
    options = (
        Option.path("directory", description="where the data lives"),
        Option.size("cache-size", default="4MB", description="a | pipe in a description"),
        Option.bool("read-only", default=False),
    )

    def init(self):
        raise AssertionError("xlfsctl must not call init()")

    async def lookup(self, frame, loc):
        raise NotImplementedError


class Filter(Translator):
    type = "test/filter"
    summary = "filters things"
    options = (
        Option.fops("include-ops", aliases=("include",), description="fops to keep"),
        Option.int("level", min=0, max=9),
        Option.xlator("peer"),
    )

    def init(self):
        raise AssertionError("xlfsctl must not call init()")

    async def writev(self, frame, fd, data, offset, flags=None):
        return 0


@pytest.fixture
def reg():
    r = Registry(load_entrypoints=False)
    r.register(Brick, "test")
    r.register(Filter, "testplugin")
    return r


GOOD = """\
# a comment
volume brick
    type test/brick
    option directory "/srv/with space"
    option cache-size 8MB
end-volume

volume filter
    type test/filter
    option include flush,lk
    option colour blue
    subvolumes brick
end-volume
"""


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.vol"
    path.write_text(GOOD)
    return path


def run(reg, capsys, *argv):
    status = main([str(a) for a in argv], registry=reg)
    out, err = capsys.readouterr()
    return status, out, err


# -- check --------------------------------------------------------------------------------------

def test_check_ok_with_an_unknown_option_warning(reg, capsys, good):
    status, out, err = run(reg, capsys, "check", good)
    assert status == 0
    assert out == f"{good}: ok (2 volumes, top 'filter')\n"
    assert err == (f"{good}:11: warning: volume 'filter' (test/filter): option 'colour' is "
                   f"not known\n")


def test_check_unknown_option_did_you_mean(reg, capsys, tmp_path):
    path = tmp_path / "f.vol"
    path.write_text(GOOD.replace("option colour blue", "option levle 3"))
    status, out, err = run(reg, capsys, "check", path)
    assert status == 0
    assert "option 'levle' is not known (did you mean 'level'?)" in err


def test_check_strict_fails_on_warnings(reg, capsys, good):
    status, out, err = run(reg, capsys, "check", "--strict", good)
    assert status == 1 and out == ""
    assert "1 warning(s), failing because of --strict" in err


def test_check_bad_value_one_line_with_file_and_line(reg, capsys, tmp_path):
    path = tmp_path / "bad.vol"
    path.write_text(GOOD.replace("option cache-size 8MB", "option cache-size lots"))
    status, out, err = run(reg, capsys, "check", path)
    assert status == 1 and out == ""
    assert err == (f"{path}:5: volume 'brick': option 'cache-size': invalid value 'lots': "
                   f"not a size (a number with an optional unit: KB, MB, GB, TB, PB)\n")


def test_check_unknown_type_lists_known_types(reg, capsys, tmp_path):
    path = tmp_path / "bad.vol"
    path.write_text(GOOD.replace("type test/filter", "type test/filtre"))
    status, out, err = run(reg, capsys, "check", path)
    assert status == 1
    assert err.count("\n") == 1
    assert err.startswith(f"{path}:8: volume 'filter': unknown translator type 'test/filtre' "
                          f"(did you mean 'test/filter'?); known types: ")
    assert "test/brick" in err


def test_check_xlator_option_overrides(reg, capsys, good):
    status, out, err = run(reg, capsys, "check", good, "--xlator-option", "*.read-only=on",
                           "--xlator-option", "fil*.level=3")
    assert status == 0, err
    status, out, err = run(reg, capsys, "check", good, "--xlator-option", "filter.level=10")
    assert status == 1
    assert "--xlator-option" in err and "option 'level': invalid value '10': above the " \
                                        "maximum 9" in err
    status, out, err = run(reg, capsys, "check", good, "--xlator-option", "nope.level=1")
    assert status == 1
    assert err == "--xlator-option 'nope.level=1': no volume matches 'nope' (volumes: brick, " \
                  "filter)\n"
    status, out, err = run(reg, capsys, "check", good, "--xlator-option", "filter.shade=1")
    assert status == 0
    assert ("\n--xlator-option: warning: volume 'filter' (test/filter): option 'shade' is "
            "not known\n") in err


def test_check_wildcard_override_warns_only_if_no_matched_volume_knows_the_key(reg, capsys, good):
    status, out, err = run(reg, capsys, "check", good, "--xlator-option", "*.level=2")
    assert status == 0
    assert "'level'" not in err           # test/filter knows it; test/brick need not
    status, out, err = run(reg, capsys, "check", good, "--xlator-option", "*.levle=2")
    assert "volume 'brick' (test/brick): option 'levle' is not known" in err
    assert "volume 'filter' (test/filter): option 'levle' is not known (did you mean " \
           "'level'?)" in err
    status, out, err = run(reg, capsys, "check", good, "--xlator-option", "brick.level=2")
    assert "--xlator-option: warning: volume 'brick' (test/brick): option 'level' is not " \
           "known" in err


def test_check_xlator_option_naming_a_missing_volume(reg, capsys, tmp_path):
    path = tmp_path / "peer.vol"
    path.write_text(GOOD.replace("option colour blue", "option peer birck"))
    status, out, err = run(reg, capsys, "check", path)
    assert status == 1
    assert err == f"{path}:11: volume 'filter': option 'peer': no volume named 'birck'\n"


def test_check_warns_about_a_dangling_volume(reg, capsys, tmp_path):
    path = tmp_path / "d.vol"
    path.write_text("volume lonely type test/brick option directory /a end-volume\n" + GOOD)
    status, out, err = run(reg, capsys, "check", path)
    assert status == 0
    assert (f"{path}:1: warning: volume 'lonely' (test/brick) is not a subvolume of any "
            f"volume") in err


def test_check_toml(reg, capsys, good, tmp_path):
    toml = tmp_path / "good.toml"
    assert run(reg, capsys, "convert", good, "--to", "toml", "-o", toml)[0] == 0
    status, out, err = run(reg, capsys, "check", toml)
    assert status == 0 and out == f"{toml}: ok (2 volumes, top 'filter')\n"
    assert f"{toml}:" in err      # the warning points into the TOML file


def test_check_missing_file(reg, capsys, tmp_path):
    status, out, err = run(reg, capsys, "check", tmp_path / "nope.vol")
    assert status == 1
    assert err == f"{tmp_path / 'nope.vol'}: No such file or directory\n"


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("bad-*.vol")))
def test_check_bad_samples_report_the_parser_error(reg, capsys, sample):
    path = SAMPLES / sample
    with pytest.raises(VolfileError) as info:
        load_volfile(path)
    status, out, err = run(reg, capsys, "check", path)
    assert status == 1 and out == ""
    assert err == f"{info.value}\n"
    assert err.startswith(f"{path}:")


# Every well-formed sample builds with the built-in translators.
GOOD_SAMPLES = sorted(p.name for p in SAMPLES.glob("*.vol") if not p.name.startswith("bad-"))


@pytest.mark.parametrize("sample", GOOD_SAMPLES)
def test_check_good_samples_with_the_builtin_translators(capsys, sample):
    path = SAMPLES / sample
    builtin = Registry(load_entrypoints=False)
    status, out, err = run(builtin, capsys, "check", path)
    assert status == 0, err
    assert out.startswith(f"{path}: ok (")
    for line in err.splitlines():
        assert line.startswith(f"{path}:") and ": warning: " in line


SHIPPED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "volfiles").glob("*")
                 if p.suffix in (".vol", ".toml"))


@pytest.mark.parametrize("volfile", SHIPPED)
def test_shipped_volfiles_check_strictly(capsys, volfile):
    """The example stacks in volfiles/ use only known types and known options."""
    path = ROOT / volfile
    builtin = Registry(load_entrypoints=False)
    status, out, err = run(builtin, capsys, "check", "--strict", path)
    assert status == 0, err
    assert err == ""


# -- graph ---------------------------------------------------------------------------------------

def test_graph_tree_marks_given_default_and_unknown(reg, capsys, good):
    status, out, err = run(reg, capsys, "graph", good)
    assert status == 0
    assert out == """\
filter (test/filter)
|   include-ops = flush,lk  (line 10, as 'include')
|   level  (unset)
|   peer  (unset)
|   colour = blue  (unknown option: ignored)
`-- brick (test/brick)
        directory = "/srv/with space"  (line 4)
        cache-size = 8MB  (line 5)
        read-only = off  (default)
"""
    assert "option 'colour' is not known" in err


def test_graph_no_defaults_and_overrides(reg, capsys, good):
    status, out, err = run(reg, capsys, "graph", good, "--no-defaults", "--xlator-option",
                           "brick.read-only=yes")
    assert status == 0
    assert "level" not in out
    assert "read-only = yes  (--xlator-option)" in out


def test_graph_fan_in_and_shared_children(reg, capsys, tmp_path):
    path = tmp_path / "fan.vol"
    path.write_text("""
        volume left type test/brick option directory /l end-volume
        volume right type test/brick option directory /r end-volume
        volume f1 type test/filter subvolumes left right end-volume
        volume f2 type test/filter subvolumes left end-volume
        volume top type test/filter subvolumes f1 f2 end-volume
    """)
    status, out, err = run(reg, capsys, "graph", path, "--no-defaults")
    assert status == 0, err
    assert out.splitlines() == [
        "top (test/filter)",
        "|-- f1 (test/filter)",
        "|   |-- left (test/brick)",
        "|   |       directory = /l  (line 2)",
        "|   `-- right (test/brick)",
        "|           directory = /r  (line 3)",
        "`-- f2 (test/filter)",
        "    `-- left (test/brick)  (shown above)",
    ]


def test_graph_error(reg, capsys, tmp_path):
    path = tmp_path / "bad.vol"
    path.write_text("volume x type test/nothing option a b end-volume\n")
    status, out, err = run(reg, capsys, "graph", path)
    assert status == 1 and out == ""
    assert err.startswith(f"{path}:1: volume 'x': unknown translator type 'test/nothing'")


# -- convert -------------------------------------------------------------------------------------

def test_convert_round_trip(reg, capsys, good, tmp_path):
    status, toml_text, err = run(reg, capsys, "convert", good, "--to", "toml")
    assert status == 0 and err == ""
    assert parse_toml(toml_text) == parse_volfile(GOOD)
    toml = tmp_path / "g.toml"
    toml.write_text(toml_text)
    out_vol = tmp_path / "back.vol"
    status, out, err = run(reg, capsys, "convert", toml, "--to", "volfile", "-o", out_vol)
    assert status == 0 and out == ""
    assert parse_volfile(out_vol.read_text()) == parse_volfile(GOOD)
    assert 'option directory "/srv/with space"' in out_vol.read_text()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_convert_needs_no_registered_types(capsys, tmp_path):
    path = tmp_path / "x.vol"
    path.write_text("volume x type nowhere/nothing option a b end-volume\n")
    status, out, err = run(Registry(load_entrypoints=False), capsys, "convert", path,
                           "--to", "toml")
    assert status == 0
    assert 'type = "nowhere/nothing"' in out


def test_convert_errors(reg, capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[volume]]\nname = 'x'\n")
    status, out, err = run(reg, capsys, "convert", bad, "--to", "volfile")
    assert status == 1 and err == f"{bad}:1: volume 'x': 'type' is missing\n"
    good = tmp_path / "g.vol"
    good.write_text(GOOD)
    status, out, err = run(reg, capsys, "convert", good, "--to", "toml", "-o",
                           tmp_path / "no" / "such" / "dir.toml")
    assert status == 1 and err.endswith(": No such file or directory\n")
    assert err.count("\n") == 1


def test_convert_needs_to(reg, capsys, good):
    with pytest.raises(SystemExit) as info:
        main(["convert", str(good)], registry=reg)
    assert info.value.code == 2
    assert "--to" in capsys.readouterr().err


# -- xlators -------------------------------------------------------------------------------------

def test_xlators_lists_every_type_with_its_origin_and_summary(reg, capsys):
    status, out, err = run(reg, capsys, "xlators")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "PLUGIN", "SUMMARY"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(reg.types())
    assert rows["test/filter"].split()[1] == "testplugin"
    assert rows["test/filter"].endswith("filters things")
    assert "a leaf that must never be inited by xlfsctl." in rows["test/brick"]
    assert "test/brick:" not in rows["test/brick"]     # the "type:" prefix is dropped


def test_xlators_type_details(reg, capsys):
    status, out, err = run(reg, capsys, "xlators", "test/filter")
    assert status == 0
    assert out.startswith("test/filter: filters things\n")
    assert "  plugin:     testplugin\n" in out
    assert f"  class:      {__name__}.Filter\n" in out
    assert "  subvolumes: any number\n" in out
    assert "  fops:       writev\n" in out
    assert "  include-ops\n      type:    fops\n      default: \"\"\n      aliases: include\n" \
           "      fops to keep\n" in out
    assert "  level\n      type:    int [0..9]\n      default: (unset)\n" in out


def test_xlators_type_details_with_example(reg, capsys):
    status, out, err = run(reg, capsys, "xlators", "test/brick")
    assert status == 0
    assert "  subvolumes: none\n" in out
    assert "  fops:       lookup\n" in out
    assert "example:\n    volume brick\n        type test/brick\n" in out


def test_xlators_unknown_type(reg, capsys):
    status, out, err = run(reg, capsys, "xlators", "test/filtr")
    assert status == 1 and out == ""
    assert err.startswith("xlfsctl: unknown translator type 'test/filtr' (did you mean "
                          "'test/filter'?); known types: ")
    assert err.count("\n") == 1


# -- structure ----------------------------------------------------------------------------------

def test_no_command_prints_help(reg, capsys):
    assert main([], registry=reg) == 2
    assert "check" in capsys.readouterr().err


def test_a_subcommand_is_one_function(monkeypatch, capsys):
    def add_hello(sub):
        p = sub.add_parser("hello")
        p.add_argument("who")
        p.set_defaults(func=lambda args: print(f"hello {args.who}") or 3)

    monkeypatch.setattr("xlators.ctl.SUBCOMMANDS", SUBCOMMANDS + [add_hello])
    assert main(["hello", "world"]) == 3
    assert capsys.readouterr().out == "hello world\n"


def test_extension_modules_add_subcommands(monkeypatch, tmp_path, capsys):
    (tmp_path / "xlfs_test_ctl_ext.py").write_text(
        "def add_subcommands(sub):\n"
        "    p = sub.add_parser('dump-decode')\n"
        "    p.add_argument('path')\n"
        "    p.set_defaults(func=lambda args: print('decoded', args.path) or 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("xlators.ctl.EXTENSIONS", ("xlfs_test_no_such_module",
                                                   "xlfs_test_ctl_ext"))
    assert main(["dump-decode", "f.dump"]) == 0
    assert capsys.readouterr().out == "decoded f.dump\n"


def test_unexpected_errors_are_one_line(reg, monkeypatch, capsys, good):
    def boom(args):
        raise KeyError("surprise")
    monkeypatch.setattr("xlators.ctl.run_check", boom)
    status = main(["check", str(good)], registry=reg)
    err = capsys.readouterr().err
    assert status == 2
    assert err == ("xlfsctl: unexpected error: KeyError: 'surprise' (run with --traceback "
                   "for details)\n")
    with pytest.raises(KeyError):
        main(["--traceback", "check", str(good)], registry=reg)


def test_parser_has_the_documented_commands():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"check", "graph", "convert", "xlators"} <= set(choices)


def _subprocess(*argv, cwd=ROOT):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "xlators.ctl", *map(str, argv)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def test_command_line_errors_have_no_traceback(tmp_path):
    bad = _subprocess("check", SAMPLES / "bad-backtick.vol")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith(f"{SAMPLES / 'bad-backtick.vol'}:4: backticks are not allowed")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    missing = _subprocess("graph", tmp_path / "missing.vol")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr == f"{tmp_path / 'missing.vol'}: No such file or directory\n"
    unknown = _subprocess("xlators", "no/such-type")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("xlfsctl: unknown translator type 'no/such-type'")
    listing = _subprocess("xlators")
    assert listing.returncode == 0 and listing.stdout.startswith("TYPE ")
