"""Tests for xlators.core.volfile: the GlusterFS volfile grammar, its printer and the TOML form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlators.core.volfile import (
    KEYWORDS, VolfileError, VolumeSpec, check_volumes, format_toml, format_volfile,
    load_volfile, parse_toml, parse_volfile, quote_word,
)

SAMPLES = Path(__file__).parent / "samples"
GOOD = sorted(p for p in SAMPLES.glob("*.vol") if not p.name.startswith("bad-"))
BAD = sorted(SAMPLES.glob("bad-*.vol"))


def error_of(text: str, filename: str = "t.vol") -> VolfileError:
    with pytest.raises(VolfileError) as info:
        parse_volfile(text, filename)
    return info.value


def vol(name, vtype="storage/posix", options=None, subvolumes=()):
    return VolumeSpec(name, vtype, dict(options or {}), list(subvolumes))


# --- parsing -----------------------------------------------------------------------------------

def test_basic_parse_with_metadata():
    text = (
        "# comment line\n"
        "volume posix\n"
        "    type storage/posix\n"
        "    option directory /data   # trailing comment\n"
        "end-volume\n"
        "\n"
        "volume top\n"
        "    type debug/trace\n"
        "    option log-history on\n"
        "    subvolumes posix\n"
        "    option after-subvolumes yes\n"
        "end-volume\n"
    )
    vols = parse_volfile(text, "local.vol")
    assert vols == [
        vol("posix", options={"directory": "/data"}),
        vol("top", "debug/trace", {"log-history": "on", "after-subvolumes": "yes"}, ["posix"]),
    ]
    posix, top = vols
    assert (posix.line, top.line) == (2, 7)
    assert posix.option_lines == {"directory": 4}
    assert top.option_lines == {"log-history": 9, "after-subvolumes": 11}
    assert posix.filename == top.filename == "local.vol"
    assert list(top.options) == ["log-history", "after-subvolumes"]


def test_top_is_last_and_order_is_definition_order():
    vols = parse_volfile((SAMPLES / "locks-write-behind.vol").read_text())
    assert [v.name for v in vols] == ["brick-posix", "brick-locks", "brick-wb", "brick-ro", "brick"]
    assert vols[-1].type == "debug/io-stats"


def test_same_option_twice_last_value_first_position():
    vols = parse_volfile("volume a type x/y\n option k 1\n option j 2\n option k 3\nend-volume\n")
    assert vols[0].options == {"k": "3", "j": "2"}
    assert list(vols[0].options) == ["k", "j"]
    assert vols[0].option_lines == {"k": 4, "j": 3}


def test_tokens_ignore_line_breaks():
    text = "volume a type x/y option\n k\n\n v end-volume volume b type x/y subvolumes\n a\nend-volume"
    assert parse_volfile(text) == [vol("a", "x/y", {"k": "v"}), vol("b", "x/y", subvolumes=["a"])]


def test_several_subvolumes_and_subvolumeS_spelling():
    text = ("volume a type x/y option k v end-volume\nvolume b type x/y option k v end-volume\n"
            "volume c type x/y subvolumeS b a end-volume\n")
    assert parse_volfile(text)[-1].subvolumes == ["b", "a"]


@pytest.mark.parametrize("value_text, expected", [
    ('/plain', "/plain"),
    ('a#b', "a#b"),                       # '#' inside a word is not a comment
    ('"a b"', "a b"),
    ('"a \\"quoted\\" b"', 'a "quoted" b'),
    ('"back\\\\slash"', "back\\slash"),
    ('"\\x\\y"', "xy"),                   # backslash-x gives x
    ('""', ""),
    ('"# not a comment"', "# not a comment"),
    ('"volume"', "volume"),               # a quoted keyword is a plain word
    ('"line\none"', "lineone"),           # a line break inside quotes is dropped
    ('"line\\\none"', "lineone"),         # and so is a backslash in front of it
    ('"tab\there"', "tab\there"),
    ('"ünïcødé ✓"', "ünïcødé ✓"),
    ('ünïcødé', "ünïcødé"),
    ('"a"', "a"),
    ('a\x0cb', "a\x0cb"),                  # form feed is a word character, as in graph.l
])
def test_option_values(value_text, expected):
    vols = parse_volfile(f"volume v\n type x/y\n option k {value_text}\nend-volume\n")
    assert vols[0].options == {"k": expected}


def test_quoted_names_keys_and_subvolumes():
    text = ('volume "my vol"\n type x/y\n option "a key" "a value"\nend-volume\n'
            'volume top\n type x/y\n subvolumes "my vol"\nend-volume\n')
    vols = parse_volfile(text)
    assert vols[0].name == "my vol" and vols[0].options == {"a key": "a value"}
    assert vols[1].subvolumes == ["my vol"]


def test_comments():
    text = ("#!comment\n# volume fake\nvolume a # comment after the name\n"
            "  type x/y#comment-needs-a-space-before-it-so-this-is-the-type\n"
            "  option k v # comment\n  #option j w\nend-volume # done\n# trailing, no newline")
    err = error_of(text)
    assert err.line == 4 and "is not valid" in err.message
    vols = parse_volfile(text.replace("x/y#", "x/y #"))
    assert vols == [vol("a", "x/y", {"k": "v"})]
    assert vols[0].option_lines == {"k": 5}


def test_hash_inside_word_reaches_type_validation():
    err = error_of("volume a\n  type x/y#z\n  option k v\nend-volume\n")
    assert err.line == 2 and "type 'x/y#z' is not valid" in err.message


def test_comment_only_where_a_token_starts():
    text = "volume a #c\n type x/y #c\n option k#x v#y #real comment\nend-volume#not-a-comment\nend-volume"
    # 'end-volume#not-a-comment' is a plain word, so it is a stray word inside the volume
    err = error_of(text)
    assert err.line == 4 and '"end-volume#not-a-comment"' in err.message
    vols = parse_volfile(text.replace("end-volume#not-a-comment\n", ""))
    assert vols[0].options == {"k#x": "v#y"}


def test_crlf_line_endings():
    text = (SAMPLES / "posix-trace.vol").read_text()
    crlf = text.replace("\n", "\r\n")
    assert parse_volfile(crlf) == parse_volfile(text)
    assert [v.line for v in parse_volfile(crlf)] == [v.line for v in parse_volfile(text)]
    err = error_of("volume a\r\n type x/y\r\n option k\r\nend-volume\r\n")
    assert err.line == 3


def test_carriage_return_inside_quotes_is_kept_like_graph_l():
    vols = parse_volfile('volume a\r\n type x/y\r\n option k "one\r\ntwo"\r\nend-volume\r\n')
    assert vols[0].options == {"k": "one\rtwo"}


def test_byte_order_mark_is_ignored():
    assert parse_volfile("\ufeffvolume a type x/y option k v end-volume") == [
        vol("a", "x/y", {"k": "v"})]


def test_keywords_are_lowercase_only():
    err = error_of("Volume a\n type x/y\n option k v\nend-volume\n")
    assert err.line == 1 and 'unexpected word "Volume"' in err.message


# --- errors --------------------------------------------------------------------------------------

ERRORS = [
    # (text, line, message fragment)
    ("volume a\n  type x/y\nend-volume\n", 3,
     "volume 'a': a volume needs an option or a subvolumes line besides its 'type'"),
    ("volume a\n  option k v\n  type x/y\nend-volume\n", 2,
     "volume 'a': 'type' not specified before 'option'"),
    ("volume a\nend-volume\n", 2, "volume 'a': 'type' not specified"),
    ("volume a\n  subvolumes b\nend-volume\n", 2, "'type' not specified before 'subvolumes'"),
    ("volume a\n  type x/y\n  option k v\n  option j w\n", 4,
     "'end-volume' not defined for volume 'a' (started at line 1)"),
    ("volume a\n  type x/y\n  option k v # the line of the last token\n\n# c\n", 3,
     "'end-volume' not defined for volume 'a'"),
    ("end-volume\n", 1, "'end-volume' without a matching 'volume'"),
    ("volume a type x/y option k v end-volume\n\nstray\n", 3,
     "syntax error: unexpected word \"stray\" outside a volume definition"),
    ("\n\noption k v\n", 3, "syntax error: unexpected 'option' outside a volume definition"),
    ("type x/y\n", 1, "unexpected 'type' outside a volume definition"),
    ("volume a\n type x/y\n option k v\n volume b\n", 4,
     "'end-volume' not defined for volume 'a' (line 1) before the next 'volume'"),
    ("volume a\n type x/y\n\n subvolumes ghost\nend-volume\n", 4,
     "volume 'a': subvolume 'ghost' is not defined prior to usage"),
    ("volume a\n type x/y\n subvolumes\n   a\nend-volume\n", 4,
     "volume 'a': lists itself ('a') as a subvolume"),
    ("volume b type x/y option k v end-volume\nvolume a\n type x/y\n subvolumes b b\nend-volume\n",
     4, "volume 'a': subvolume 'b' is listed twice"),
    ("volume a type x/y option k v end-volume\n\nvolume a type x/y option k v end-volume\n", 3,
     "volume 'a' defined again (first defined at line 1)"),
    ("volume a\n type x/y\n option k v\n type x/z\nend-volume\n", 4,
     "volume 'a': duplicate 'type' (first at line 2)"),
    ("volume a\n option k v\nend-volume\n", 2, "'type' not specified before 'option'"),
    ("volume b type x/y option k v end-volume\nvolume a\n type x/y\n subvolumes b\n"
     " option k v\n subvolumes b\nend-volume\n", 6,
     "volume 'a': duplicate 'subvolumes' (first at line 4)"),
    ("volume a\n type x/y\n option k\nend-volume\n", 3, "volume 'a': option 'k' needs a value"),
    ("volume a\n type x/y\n option\nend-volume\n", 3, "volume 'a': 'option' needs a key and a value"),
    ("volume a\n type x/y\n option k v\n option j\n", 4, "option 'j' needs a value"),
    ("volume a\n type x/y\n option k a b\nend-volume\n", 3,
     "volume 'a': syntax error: unexpected word \"b\" after option 'k' "
     "(a value containing spaces must be quoted)"),
    ("volume a\n type x/y\n option mode type\nend-volume\n", 3, "option 'mode' needs a value"),
    ("volume a\n type x/y x/z\nend-volume\n", 2, "unexpected word \"x/z\""),
    ("", 1, "no volume defined"),
    ("# only\n# comments\n\n", 1, "no volume defined"),
    ("volume a\n type x/y\n option k v\nend-volume\n# `date`\n", 5, "backticks are not allowed"),
    ('volume a\n type x/y\n option k "a\\`b"\nend-volume\n', 3, "backticks are not allowed"),
    ("volume a\n type\n mount/fuse\n option k v\nend-volume\n", 3,
     "volume 'a': type 'mount/fuse' cannot be used in a volfile: "
     "the FUSE bridge is not part of the graph"),
    ("volume a\n type posix\n option k v\nend-volume\n", 2,
     "volume 'a': type 'posix' is not valid (expected CATEGORY/NAME"),
    ("volume a\n type x/y/z\n option k v\nend-volume\n", 2, "type 'x/y/z' is not valid"),
    ('volume a\n type x/y\n option k "never\n closed\nend-volume\n', 3,
     "unterminated quoted string"),
    ("volume a\n type x/y\n option k a\\b\nend-volume\n", 3,
     "stray backslash outside a quoted string"),
    ("volume a\n type\nend-volume\n", 2, "volume 'a': 'type' needs a value"),
    ("volume a\n type x/y\n subvolumes\nend-volume\n", 3,
     "volume 'a': 'subvolumes' needs at least one name"),
    ("volume\n", 1, "'volume' needs a name"),
    ("volume type x/y\n", 1, "'volume' needs a name"),
    ('volume ""\n type x/y\n option k v\nend-volume\n', 1, "volume name must not be empty"),
    ('volume a\n type x/y\n option "" v\nend-volume\n', 3, "option key must not be empty"),
    ("volume a\n type x/y\n option k v", 3, "'end-volume' not defined"),
    ("volume a\n type x/y\n option k v\n subvolumes c\nend-volume\n", 4,
     "subvolume 'c' is not defined prior to usage"),
    ("volume a\n type x/y\n option k v\nEnd-volume\n", 4,
     "syntax error: unexpected word \"End-volume\""),
]


@pytest.mark.parametrize("text, line, fragment", ERRORS)
def test_errors(text, line, fragment):
    err = error_of(text, "local.vol")
    assert fragment in err.message
    assert err.line == line, str(err)
    assert err.filename == "local.vol"
    assert str(err) == f"local.vol:{line}: {err.message}"


def test_error_example_from_brief_wording():
    text = "\n\n\n\nvolume posix\n  type storage/posix\n  option directory\nend-volume\n"
    assert str(error_of(text, "local.vol")) == \
        "local.vol:7: volume 'posix': option 'directory' needs a value"


def test_volfile_error_without_line():
    err = VolfileError("no volume defined", "g.toml")
    assert str(err) == "g.toml: no volume defined"
    assert (err.filename, err.line, err.message) == ("g.toml", 0, "no volume defined")
    assert isinstance(err, Exception)


# --- samples -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_samples_round_trip(path):
    vols = load_volfile(path)
    assert vols and all(v.filename == str(path) for v in vols)
    canonical = format_volfile(vols)
    assert parse_volfile(canonical) == vols
    assert format_volfile(parse_volfile(canonical)) == canonical
    assert parse_toml(format_toml(vols)) == vols
    assert format_volfile(parse_toml(format_toml(vols))) == canonical


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_samples(path):
    first = path.read_text().splitlines()[0]
    m = re.fullmatch(r"# expect-error: (\d+): (.*)", first)
    assert m, "a bad sample starts with '# expect-error: LINE: message'"
    with pytest.raises(VolfileError) as info:
        load_volfile(path)
    assert info.value.line == int(m.group(1)), str(info.value)
    assert m.group(2) in info.value.message
    assert str(info.value).startswith(f"{path}:{m.group(1)}: ")


def test_sample_details():
    vols = {v.name: v for v in load_volfile(SAMPLES / "locks-write-behind.vol")}
    assert vols["brick-posix"].options["directory"] == "/srv/xlfs/brick with spaces"
    assert vols["brick-wb"].options["flush-behind"] == "off"
    assert vols["brick-wb"].option_lines["flush-behind"] == 20
    assert vols["brick-locks"].options == {"mandatory-locking": "off", "trace": "off"}
    assert "dump-fd-stats#not-a-comment" in vols["brick"].options
    fan_in = load_volfile(SAMPLES / "fan-in.vol")
    assert fan_in[-1].subvolumes == ["left", "right"]
    assert [v.line for v in fan_in] == [3, 4, 5]
    faults = load_volfile(SAMPLES / "fault-injection.vol")
    assert faults[-1].options["exclude"] == ""


# --- printing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("plain", "plain"),
    ("/srv/brick", "/srv/brick"),
    ("a#b", "a#b"),
    ("4MB", "4MB"),
    ("ünï", "ünï"),
    ("", '""'),
    ("#x", '"#x"'),
    ("a b", '"a b"'),
    ('a"b', '"a\\"b"'),
    ("a\\b", '"a\\\\b"'),
    ("tab\t", '"tab\t"'),
    ("cr\r", '"cr\r"'),
    ("volume", '"volume"'),
    ("end-volume", '"end-volume"'),
    ("subvolumeS", '"subvolumeS"'),
    ("volumes", "volumes"),
    ("non\xa0breaking", '"non\xa0breaking"'),
])
def test_quote_word(value, expected):
    assert quote_word(value) == expected
    parsed = parse_volfile(f"volume v type x/y option k {quote_word(value)} end-volume")
    assert parsed[0].options["k"] == value


@pytest.mark.parametrize("value", ["a\nb", "`cmd`"])
def test_quote_word_refuses_what_a_volfile_cannot_hold(value):
    with pytest.raises(ValueError):
        quote_word(value)


def test_format_volfile_canonical_text():
    vols = [vol("posix", options={"directory": "/data dir", "empty": ""}),
            vol("top", "debug/trace", {"log-history": "on"}, ["posix"])]
    assert format_volfile(vols) == (
        "volume posix\n"
        "    type storage/posix\n"
        '    option directory "/data dir"\n'
        '    option empty ""\n'
        "end-volume\n"
        "\n"
        "volume top\n"
        "    type debug/trace\n"
        "    option log-history on\n"
        "    subvolumes posix\n"
        "end-volume\n"
    )


def test_equality_ignores_metadata():
    a = VolumeSpec("a", "x/y", {"k": "v"}, [], line=3, option_lines={"k": 4}, filename="f")
    assert a == VolumeSpec("a", "x/y", {"k": "v"}, [])
    assert a != VolumeSpec("a", "x/y", {"k": "w"}, [])


# --- load_volfile ------------------------------------------------------------------------------

def test_load_dispatches_on_suffix(tmp_path):
    vols = [vol("posix", options={"directory": "/d"}), vol("top", "debug/trace", {}, ["posix"])]
    (tmp_path / "g.vol").write_text(format_volfile(vols))
    (tmp_path / "g.toml").write_text(format_toml(vols))
    assert load_volfile(tmp_path / "g.vol") == vols
    assert load_volfile(str(tmp_path / "g.toml")) == vols
    assert load_volfile(tmp_path / "g.toml")[0].filename == str(tmp_path / "g.toml")


def test_load_crlf_file_and_bad_utf8(tmp_path):
    p = tmp_path / "crlf.vol"
    p.write_bytes(b"volume a\r\n type x/y\r\n option k v\r\nend-volume\r\n")
    assert load_volfile(p) == [vol("a", "x/y", {"k": "v"})]
    p.write_bytes(b"volume a\n type x/y\n option k \xff\nend-volume\n")
    with pytest.raises(VolfileError) as info:
        load_volfile(p)
    assert info.value.line == 3 and "UTF-8" in info.value.message


def test_load_missing_file(tmp_path):
    with pytest.raises(OSError):
        load_volfile(tmp_path / "nope.vol")


# --- TOML --------------------------------------------------------------------------------------

TOML_EXAMPLE = '''\
[[volume]]
name = "posix"
type = "storage/posix"
subvolumes = []
[volume.options]
directory = "/data"

[[volume]]
name = "delay"
type = "debug/delay-gen"
subvolumes = ["posix"]
[volume.options]
delay-duration = 100000
enable = "flush"
"odd key.with dots" = true
off-switch = false
ratio = 0.5

[[volume]]
name = "top"
type = "debug/io-stats"
subvolumes = ["delay"]
'''


def test_parse_toml_example():
    vols = parse_toml(TOML_EXAMPLE, "g.toml")
    assert vols == [
        vol("posix", options={"directory": "/data"}),
        vol("delay", "debug/delay-gen", {"delay-duration": "100000", "enable": "flush",
                                         "odd key.with dots": "on", "off-switch": "off",
                                         "ratio": "0.5"}, ["posix"]),
        vol("top", "debug/io-stats", {}, ["delay"]),
    ]
    assert [v.line for v in vols] == [1, 8, 19]
    assert all(v.filename == "g.toml" for v in vols)


def test_toml_inline_tables_and_optional_keys():
    text = 'volume = [{name = "a", type = "x/y", options = {k = 1}}, ' \
           '{name = "b", type = "x/y", subvolumes = ["a"]}]\n'
    assert parse_toml(text) == [vol("a", "x/y", {"k": "1"}), vol("b", "x/y", {}, ["a"])]


def test_format_toml_text():
    vols = [vol("posix", options={"directory": "/d", "a.b c": 'q"\\'}),
            vol("top", "debug/trace", {}, ["posix"])]
    assert format_toml(vols) == (
        '[[volume]]\nname = "posix"\ntype = "storage/posix"\nsubvolumes = []\n'
        '[volume.options]\ndirectory = "/d"\n"a.b c" = "q\\"\\\\"\n'
        '\n'
        '[[volume]]\nname = "top"\ntype = "debug/trace"\nsubvolumes = ["posix"]\n'
    )


TOML_ERRORS = [
    ('[[volume]]\nname = "a"\ntype = \n', 3, "invalid TOML"),
    ('', 0, "no volume defined"),
    ('volume = []\n', 0, "no volume defined"),
    ('title = "x"\n', 0, "unknown top-level key 'title'"),
    ('[volume]\nname = "a"\n', 0, "'volume' must be an array of tables"),
    ('[[volume]]\ntype = "x/y"\n', 1, "volume #1: 'name' is missing"),
    ('[[volume]]\nname = 3\ntype = "x/y"\n', 1, "volume #1: 'name' must be a string, not an integer"),
    ('[[volume]]\nname = "a"\n', 1, "volume 'a': 'type' is missing"),
    ('[[volume]]\nname = "a"\ntype = ["x/y"]\n', 1, "'type' must be a string, not an array"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\nsubvolume = []\n', 1,
     "volume 'a': unknown key 'subvolume' (allowed: name, type, subvolumes, options)"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\nsubvolumes = "b"\n', 1,
     "'subvolumes' must be an array of strings"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\noptions = "k"\n', 1, "'options' must be a table"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\n[volume.options]\nk = [1, 2]\n', 1,
     "option 'k' must be a string, integer, boolean or finite float, not an array"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\n[volume.options]\nk = nan\n', 1, "non-finite float"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\n[volume.options]\nk = 1979-05-27\n', 1,
     "not a date/time"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\n[volume.options.k]\nx = 1\n', 1, "not a table"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\noptions = {k = "v"}\n\n'
     '[[volume]]\nname = "b"\ntype = "x/y"\nsubvolumes = ["ghost"]\n', 6,
     "volume 'b': subvolume 'ghost' is not defined prior to usage"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\nsubvolumes = ["a"]\n', 1, "lists itself ('a')"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\noptions = {k = "v"}\n'
     '[[volume]]\nname = "a"\ntype = "x/y"\noptions = {k = "v"}\n', 5,
     "volume 'a': defined again (first defined as volume #1)"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\noptions = {k = "`rm -rf /`"}\n', 1,
     "option 'k' contains a backtick"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\noptions = {k = "a\\nb"}\n', 1,
     "option 'k' contains a line break"),
    ('[[volume]]\nname = "a"\ntype = "mount/fuse"\noptions = {k = "v"}\n', 1,
     "type 'mount/fuse' cannot be used"),
    ('[[volume]]\nname = "a"\ntype = "posix"\noptions = {k = "v"}\n', 1,
     "type 'posix' is not valid"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\n', 1,
     "volume 'a': a volume needs an option or a subvolumes line"),
    ('[[volume]]\nname = ""\ntype = "x/y"\noptions = {k = "v"}\n', 1,
     "volume #1: volume name must not be empty"),
    ('[[volume]]\nname = "a"\ntype = "x/y"\noptions = {"" = "v"}\n', 1,
     "option key must not be empty"),
    ('volume = [{name = "a", type = "x/y"}]\n', 0, "volume 'a': a volume needs an option"),
    ('volume = [1]\n', 0, "volume #1: must be a table, not an integer"),
]


@pytest.mark.parametrize("text, line, fragment", TOML_ERRORS)
def test_toml_errors(text, line, fragment):
    with pytest.raises(VolfileError) as info:
        parse_toml(text, "g.toml")
    assert fragment in info.value.message
    assert info.value.line == line, str(info.value)
    assert info.value.filename == "g.toml"
    assert str(info.value).startswith("g.toml:" if not line else f"g.toml:{line}: ")


def test_check_volumes_on_specs_built_in_code():
    check_volumes([vol("a", options={"k": "v"}), vol("b", "x/y", {}, ["a"])])
    with pytest.raises(VolfileError, match="not defined prior to usage"):
        check_volumes([vol("b", "x/y", {}, ["a"]), vol("a", options={"k": "v"})])
    with pytest.raises(VolfileError, match="no volume defined"):
        check_volumes([])


# --- properties ----------------------------------------------------------------------------------

_CHARS = st.characters(exclude_characters="\n`", exclude_categories=("Cs",))
_TRICKY = st.sampled_from(["", " ", "#", "#x", "a b", '"', "\\", '\\"', "\t", "\r", "volume",
                           "type", "option", "subvolumes", "subvolumeS", "end-volume", "é ✓",
                           "\xa0", "\x0c", "a#b", "\u2028", "\x00"])
TEXT = st.one_of(st.text(_CHARS, max_size=12), _TRICKY,
                 st.lists(st.one_of(st.text(_CHARS, max_size=3), _TRICKY), max_size=4)
                 .map("".join))
NAME = TEXT.filter(bool)
TYPE = st.one_of(
    st.sampled_from(["storage/posix", "features/read-only", "debug/trace", "debug/io-stats",
                     "performance/write-behind", "features/locks", "debug/delay-gen",
                     "debug/error-gen"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,6}/[A-Za-z0-9][A-Za-z0-9_.+-]{0,6}",
                  fullmatch=True).filter(lambda t: t != "mount/fuse"))


@st.composite
def graphs(draw) -> list[VolumeSpec]:
    names = draw(st.lists(NAME, min_size=1, max_size=6, unique=True))
    volumes = []
    for i, name in enumerate(names):
        options = draw(st.dictionaries(NAME, TEXT, max_size=4))
        subs = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        if not options and not subs:
            options = {draw(NAME): draw(TEXT)}
        volumes.append(VolumeSpec(name, draw(TYPE), options, subs))
    return volumes


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_property_volfile_round_trip(volumes):
    check_volumes(volumes)
    text = format_volfile(volumes)
    parsed = parse_volfile(text)
    assert parsed == volumes
    assert [list(v.options) for v in parsed] == [list(v.options) for v in volumes]
    assert format_volfile(parsed) == text
    lines = [v.line for v in parsed]
    assert lines == sorted(lines) and lines[0] == 1


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_property_toml_round_trip(volumes):
    toml_text = format_toml(volumes)
    parsed = parse_toml(toml_text)
    assert parsed == volumes
    assert [list(v.options) for v in parsed] == [list(v.options) for v in volumes]
    text = format_volfile(volumes)
    assert format_volfile(parse_toml(format_toml(parse_volfile(text)))) == \
        format_volfile(parse_volfile(text))


@settings(max_examples=100, deadline=None)
@given(graphs(), st.sampled_from(["\n", "\r\n"]),
       st.lists(st.sampled_from([" ", "\t", "\n", "  # comment\n", "\r\n"]), min_size=1))
def test_property_layout_does_not_matter(volumes, newline, separators):
    """Re-lay out the canonical text: different whitespace, comments and line endings."""
    canonical = format_volfile(volumes)
    tokens = canonical.replace("\n    ", "\n").split("\n")
    relaid = ""
    for n, line in enumerate(tokens):
        relaid += line + separators[n % len(separators)].replace("\n", newline)
    assert parse_volfile(relaid + newline) == volumes


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(
    ["volume", "type", "option", "subvolumes", "end-volume", "a", "b", "x/y", "mount/fuse",
     '"q r"', '""', "#c", "\n", " ", "\r", '"', "\\", "`", "\t", "é", '"a\\"b"']), max_size=40))
def test_property_garbage_only_raises_volfile_error(tokens):
    text = " ".join(tokens)
    try:
        volumes = parse_volfile(text, "fuzz.vol")
    except VolfileError as err:
        assert err.filename == "fuzz.vol"
        assert 1 <= err.line <= text.count("\n") + 1
        assert str(err).startswith(f"fuzz.vol:{err.line}: ")
        return
    assert parse_volfile(format_volfile(volumes)) == volumes
    assert parse_toml(format_toml(volumes)) == volumes


def test_keywords_constant():
    assert KEYWORDS == {"volume", "type", "option", "subvolumes", "subvolumeS", "end-volume"}
