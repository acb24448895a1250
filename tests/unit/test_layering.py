"""The layering of the project, read from the sources with ``ast`` (nothing is imported):

- nothing in ``xlators`` imports ``fuse_bridge``: not by an import statement, not by a
  string (``importlib.import_module("fuse_bridge.x")``, ``__import__``, a module name kept
  in a constant for later);
- no import cycles among the project's modules, lazy imports inside functions included
  (a cycle through a function-level import is a cycle all the same: each module needs the
  other, only the order of loading hides it).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The project's packages (the test suite is not checked: tests may import anything).
PACKAGES = ("xlators", "fuse_bridge", "benchmarks")
#: A string that names a module of the bridge: "fuse_bridge", "fuse_bridge.ctl", or an
#: entry-point value "fuse_bridge.cli:main".
BRIDGE_NAME = re.compile(r"fuse_bridge(\.[A-Za-z_]\w*)*(:[A-Za-z_][\w.]*)?")


@dataclass(frozen=True)
class Import:
    source: str          # the importing module
    target: str          # the imported module (a module of the project, or any name)
    line: int
    how: str             # "import", "string"
    typing_only: bool = False   # under ``if TYPE_CHECKING:`` (never executed)

    def where(self, modules: dict[str, Path]) -> str:
        return f"{modules[self.source].relative_to(ROOT)}:{self.line}"


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file of the packages."""
    modules: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _absolute(source: str, modules: dict[str, Path], module: Optional[str], level: int) -> str:
    if level == 0:
        return module or ""
    base = source.split(".")
    if not _is_package(source, modules):
        base.pop()
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


