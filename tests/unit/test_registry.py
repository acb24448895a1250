"""The translator registry: types by name, plugins through entry points, hooks checked."""
import sys
import textwrap

import pluggy
import pytest

from xlators import Registry, Translator, UnknownTypeError, default_registry, hookimpl
from xlators.builtin import builtin_classes
from xlators.core.registry import PluginError


class AlphaBeta(Translator):
    """A test translator."""
    type = "test/alpha-beta"


class Gamma(Translator):
    type = "test/gamma"


class OtherAlphaBeta(Translator):
    type = "test/alpha-beta"


@pytest.fixture
def reg():
    return Registry(load_entrypoints=False)


def test_builtin_types_register_through_the_same_hook(reg):
    for cls in builtin_classes():
        assert reg.get(cls.type) is cls
        assert reg.origin(cls.type) == "builtin"
    assert reg.pm.get_plugin("builtin") is not None


def test_register_get_origin_contains(reg):
    reg.register(AlphaBeta, "mine")
    reg.register(Gamma)
    assert reg.get("test/alpha-beta") is AlphaBeta
    assert reg.origin("test/alpha-beta") == "mine"
    assert reg.origin("test/gamma") == "direct"
    assert "test/gamma" in reg and "test/nope" not in reg
    assert reg.types() == sorted(reg.types())
    assert {"test/alpha-beta", "test/gamma"} <= set(reg.types())


def test_unknown_type_lists_known_types_with_a_did_you_mean(reg):
    reg.register(AlphaBeta)
    reg.register(Gamma)
    with pytest.raises(UnknownTypeError) as info:
        reg.get("test/alpha-betta")
    msg = str(info.value)
    assert "unknown translator type 'test/alpha-betta'" in msg
    assert "(did you mean 'test/alpha-beta'?)" in msg
    assert "known types: " in msg and "test/gamma" in msg
    assert info.value.type_name == "test/alpha-betta"
    assert isinstance(info.value, LookupError)


def test_unknown_type_without_a_close_match_has_no_hint(reg):
    reg.register(Gamma)
    msg = str(pytest.raises(UnknownTypeError, reg.get, "zzzz/qqqqqqq").value)
    assert "did you mean" not in msg
    assert "test/gamma" in msg


def test_registering_the_same_class_twice_is_harmless(reg):
    reg.register(AlphaBeta, "one")
    reg.register(AlphaBeta, "one")
    assert reg.get("test/alpha-beta") is AlphaBeta


def test_two_classes_for_one_type_is_an_error_naming_both_origins(reg):
    reg.register(AlphaBeta, "first-plugin")
    with pytest.raises(ValueError) as info:
        reg.register(OtherAlphaBeta, "second-plugin")
    msg = str(info.value)
    assert "'test/alpha-beta' registered twice" in msg
    assert "first-plugin" in msg and "second-plugin" in msg
    assert reg.get("test/alpha-beta") is AlphaBeta


@pytest.mark.parametrize("bad", ["", "nocategory", "a/b/c"])
def test_a_type_must_be_category_slash_name(reg, bad):
    cls = type("Bad", (Translator,), {"type": bad})
    with pytest.raises(ValueError, match="must be 'category/name'"):
        reg.register(cls, "p")


def test_only_translator_subclasses_register(reg):
    with pytest.raises(TypeError, match="p: .* is not a Translator subclass"):
        reg.register(object, "p")
    with pytest.raises(TypeError, match="not a Translator subclass"):
        reg.register(AlphaBeta("x"), "p")


def test_default_registry_is_one_per_process():
    assert default_registry() is default_registry()


# -- plugins through entry points ----------------------------------------------------------

