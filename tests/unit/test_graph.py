"""Graph: built from volfile text with translators on a private registry; lifecycle order,
events, --xlator-option overrides, and the errors a user sees."""
import logging

import pytest

from xlators import Event, Graph, GraphError, Option, Registry, Translator
from xlators.core.graph import apply_overrides, parse_override
from xlators.core.volfile import parse_volfile

LOG: list = []


class Recorder(Translator):
    """Records its lifecycle calls and the events it sees into LOG."""
    type = "test/recorder"
    options = (
        Option.bool("fail-init", default=False, description="raise from init()"),
        Option.bool("fail-fini", default=False, description="raise from fini()"),
        Option.int("count", default=1, min=0, max=100),
        Option.str("label", default=""),
        Option.fops("include-ops", aliases=("include",)),
    )

    def init(self):
        if self.opts.fail_init:
            raise RuntimeError("no brick here")
        LOG.append(("init", self.name))

    def fini(self):
        LOG.append(("fini", self.name))
        if self.opts.fail_fini:
            raise RuntimeError("fini trouble")

    def notify(self, event, data=None, source=None):
        LOG.append((event, self.name, getattr(source, "name", source)))
        super().notify(event, data, source)


class Leaf(Recorder):
    type = "test/leaf"
    children_range = (0, 0)


class SlowLeaf(Recorder):
    """A leaf that answers PARENT_UP later (like a network client that connects)."""
    type = "test/slow-leaf"
    children_range = (0, 0)

    def notify(self, event, data=None, source=None):
        LOG.append((event, self.name, getattr(source, "name", source)))
        if event is not Event.PARENT_UP:
            super().notify(event, data, source)


class Peer(Translator):
    type = "test/peer"
    options = (Option.xlator("peer", description="another volume"),)


class Forgetful(Translator):
    type = "test/forgetful"

    async def forget(self, frame, inode):
        LOG.append(("forget", frame.unique, inode))


@pytest.fixture(autouse=True)
def clear_log():
    LOG.clear()
    yield
    LOG.clear()


@pytest.fixture
def reg():
    r = Registry(load_entrypoints=False)
    for cls in (Recorder, Leaf, SlowLeaf, Peer, Forgetful):
        r.register(cls, "test")
    return r


STACK = """\
volume a
    type test/leaf
    option label a
end-volume

volume b
    type test/leaf
    option label b
end-volume

volume mid
    type test/recorder
    option count 5
    subvolumes a b
end-volume

volume top
    type test/recorder
    option include "flush,lk"
    subvolumes mid
end-volume
"""


def build(reg, text=STACK, **kw):
    return Graph.from_text(text, "t.vol", registry=reg, **kw)


# -- building -----------------------------------------------------------------------------

def test_build_from_text(reg):
    g = build(reg)
    assert list(g.xlators) == ["a", "b", "mid", "top"]
    assert g.top is g["top"] and g.top.name == "top"          # the last volume
    assert g.top.parents == [g]
    assert g["mid"].children == [g["a"], g["b"]] and g["mid"].child is g["a"]
    assert g["a"].parents == [g["mid"]]
    assert g["mid"].opts.count == 5 and g["a"].opts.count == 1
    assert g["top"].opts.include_ops == {"flush", "lk"}
    assert all(xl.graph is g for xl in g.xlators.values())
    assert all(xl.itable is g.itable for xl in g.xlators.values())
    assert [(d, xl.name) for d, xl in g.walk()] == [(0, "top"), (1, "mid"), (2, "a"), (2, "b")]
    assert LOG == []           # building calls no init()


def test_build_from_file_and_toml(reg, tmp_path):
    vol = tmp_path / "s.vol"
    vol.write_text(STACK)
    assert list(Graph.from_file(str(vol), registry=reg).xlators) == ["a", "b", "mid", "top"]
    toml = tmp_path / "s.toml"
    toml.write_text('[[volume]]\nname = "x"\ntype = "test/leaf"\n'
                    '[volume.options]\ncount = 7\nfail-init = false\n')
    g = Graph.from_file(str(toml), registry=reg)
    assert g.top.opts.count == 7 and g.top.opts.fail_init is False


def test_the_volume_specs_given_are_not_changed(reg):
    volumes = parse_volfile(STACK, "t.vol")
    Graph(volumes, registry=reg, overrides=["*.count=9"])
    assert volumes[2].options == {"count": "5"}


def test_no_volume(reg):
    with pytest.raises(GraphError, match="defines no volume"):
        Graph([], registry=reg)


def test_a_shared_subvolume_has_two_parents(reg):
    g = build(reg, """
        volume shared type test/leaf option label s end-volume
        volume l type test/recorder subvolumes shared end-volume
        volume r type test/recorder subvolumes shared end-volume
        volume top type test/recorder subvolumes l r end-volume
    """)
    assert g["shared"].parents == [g["l"], g["r"]]


