"""Option declarations: every type's accepted and refused values, messages, aliases, ranges,
defaults, and reconfigure()."""
import pytest

from xlators import FOP_NAMES, Option, OptionError, Opts, Translator
from xlators.core.options import resolve_options

# -- accepted values, per type -------------------------------------------------------------

ACCEPTED = [
    (Option.bool("b"), [("yes", True), ("NO", False), ("On", True), ("off", False),
                        ("true", True), ("FALSE", False), ("enable", True), ("disable", False),
                        ("1", True), ("0", False), (" yes ", True)]),
    (Option.int("i"), [("0", 0), ("42", 42), ("-7", -7), ("0x10", 16), ("0o17", 15),
                       (" 5 ", 5)]),
    (Option.size("s"), [("0", 0), ("512", 512), ("1B", 1), ("4KB", 4096), ("4k", 4096),
                        ("4KiB", 4096), ("1MB", 1 << 20), ("2m", 2 << 20), ("1MiB", 1 << 20),
                        ("1GB", 1 << 30), ("1g", 1 << 30), ("1TB", 1 << 40), ("1PB", 1 << 50),
                        ("1.5KB", 1536), ("4 MB", 4 << 20)]),
    (Option.percent("p"), [("0", 0.0), ("10", 10.0), ("10%", 10.0), ("100%", 100.0),
                           ("12.5%", 12.5)]),
    (Option.time("t"), [("2", 2.0), ("2s", 2.0), ("2sec", 2.0), ("500ms", 0.5),
                        ("250us", 0.00025), ("3m", 180.0), ("2min", 120.0), ("1h", 3600.0),
                        ("1hr", 3600.0), ("1d", 86400.0), ("2days", 172800.0),
                        ("1w", 604800.0), ("1wk", 604800.0), ("1.5s", 1.5)]),
    (Option.double("d"), [("1.5", 1.5), ("-2", -2.0), ("1e3", 1000.0), ("0", 0.0)]),
    (Option.str("x"), [("anything at all", "anything at all"), ("", "")]),
    (Option.str("mode", values=("fast", "Safe")), [("fast", "fast"), ("FAST", "fast"),
                                                   ("safe", "Safe")]),
    (Option.path("dir"), [("/srv/brick", "/srv/brick"), ("/", "/"),
                          ("/with spaces/x", "/with spaces/x")]),
    (Option.xlator("peer"), [("posix", "posix")]),
    (Option.fops("f"), [("writev", frozenset({"writev"})),
                        ("WRITEV,Flush", frozenset({"writev", "flush"})),
                        ("writev flush", frozenset({"writev", "flush"})),
                        ("stat,fstat", frozenset({"getattr"})),
                        ("write,ftruncate", frozenset({"writev", "setattr"})),
                        ("", frozenset(FOP_NAMES))]),
]


@pytest.mark.parametrize("opt,text,value", [
    pytest.param(opt, text, value, id=f"{opt.type}-{text!r}")
    for opt, cases in ACCEPTED for text, value in cases])
def test_accepted_values(opt, text, value):
    got = opt.parse(text, "vol")
    assert got == pytest.approx(value) if isinstance(value, float) else got == value
    assert type(got) is type(value)


REFUSED = [
    (Option.bool("b"), ["maybe", "", "2", "yess"], "not a boolean"),
    (Option.int("i"), ["", "1.5", "ten", "0x", "08"], "not an integer"),
    (Option.size("s"), ["", "-1", "4XB", "MB", "1 2"], "not a size"),
    (Option.percent("p"), ["", "ten", "%"], "not a percentage"),
    (Option.percent("p"), ["101", "-1%", "150%"], "between 0 and 100"),
    (Option.time("t"), ["", "-1", "5 parsecs", "s"], "not a time"),
    (Option.double("d"), ["", "one", "1,5"], "not a number"),
    (Option.str("mode", values=("fast", "safe")), ["slow", ""], "allowed values: fast, safe"),
    (Option.path("dir"), ["relative/dir", "", "~/x"], "not an absolute path"),
    (Option.fops("f"), ["writev,frobnicate"], "unknown fop 'frobnicate'; known: lookup"),
]


@pytest.mark.parametrize("opt,text,reason", [
    pytest.param(opt, text, reason, id=f"{opt.type}-{text!r}")
    for opt, texts, reason in REFUSED for text in texts])
