"""Capabilities the bridge asks of a graph: declared on ``Translator`` (attributes and
methods with safe defaults), combined by the ``Graph`` methods of the same names, and
never guessed by the bridge (no ``getattr(xl, "handles_locks", False)``)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from xlators import Graph, Option, Registry, Translator
from xlators.core.registry import default_registry

ROOT = Path(__file__).resolve().parents[2]
#: Every capability of Translator (the attributes, then the methods).
CAPABILITIES = ("handles_locks", "passes_data_through", "posix_acl", "kills_privileges",
                "forget_needs_context", "needs_flush",
                "cancel_blocked", "passthrough_fd", "passthrough_blocker", "bricks")


class Leaf(Translator):
    type = "cap/leaf"
    children_range = (0, 0)
    options = (Option.str("label", ""),)


class FlushFreeLeaf(Leaf):
    type = "cap/flush-free-leaf"
    needs_flush = False


class AclLeaf(Leaf):
    type = "cap/acl-leaf"
    posix_acl = True
    kills_privileges = True


class LockTable(Translator):
    """Answers lk; withdraws the frames listed in ``waiting``."""
    type = "cap/locks"
    handles_locks = True

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.waiting: set = set()
        self.asked: list = []

    def cancel_blocked(self, frame):
        self.asked.append(frame)
        if frame in self.waiting:
            self.waiting.discard(frame)
            return True
        return False


class NotALockTable(Translator):
    """Has a cancel_blocked but does not declare handles_locks: never asked."""
    type = "cap/not-locks"

    def cancel_blocked(self, frame):
        raise AssertionError("asked a translator that handles no locks")


class DataBlind(Translator):
    type = "cap/data-blind"
    passes_data_through = True
    needs_flush = False


class FlushFree(Translator):
    type = "cap/flush-free"
    needs_flush = False


class FlushFreeLocks(LockTable):
    """Declares it needs no flush, but handles locks: FLUSH is what releases a closing
    owner's POSIX locks, so the graph needs it all the same."""
    type = "cap/flush-free-locks"
    needs_flush = False


def _registry() -> Registry:
    reg = Registry(load_entrypoints=False)
    for cls in (Leaf, AclLeaf, LockTable, NotALockTable, DataBlind, FlushFree,
                FlushFreeLocks, FlushFreeLeaf):
        reg.register(cls, "test")
    return reg


def _graph(*layers: str, leaves: tuple[str, ...] = ("cap/leaf",)) -> Graph:
    text = ""
    names = []
    for i, t in enumerate(leaves):
        text += f"volume leaf{i}\n    type {t}\n    option label x\nend-volume\n"
        names.append(f"leaf{i}")
    below = " ".join(names)
    for i, t in enumerate(layers):
        text += f"volume l{i}\n    type {t}\n    subvolumes {below}\nend-volume\n"
        below = f"l{i}"
    return Graph.from_text(text, registry=_registry())


def test_the_capabilities_are_declared_on_translator():
    assert set(Translator.CAPABILITY_FLAGS) == set(CAPABILITIES[:6])
    for name in CAPABILITIES[6:]:
        assert callable(getattr(Translator, name)), name


#: The one flag whose safe answer is True: an unknown translator may need FLUSH.
SAFE_TRUE = {"needs_flush"}


def test_the_defaults_are_the_safe_answers():
    for flag in Translator.CAPABILITY_FLAGS:
        assert getattr(Translator, flag) is (flag in SAFE_TRUE), flag
    xl = Leaf("leaf")
    assert xl.cancel_blocked(object()) is False
    assert xl.passthrough_fd(object()) is None
    assert "may change or must see file data" in xl.passthrough_blocker()


def test_locks_any_translator_declares_them():
    assert _graph().handles_locks() is False
    assert _graph("cap/not-locks").handles_locks() is False
    assert _graph("cap/locks", "cap/not-locks").handles_locks() is True


def test_flush_is_needed_unless_every_translator_declares_otherwise():
    leaf = ("cap/flush-free-leaf",)
    assert _graph("cap/flush-free", leaves=leaf).needs_flush() is False
    assert _graph("cap/flush-free", "cap/data-blind", leaves=leaf).flush_needed_by() == []
    # the default (a plugin that says nothing) needs it; so does a leaf that says nothing
    g = _graph("cap/flush-free", "cap/not-locks", leaves=leaf)
    assert g.needs_flush() is True
    assert g.flush_needed_by() == ["volume 'l1' (cap/not-locks): needs flush"]
    assert _graph("cap/flush-free").flush_needed_by() == [
        "volume 'leaf0' (cap/leaf): needs flush"]
    # handling locks needs it whatever the translator declares
    g = _graph("cap/flush-free-locks", leaves=leaf)
    assert g.needs_flush() is True
    assert g.flush_needed_by() == ["volume 'l0' (cap/flush-free-locks): handles locks"]