def imports_of(source: str, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import of ``source``: statements anywhere in the file (functions included),
    ``importlib.import_module`` / ``__import__`` calls with a literal name, and every
    string constant that names a bridge module.  Imports under ``if TYPE_CHECKING:`` are
    marked ``typing_only``."""
    tree = ast.parse(modules[source].read_text(encoding="utf-8"), str(modules[source]))
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        for target, how in _targets(source, modules, node):
            yield Import(source, target, node.lineno, how, id(node) in typing_only)


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _targets(source: str, modules: dict[str, Path], node: ast.AST) -> Iterator[tuple[str, str]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, "import"
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(source, modules, node.module, node.level)
        for alias in node.names:
            sub = f"{base}.{alias.name}" if base else alias.name
            # ``from pkg import mod`` imports the module; ``from mod import name`` imports
            # the module that defines the name.
            yield (sub if sub in modules else base), "import"
    elif isinstance(node, ast.Call) and _call_name(node) in ("import_module", "__import__"):
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            package = next((k.value.value for k in node.keywords if k.arg == "package"
                            and isinstance(k.value, ast.Constant)), None)
            name = arg.value
            if name.startswith(".") and isinstance(package, str):
                level = len(name) - len(name.lstrip("."))
                parts = package.split(".")
                name = ".".join(parts[:len(parts) - level + 1] + [name.lstrip(".")])
            yield name, "string"
    elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and BRIDGE_NAME.fullmatch(node.value)):
        yield node.value, "string"


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, Import]]:
    """module -> {imported project module -> the first import of it}."""
    graph: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for name in modules:
        for imp in imports_of(name, modules):
            if imp.typing_only:       # annotations only: no dependency when running
                continue
            target = imp.target
            while target and target not in modules:   # ``import a.b.name`` of a name
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].setdefault(target, imp)
    return graph


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycle_path(graph: dict[str, dict[str, Import]], component: list[str]) -> list[Import]:
    """One cycle through the component's first module, as the imports that make it."""
    members = set(component)
    start = component[0]
    # breadth-first from start back to start, staying inside the component
    prev: dict[str, Import] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w, imp in sorted(graph[v].items()):
            if w not in members:
                continue
            if w == start:
                path = [imp]
                while path[0].source != start:
                    path.insert(0, prev[path[0].source])
                return path
            if w not in prev:
                prev[w] = imp
                queue.append(w)
    return []


# -- the rules -------------------------------------------------------------------------------

def bridge_imports(modules: dict[str, Path]) -> list[Import]:
    """Each import of the bridge by a module of xlators (one per line)."""
    found: dict[tuple[str, int], Import] = {}
    for name in modules:
        if name.split(".")[0] != "xlators":
            continue
        for imp in imports_of(name, modules):
            if BRIDGE_NAME.fullmatch(imp.target):
                found.setdefault((imp.source, imp.line), imp)
    return list(found.values())


def test_xlators_never_imports_fuse_bridge():
    modules = project_modules()
    found = bridge_imports(modules)
    assert not found, "xlators must not import fuse_bridge:\n" + "\n".join(
        f"  {imp.where(modules)}: {imp.how} {imp.target}" for imp in found)


def test_no_import_cycles():
    modules = project_modules()
    graph = import_graph(modules)
    found = cycles(graph)
    lines = []
    for component in found:
        path = cycle_path(graph, component)
        lines.append("  " + " -> ".join([path[0].source] + [imp.target for imp in path])
                     + "  (" + ", ".join(imp.where(modules) for imp in path) + ")")
    assert not found, "import cycles among the project's modules:\n" + "\n".join(lines)


# -- the checks themselves find what they must ----------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project_modules(tmp_path, ("xlators", "fuse_bridge"))


@pytest.mark.parametrize("text", [
    "import fuse_bridge\n",
    "import fuse_bridge.session as s\n",
    "from fuse_bridge import abi\n",
    "from fuse_bridge.ops import HANDLERS\n",
    "def f():\n    from fuse_bridge import dump\n",
    "import importlib\nm = importlib.import_module('fuse_bridge.ctl')\n",
    "from importlib import import_module\nimport_module('fuse_bridge')\n",
    "m = __import__('fuse_bridge.abi')\n",
    "import importlib\nimportlib.import_module('.ctl', package='fuse_bridge')\n",
    "EXTENSIONS = ('other', 'fuse_bridge.ctl')\n",
    "SCRIPT = 'fuse_bridge.cli:main'\n",
])
def test_bridge_imports_are_found(tmp_path, text):
    modules = _tree(tmp_path, {"xlators/__init__.py": "", "xlators/x.py": text,
                               "fuse_bridge/__init__.py": "", "fuse_bridge/ctl.py": ""})
    assert [imp.source for imp in bridge_imports(modules)] == ["xlators.x"]


def test_text_that_mentions_the_bridge_is_no_import(tmp_path):
    modules = _tree(tmp_path, {"xlators/__init__.py": "", "xlators/x.py":
                               '"""Asked by fuse_bridge.ops (see fuse_bridge/notify.py)."""\n'
                               "# from fuse_bridge import abi\n"
                               "NOTE = 'the fuse_bridge decides'\n"})
    assert bridge_imports(modules) == []


def test_cycles_are_found(tmp_path):
    modules = _tree(tmp_path, {
        "xlators/__init__.py": "from .core.registry import hookimpl\n",
        "xlators/core/__init__.py": "",
        "xlators/core/registry.py": "def load():\n    from .. import builtin\n",
        "xlators/builtin.py": "from .core.registry import hookimpl\n",
        "xlators/leaf.py": "import xlators.core\n",
        "fuse_bridge/__init__.py": "",
        "fuse_bridge/a.py": "from . import b\n",
        "fuse_bridge/b.py": "import importlib\nimportlib.import_module('fuse_bridge.a')\n",
    })
    graph = import_graph(modules)
    assert cycles(graph) == [["fuse_bridge.a", "fuse_bridge.b"],
                             ["xlators.builtin", "xlators.core.registry"]]
    path = cycle_path(graph, ["xlators.builtin", "xlators.core.registry"])
    assert [(imp.source, imp.target) for imp in path] == [
        ("xlators.builtin", "xlators.core.registry"), ("xlators.core.registry", "xlators.builtin")]


def test_a_package_and_its_modules_make_no_cycle_by_themselves(tmp_path):
    modules = _tree(tmp_path, {"xlators/__init__.py": "from .core.types import Attr\n",
                               "xlators/core/__init__.py": "",
                               "xlators/core/types.py": "Attr = 1\n"})
    assert cycles(import_graph(modules)) == []


def test_type_checking_imports_make_no_cycle(tmp_path):
    modules = _tree(tmp_path, {"xlators/__init__.py": "", "xlators/a.py": "from . import b\n",
                               "xlators/b.py": "from typing import TYPE_CHECKING\n"
                                               "if TYPE_CHECKING:\n    from .a import A\n"})
    assert cycles(import_graph(modules)) == []
    assert [imp.typing_only for imp in imports_of("xlators.b", modules)
            if imp.target == "xlators.a"] == [True]


# -- how xlfsctl gets the bridge's subcommands without xlators naming the bridge -------------

def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:                          # Python < 3.11
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_bridge_declares_its_xlfsctl_subcommands():
    from xlators import ctl
    group = _pyproject()["project"]["entry-points"][ctl.EXTENSION_GROUP]
    assert "fuse_bridge.ctl" in group.values()
    import fuse_bridge.ctl
    assert callable(fuse_bridge.ctl.add_subcommands)


def test_xlfsctl_extensions_come_from_the_entry_points(monkeypatch):
    from importlib import metadata

    from xlators import ctl
    eps = [metadata.EntryPoint("x", "some.module", ctl.EXTENSION_GROUP),
           metadata.EntryPoint("y", "other.module:add", ctl.EXTENSION_GROUP),
           metadata.EntryPoint("x", "some.module", ctl.EXTENSION_GROUP)]
    found = (metadata.EntryPoints(eps) if hasattr(metadata, "EntryPoints")
             else {ctl.EXTENSION_GROUP: eps})                    # Python < 3.10
    monkeypatch.setattr(metadata, "entry_points", lambda: found)
    assert ctl.extension_modules() == ["other.module", "some.module"]
    monkeypatch.setattr(ctl, "EXTENSIONS", ("given",))
    assert ctl.extension_modules() == ["given"]