def test_refused_values_name_volume_option_value_and_reason(opt, text, reason):
    with pytest.raises(OptionError) as info:
        opt.parse(text, "my-vol", "my.vol:7")
    err = info.value
    assert str(err).startswith(f"my.vol:7: volume 'my-vol': option '{opt.key}': "
                               f"invalid value '{text}': ")
    assert reason in str(err)
    assert (err.volume, err.key, err.value) == ("my-vol", opt.key, text)
    assert isinstance(err, ValueError)


def test_message_without_a_location():
    err = pytest.raises(OptionError, Option.int("n").parse, "x", "v").value
    assert str(err) == "volume 'v': option 'n': invalid value 'x': not an integer"


# -- ranges ---------------------------------------------------------------------------------

@pytest.mark.parametrize("opt,ok,low,high", [
    (Option.int("n", min=1, max=10), ["1", "10", "0x5"], "0", "11"),
    (Option.size("s", min=4096, max=1 << 20), ["4KB", "1MB"], "4095", "2MB"),
    (Option.double("d", min=-1.5, max=1.5), ["-1.5", "1.5"], "-1.6", "1.6"),
    (Option.time("t", min=0.001, max=60), ["1ms", "1m"], "500us", "61s"),
    (Option.percent("p", min=5, max=50), ["5%", "50"], "4.9%", "51%"),
])
def test_min_and_max(opt, ok, low, high):
    for text in ok:
        opt.parse(text, "v")
    with pytest.raises(OptionError, match=f"invalid value '{low}': below the minimum"):
        opt.parse(low, "v")
    with pytest.raises(OptionError, match=f"invalid value '{high}': above the maximum"):
        opt.parse(high, "v")


def test_describe_type():
    assert Option.bool("b").describe_type() == "bool"
    assert Option.int("n", min=1, max=10).describe_type() == "int [1..10]"
    assert Option.int("n", min=0).describe_type() == "int [0..]"
    assert Option.str("m", values=("a", "b")).describe_type() == "str (a|b)"


def test_custom_parser():
    opt = Option("mode", "octal", parser=lambda text: int(text, 8))
    assert opt.parse("755", "v") == 0o755
    with pytest.raises(OptionError, match="option 'mode': invalid value '9'"):
        opt.parse("9", "v")


def test_an_unknown_declared_type_fails_when_a_value_is_parsed():
    with pytest.raises(OptionError, match="unknown option type 'colour'"):
        Option("c", "colour").parse("red", "v")


# -- declarations ---------------------------------------------------------------------------

def test_constructors_store_defaults_as_volfile_text():
    assert Option.bool("b", default=True).default == "on"
    assert Option.bool("b", default=False).default == "off"
    assert Option.bool("b").default is None
    assert Option.int("i", default=5).default == "5"
    assert Option.size("s", default="4MB").default == "4MB"
    assert Option.percent("p", default=10).default == "10"
    assert Option.time("t", default=0.5).default == "0.5"
    assert Option.double("d", default=1.25).default == "1.25"
    assert Option.fops("f").default == ""
    assert Option.str("s").default is None


def test_attr_names_and_aliases():
    opt = Option.fops("include-ops", aliases=("include",))
    assert opt.attr == "include_ops"
    assert opt.names == ("include-ops", "include")
    assert Option.str("diagnostics.log-level").attr == "diagnostics_log_level"


def test_options_are_immutable_and_comparable():
    opt = Option.int("n", default=1)
    with pytest.raises(Exception):
        opt.key = "m"
    assert opt == Option.int("n", default=1)
    assert hash(opt) == hash(Option.int("n", default=1))


# -- resolving a volume's options --------------------------------------------------------------

DECLARED = (
    Option.bool("flag", default=True, description="a flag"),
    Option.int("count", min=0),
    Option.fops("include-ops", aliases=("include", "include-fops")),
    Option.size("cache-size", default="4MB"),
    Option.str("log.level", default="INFO", values=("DEBUG", "INFO")),
)


def test_defaults_fill_in_and_unset_is_none():
    opts = resolve_options(DECLARED, {}, "v")
    assert opts.flag is True and opts["flag"] is True
    assert opts.count is None
    assert opts.include_ops == frozenset(FOP_NAMES)     # fops default "" means all
    assert opts.cache_size == 4 << 20
    assert opts.log_level == "INFO"
    assert opts.given == frozenset()
    assert "count" in opts and "nope" not in opts
    assert dict(opts.items())["cache-size"] == 4 << 20
    assert "Opts(" in repr(opts)