# -- lifecycle order --------------------------------------------------------------------------

def test_init_leaves_first_and_fini_in_reverse(reg):
    g = build(reg)
    g.init()
    assert LOG == [("init", "a"), ("init", "b"), ("init", "mid"), ("init", "top")]
    LOG.clear()
    g.fini()
    assert LOG == [("fini", "top"), ("fini", "mid"), ("fini", "b"), ("fini", "a")]
    LOG.clear()
    g.fini()                   # a second fini does nothing
    assert LOG == []


def test_a_failing_init_finis_the_ones_already_inited(reg):
    text = STACK.replace("option count 5", "option count 5\n    option fail-init on")
    g = build(reg, text)
    with pytest.raises(GraphError) as info:
        g.init()
    assert str(info.value) == ("t.vol:11: volume 'mid' (test/recorder): init failed: "
                               "no brick here")
    assert isinstance(info.value.__cause__, RuntimeError)
    # a and b were inited, then finied in reverse; mid (failed) and top (never inited) not.
    assert LOG == [("init", "a"), ("init", "b"), ("fini", "b"), ("fini", "a")]


def test_a_failing_fini_does_not_stop_the_others(reg, caplog):
    text = STACK.replace("option label b", "option label b\n    option fail-fini yes")
    g = build(reg, text)
    g.init()
    LOG.clear()
    with caplog.at_level(logging.ERROR, logger="xlfs.graph"):
        g.fini()
    assert LOG == [("fini", "top"), ("fini", "mid"), ("fini", "b"), ("fini", "a")]
    assert "volume 'b': fini failed" in caplog.text


# -- events -----------------------------------------------------------------------------------

def test_parent_up_goes_down_and_child_up_reaches_the_graph(reg):
    g = build(reg)
    seen = []
    g.listeners.append(lambda event, data, source: seen.append((event, source.name)))
    g.init()
    LOG.clear()
    assert g.state is None
    g.activate()
    downs = [(who, src) for ev, who, src in LOG if ev is Event.PARENT_UP]
    assert downs == [("top", g), ("mid", "top"), ("a", "mid"), ("b", "mid")]
    ups = [(who, src) for ev, who, src in LOG if ev is Event.CHILD_UP]
    # each leaf answers CHILD_UP; it travels up through mid and top to the graph
    assert ups == [("mid", "a"), ("top", "mid"), ("mid", "b"), ("top", "mid")]
    assert g.state is Event.CHILD_UP
    assert seen == [(Event.CHILD_UP, "top"), (Event.CHILD_UP, "top")]


def test_the_graph_waits_for_a_leaf_that_comes_up_later(reg):
    g = build(reg, """
        volume remote type test/slow-leaf option label r end-volume
        volume top type test/recorder subvolumes remote end-volume
    """)
    g.init()
    g.activate()
    assert g.state is None
    g["remote"].notify_parents(Event.CHILD_CONNECTING)
    assert g.state is Event.CHILD_CONNECTING
    g["remote"].notify_parents(Event.CHILD_UP)
    assert g.state is Event.CHILD_UP
    g["remote"].notify_parents(Event.CHILD_DOWN)
    assert g.state is Event.CHILD_DOWN


def test_upcalls_reach_the_graph_listeners(reg):
    g = build(reg)
    seen = []
    g.listeners.append(lambda event, data, source: seen.append((event, data)))
    g["a"].upcall("invalidate-something")
    assert seen == [(Event.UPCALL, "invalidate-something")]
    assert g.state is None      # an upcall is not a state change


async def test_forget_reaches_the_top_with_a_system_frame(reg):
    g = build(reg, "volume f type test/forgetful option x y end-volume")
    inode = g.itable.link(1234)
    await g.forget(inode)
    assert LOG == [("forget", 0, inode)]


# -- --xlator-option -------------------------------------------------------------------------

def test_parse_override():
    assert parse_override("vol.key=value") == ("vol", "key", "value")
    assert parse_override("*.a.b=x=y") == ("*", "a.b", "x=y")
    assert parse_override("v.k=") == ("v", "k", "")
    for bad in ["novalue", "vol.key", "=x", ".k=v", "vol.=v", "volkey=v"]:
        with pytest.raises(GraphError, match="expected VOLUME.KEY=VALUE"):
            parse_override(bad)


def test_overrides_with_globs(reg):
    g = build(reg, overrides=["*.count=9", "[ab].label=leaf", "t?p.include=open"])
    assert [xl.opts.count for xl in g.xlators.values()] == [9, 9, 9, 9]
    assert [g[n].opts.label for n in ("a", "b", "mid", "top")] == ["leaf", "leaf", "", ""]
    assert g["top"].opts.include_ops == {"open"}       # the alias, replaced in place
    assert g["mid"].given_options["count"] == "9"