def _fake_dist(tmp_path, monkeypatch, dist, module, source):
    """Put a distribution ``dist`` on sys.path whose xlfs entry point is ``module``."""
    root = tmp_path / "site"
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[xlfs]\n{dist} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_an_entry_point_plugin_registers_its_types(tmp_path, monkeypatch):
    _fake_dist(tmp_path, monkeypatch, "xlfsfakegood", "xlfsfakegood_mod", """
        from xlators import Translator, hookimpl

        class Upper(Translator):
            '''upper-case things (a test plugin)'''
            type = "testplug/upper"

        @hookimpl
        def xlfs_register_xlators(register):
            register(Upper)
    """)
    reg = Registry()
    assert reg.get("testplug/upper").__module__ == "xlfsfakegood_mod"
    assert reg.origin("testplug/upper") == "xlfsfakegood"      # the entry point's name
    assert all(reg.origin(c.type) == "builtin" for c in builtin_classes())
    # Registries that skip entry points do not see it.
    assert "testplug/upper" not in Registry(load_entrypoints=False)


def test_a_misspelled_hook_is_caught_when_the_registry_loads(tmp_path, monkeypatch):
    _fake_dist(tmp_path, monkeypatch, "xlfsfakemisspelled", "xlfsfakemisspelled_mod", """
        from xlators import hookimpl

        @hookimpl
        def xlfs_register_xlator(register):      # missing the final "s"
            raise AssertionError("never called")
    """)
    with pytest.raises(PluginError) as info:
        Registry()
    assert "unknown hook 'xlfs_register_xlator'" in str(info.value)
    assert isinstance(info.value.__cause__, pluggy.PluginValidationError)


def test_a_hook_with_wrong_arguments_is_caught_when_the_registry_loads(tmp_path, monkeypatch):
    _fake_dist(tmp_path, monkeypatch, "xlfsfakeargs", "xlfsfakeargs_mod", """
        from xlators import hookimpl

        @hookimpl
        def xlfs_register_xlators(reg):
            raise AssertionError("never called")
    """)
    with pytest.raises(PluginError, match="plugin 'xlfsfakeargs'.*reg"):
        Registry()


def test_a_plugin_clashing_with_another_type_fails_at_load(tmp_path, monkeypatch):
    _fake_dist(tmp_path, monkeypatch, "xlfsfakeclash", "xlfsfakeclash_mod", """
        from xlators import Translator, hookimpl

        class One(Translator):
            type = "testplug/clash"

        class Two(Translator):
            type = "testplug/clash"

        @hookimpl
        def xlfs_register_xlators(register):
            register(One)
            register(Two)
    """)
    with pytest.raises(PluginError, match="'testplug/clash' registered twice: by xlfsfakeclash"):
        Registry()


def test_check_pending_catches_a_misspelled_hook_on_a_registry_built_by_hand(reg):
    """The same check, without entry points: what Registry runs at start."""
    class BadPlugin:
        @hookimpl
        def xlfs_register_xlator(self, register):
            pass

    reg.pm.register(BadPlugin(), name="bad")
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'xlfs_register_xlator'"):
        reg.pm.check_pending()


def test_an_unmarked_function_is_not_a_hook(reg):
    """Only @hookimpl functions are hooks: a plugin must use the marker (as documented)."""
    class Plugin:
        def xlfs_register_xlators(self, register):  # no @hookimpl
            register(Gamma)

    reg.pm.register(Plugin(), name="unmarked")
    reg.pm.check_pending()
    assert reg.pm.hook.xlfs_register_xlators.get_hookimpls()[0].plugin_name == "builtin"


def test_a_plugin_that_cannot_be_imported_is_named_in_one_line(tmp_path, monkeypatch):
    _fake_dist(tmp_path, monkeypatch, "xlfsfakebroken", "xlfsfakebroken_mod", """
        import xlfs_no_such_module_anywhere
    """)
    with pytest.raises(PluginError) as info:
        Registry()
    msg = str(info.value)
    assert msg == ("plugin 'xlfsfakebroken' (entry point xlfsfakebroken_mod) cannot be "
                   "loaded: ModuleNotFoundError: No module named "
                   "'xlfs_no_such_module_anywhere'"), msg