def test_given_values_and_the_given_set():
    opts = resolve_options(DECLARED, {"flag": "off", "count": "3"}, "v")
    assert opts.flag is False and opts.count == 3
    assert opts.given == {"flag", "count"}    # "unset" is not the same as "off"


def test_an_alias_sets_the_option():
    opts = resolve_options(DECLARED, {"include": "flush"}, "v")
    assert opts.include_ops == {"flush"}
    assert opts.given == {"include-ops"}
    opts = resolve_options(DECLARED, {"include-fops": "LK"}, "v")
    assert opts["include-ops"] == {"lk"}


def test_key_and_alias_both_given_the_last_one_wins():
    opts = resolve_options(DECLARED, {"include": "flush", "include-ops": "lk"}, "v")
    assert opts.include_ops == {"lk"}


def test_unknown_keys_are_reported_not_fatal():
    unknown = []
    opts = resolve_options(DECLARED, {"bogus": "1", "flag": "no", "other": "x"}, "v",
                           on_unknown=unknown.append)
    assert unknown == ["bogus", "other"]
    assert opts.flag is False
    resolve_options(DECLARED, {"bogus": "1"}, "v")     # no callback: silently ignored


def test_a_bad_value_names_where_it_came_from():
    lines = {"count": "f.vol:12"}
    with pytest.raises(OptionError) as info:
        resolve_options(DECLARED, {"count": "-1"}, "vol", where=lambda k: lines.get(k, "?"))
    assert str(info.value) == ("f.vol:12: volume 'vol': option 'count': invalid value '-1': "
                               "below the minimum 0")


def test_a_bad_default_is_reported_as_the_default():
    with pytest.raises(OptionError, match="^default: volume 'v': option 'n': invalid value "
                                          "'lots': not an integer"):
        resolve_options((Option.int("n", default="lots"),), {}, "v")


def test_opts_object():
    opts = Opts({"a-b": 1, "c.d": 2}, given=["a-b"])
    assert opts.a_b == 1 and opts.c_d == 2 and opts["c.d"] == 2
    assert opts.given == {"a-b"}


# -- through a translator, and reconfigure -----------------------------------------------------

class Knobs(Translator):
    """A test translator with options."""
    type = "test/knobs"
    options = DECLARED

    def __init__(self, *args, **kw):
        self.seen = []
        super().__init__(*args, **kw)

    def reconfigured(self, old):
        self.seen.append((old, self.opts))


def test_translator_parses_at_construction():
    xl = Knobs("k", [], {"count": "0x10", "unknown-key": "1"})
    assert xl.opts.count == 16 and xl.opts.flag is True
    assert xl.unknown_options == ["unknown-key"]
    assert xl.given_options == {"count": "0x10", "unknown-key": "1"}


def test_translator_bad_value_message_uses_option_where():
    with pytest.raises(OptionError) as info:
        Knobs("k", [], {"flag": "perhaps"}, option_where=lambda key: f"x.vol:{len(key)}")
    assert str(info.value).startswith("x.vol:4: volume 'k': option 'flag': invalid value "
                                      "'perhaps': not a boolean")


def test_reconfigure_applies_new_values_and_calls_the_hook():
    xl = Knobs("k", [], {"count": "1"})
    before = xl.opts
    xl.reconfigure({"count": "2", "flag": "off"})
    assert xl.opts.count == 2 and xl.opts.flag is False
    assert xl.given_options == {"count": "2", "flag": "off"}
    assert xl.seen == [(before, xl.opts)]
    xl.reconfigure({})                       # back to the defaults
    assert xl.opts.count is None and xl.opts.flag is True


def test_reconfigure_validates_everything_before_changing_anything():
    xl = Knobs("k", [], {"count": "1", "flag": "on"})
    before, given = xl.opts, dict(xl.given_options)
    with pytest.raises(OptionError, match="volume 'k': option 'count': invalid value '-5'"):
        xl.reconfigure({"flag": "off", "count": "-5"})    # the good value is not applied
    assert xl.opts is before
    assert xl.opts.flag is True and xl.opts.count == 1
    assert xl.given_options == given
    assert xl.seen == []