def test_later_overrides_win(reg):
    g = build(reg, overrides=["mid.count=1", "m*.count=2"])
    assert g["mid"].opts.count == 2


def test_an_override_glob_that_matches_nothing_fails(reg):
    with pytest.raises(GraphError) as info:
        build(reg, overrides=["nosuch*.count=1"])
    assert str(info.value) == ("--xlator-option 'nosuch*.count=1': no volume matches "
                               "'nosuch*' (volumes: a, b, mid, top)")


def test_an_override_with_a_bad_value_says_so(reg):
    with pytest.raises(GraphError) as info:
        build(reg, overrides=["mid.count=lots"])
    msg = str(info.value)
    assert "--xlator-option" in msg
    assert "volume 'mid': option 'count': invalid value 'lots': not an integer" in msg


def test_an_override_of_an_unknown_key_is_not_fatal(reg):
    g = build(reg, overrides=["top.no-such-key=1"])
    assert g["top"].unknown_options == ["no-such-key"]


def test_apply_overrides_records_the_origin():
    volumes = parse_volfile(STACK, "t.vol")
    apply_overrides(volumes, ["mid.count=3"])
    assert volumes[2].options["count"] == "3" and volumes[2].option_lines["count"] == 0


# -- errors a user sees ------------------------------------------------------------------------

def test_an_unknown_key_is_logged_not_fatal(reg, caplog):
    text = STACK.replace("option count 5", "option count 5\n    option cuont 6")
    with caplog.at_level(logging.DEBUG, logger="xlfs.graph"):
        g = build(reg, text)
    assert g["mid"].unknown_options == ["cuont"]
    assert g["mid"].opts.count == 5
    assert "volume 'mid' (test/recorder): option 'cuont' is not known; ignored" in caplog.text


def test_a_bad_value_fails_with_file_and_line(reg):
    text = STACK.replace("option count 5", "option count 500")
    with pytest.raises(GraphError) as info:
        build(reg, text)
    assert str(info.value) == ("t.vol:13: volume 'mid': option 'count': invalid value '500': "
                               "above the maximum 100")


def test_a_bad_value_given_through_an_alias_has_the_option_line(reg):
    text = STACK.replace('option include "flush,lk"', 'option include "flush,frob"')
    with pytest.raises(GraphError) as info:
        build(reg, text)
    assert str(info.value).startswith("t.vol:19: ")


def test_a_bad_value_given_through_an_alias_fails(reg):
    text = STACK.replace('option include "flush,lk"', 'option include "flush,frob"')
    with pytest.raises(GraphError, match=r"^t\.vol:\d+: volume 'top': option 'include-ops': "
                                         r"invalid value 'flush,frob': unknown fop 'frob'"):
        build(reg, text)


def test_an_unknown_type_names_the_volume_and_the_known_types(reg):
    text = STACK.replace("type test/recorder\n    option count", "type test/recorderr\n"
                         "    option count")
    with pytest.raises(GraphError) as info:
        build(reg, text)
    msg = str(info.value)
    assert msg.startswith("t.vol:11: volume 'mid': unknown translator type 'test/recorderr' "
                          "(did you mean 'test/recorder'?); known types: ")
    assert "test/leaf" in msg and "\n" not in msg


def test_the_wrong_number_of_subvolumes(reg):
    with pytest.raises(GraphError) as info:
        build(reg, """volume a type test/leaf option label x end-volume
volume b type test/leaf option label y subvolumes a end-volume
""")
    assert str(info.value) == ("t.vol:2: volume 'b' (test/leaf): needs 0 subvolumes, has 1")


def test_an_xlator_option_naming_a_missing_volume(reg):
    text = STACK + """
volume watcher
    type test/peer
    option peer mdi
    subvolumes top
end-volume
"""
    with pytest.raises(GraphError) as info:
        build(reg, text)
    assert str(info.value) == ("t.vol:25: volume 'watcher': option 'peer': no volume named "
                               "'mdi'")


def test_an_xlator_option_naming_a_volume(reg):
    text = STACK + "volume watcher type test/peer option peer mid subvolumes top end-volume\n"
    assert build(reg, text)["watcher"].opts.peer == "mid"


def test_an_xlator_option_override_naming_a_missing_volume(reg):
    text = STACK + "volume watcher type test/peer option peer mid subvolumes top end-volume\n"
    with pytest.raises(GraphError, match="^--xlator-option: volume 'watcher': option 'peer': "
                                         "no volume named 'gone'"):
        build(reg, text, overrides=["watcher.peer=gone"])


def test_volfile_errors_propagate_with_file_and_line(reg):
    from xlators.core.volfile import VolfileError
    with pytest.raises(VolfileError, match=r"^t\.vol:2: volume 'x': subvolume 'y' is not "
                                           r"defined prior to usage"):
        build(reg, "volume x\n type test/recorder subvolumes y\nend-volume\n")