def test_cancel_blocked_asks_every_lock_translator():
    g = _graph("cap/locks", "cap/not-locks", "cap/locks")
    low, high = g["l0"], g["l2"]
    frame, other = object(), object()
    high.waiting.add(frame)
    assert g.cancel_blocked(other) is False
    assert low.asked == [other] and high.asked == [other]
    assert g.cancel_blocked(frame) is True
    assert g.cancel_blocked(frame) is False          # withdrawn already
    assert _graph().cancel_blocked(frame) is False   # no lock translator at all


def test_storage_capabilities_need_every_leaf():
    both = ("cap/acl-leaf", "cap/acl-leaf")
    assert _graph("cap/data-blind", leaves=both).posix_acl() is True    # every leaf does
    one = _graph(leaves=("cap/acl-leaf",))
    assert one.posix_acl() is True and one.kills_privileges() is True
    mixed = Graph.from_text("volume a\n type cap/acl-leaf\n option label x\nend-volume\n"
                            "volume b\n type cap/leaf\n option label x\nend-volume\n"
                            "volume top\n type cap/not-locks\n subvolumes a b\nend-volume\n",
                            registry=_registry())
    assert mixed.posix_acl() is False and mixed.kills_privileges() is False


def test_passthrough_is_asked_of_the_top():
    g = _graph("cap/data-blind", "cap/data-blind")
    assert g.passthrough_blocker() == g.top.passthrough_blocker()
    assert "volume 'leaf0' (cap/leaf) may change or must see file data" in \
        g.passthrough_blocker()
    assert g.passthrough_fd(object()) is None


def test_bricks_are_the_brick_options_unless_overridden(tmp_path):
    from xlators.core.graph import bricks
    reg = default_registry()
    text = (f"volume posix\n    type storage/posix\n    option directory {tmp_path}\n"
            "end-volume\n")
    g = Graph.from_text(text, registry=reg)
    assert bricks(g["posix"]) == g["posix"].bricks() == [("directory", str(tmp_path))]
    assert Leaf("leaf").bricks() == []

    class Mirror(Leaf):
        def bricks(self):
            return [("a", "/x"), ("b", "/y")]

    assert bricks(Mirror("m")) == [("a", "/x"), ("b", "/y")]


def test_builtin_translators_declare_what_the_bridge_needs():
    reg = default_registry()
    assert reg.get("features/locks").handles_locks is True
    assert reg.get("features/locks").cancel_blocked is not Translator.cancel_blocked
    assert reg.get("storage/gfapi").handles_locks is True
    posix = reg.get("storage/posix")
    assert posix.posix_acl is True and posix.kills_privileges is True
    assert reg.get("debug/io-stats").passes_data_through is True
    # FLUSH: what needs it (write errors reported at close, libgfapi's write-behind
    # pushed at close, the debug translators that log, fail or delay it) and what
    # declares it does not; features/locks needs it only while the kernel hands it
    # locks, which Graph.needs_flush counts
    needing = {"performance/write-behind", "storage/gfapi",
               "debug/trace", "debug/error-gen", "debug/delay-gen"}
    free = {"features/locks",
            "storage/posix", "storage/memory", "features/read-only", "debug/io-stats",
                 "meta/meta", "cluster/replicate", "cluster/afr", "cluster/distribute",
                 "cluster/dht", "performance/md-cache", "performance/nl-cache",
                 "performance/io-cache", "performance/quick-read", "performance/read-ahead",
                 "performance/readdir-ahead", "performance/open-behind",
                 "performance/io-threads"}
    from xlators.builtin import builtin_classes
    decided = {cls.type: cls.needs_flush for cls in builtin_classes()}
    assert set(decided) == needing | free, "a new built-in: decide whether it needs FLUSH"
    assert {t for t, needs in decided.items() if needs} == needing


def test_a_capability_flag_must_be_a_bool():
    with pytest.raises(TypeError, match=r"Bad.handles_locks must be True or False, not 'yes'"):
        class Bad(Translator):
            handles_locks = "yes"


def _capability_guesses(path: Path) -> list[str]:
    """``getattr(x, "<capability>", ...)`` / ``hasattr(x, "<capability>")`` calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in CAPABILITIES):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.id}(..., "
                         f"{node.args[1].value!r})")
    return found


def test_the_bridge_never_guesses_a_capability():
    paths = sorted((ROOT / "fuse_bridge").rglob("*.py")) + sorted(
        (ROOT / "xlators" / "core").glob("*.py"))
    found = [hit for path in paths for hit in _capability_guesses(path)]
    assert not found, "ask the Graph instead:\n" + "\n".join(found)


def test_a_guess_is_found(tmp_path):
    (tmp_path / "x.py").write_text('a = getattr(xl, "handles_locks", False)\n'
                                   'b = hasattr(xl, "cancel_blocked")\n'
                                   'c = getattr(xl, "name", "")\n')
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert _capability_guesses(tmp_path / "x.py") == [
            "x.py:1: getattr(..., 'handles_locks')", "x.py:2: hasattr(..., 'cancel_blocked')"]
    finally:
        ROOT = old
