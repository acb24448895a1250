"""xlfsctl: check, show and convert volfiles; list the translator types.

    xlfsctl check VOLFILE [--xlator-option VOL.KEY=VALUE ...] [--strict]
    xlfsctl graph VOLFILE [--xlator-option VOL.KEY=VALUE ...]
    xlfsctl convert VOLFILE --to toml|volfile [-o OUT]
    xlfsctl xlators [TYPE]
    xlfsctl rebalance VOLFILE [--xlator-option VOL.KEY=VALUE ...] [--volume NAME]
    xlfsctl status|statedump|profile|top MNT ...     # a live mount (xlators.ctl_mount)

``check`` and ``graph`` build the translator graph (so every option is parsed and
validated, and every type must be registered) but never call ``init()``: nothing touches a
brick.  Errors are one line, ``FILE:LINE: reason``, with exit status 1.

Adding a subcommand is one function decorated with :func:`subcommand`; it receives the
argparse sub-parsers object, adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning the exit status::

    @subcommand
    def add_hello(sub):
        p = sub.add_parser("hello", help="say hello")
        p.set_defaults(func=lambda args: print("hello") or 0)

Packages outside ``xlators`` (the FUSE bridge's ``dump-decode``) add subcommands without
``xlators`` knowing them: a distribution declares its module in the ``xlfs.ctl`` entry-point
group (xlfs's own pyproject.toml names ``fuse_bridge.ctl``), and each such module that can
be imported provides ``add_subcommands(sub)``::

    [project.entry-points."xlfs.ctl"]
    bridge = "fuse_bridge.ctl"
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Callable, Iterable, Optional, Sequence

from .ctl_mount import add_subcommands as add_mount_subcommands
from .core.docgen import (children_text, default_text, origin_label, overridden_text, summary_of,
                          volfile_example)
from .core.graph import Graph, GraphError
from .core.hooks import entry_points
from .core.registry import PluginError, Registry, default_registry
from .core.translator import Translator
from .core.volfile import (VolfileError, VolumeSpec, format_toml, format_volfile, load_volfile,
                           quote_word)

PROG = "xlfsctl"

#: Functions that add one subcommand each (see the module docstring).
SUBCOMMANDS: list[Callable[[Any], None]] = []

#: The entry-point group naming modules that add subcommands with ``add_subcommands(sub)``.
EXTENSION_GROUP = "xlfs.ctl"
#: Those modules by name; None (the default): the ``xlfs.ctl`` entry points installed.
EXTENSIONS: Optional[tuple[str, ...]] = None


class CtlError(Exception):
    """A failure to report as one line (the text as is) with exit status 1."""


def subcommand(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    SUBCOMMANDS.append(fn)
    return fn


# -- shared helpers ----------------------------------------------------------------------

def _registry(args: argparse.Namespace) -> Registry:
    reg = getattr(args, "registry", None)
    if reg is not None:
        return reg
    try:
        return default_registry()
    except PluginError as exc:  # a plugin that fails to import or misspells a hook
        raise CtlError(f"{PROG}: loading the translator plugins failed: {exc}") from None
    except Exception as exc:
        raise CtlError(f"{PROG}: loading the translator plugins failed: "
                       f"{type(exc).__name__}: {exc}") from None


def _load(path: str) -> list[VolumeSpec]:
    try:
        return load_volfile(path)
    except OSError as exc:
        raise CtlError(f"{path}: {exc.strerror or exc}") from None


def _build(args: argparse.Namespace) -> Graph:
    volumes = _load(args.volfile)
    return Graph(volumes, registry=_registry(args), overrides=args.xlator_option or ())


def _spec(graph: Graph, name: str) -> VolumeSpec:
    return next(v for v in graph.volumes if v.name == name)


def _where(spec: VolumeSpec, key: Optional[str] = None) -> str:
    line = spec.option_lines.get(key, spec.line) if key is not None else spec.line
    return "--xlator-option" if line == 0 else f"{spec.filename}:{line}"


def graph_warnings(graph: Graph, overrides: Iterable[str] = ()) -> list[str]:
    """Unknown option keys and dangling volumes, one ``FILE:LINE: warning: ...`` each
    (the same lines the mount logs: :meth:`Graph.warnings`)."""
    return graph.warnings(overrides)


def _quote(value: str) -> str:
    try:
        return quote_word(value)
    except ValueError:
        return repr(value)


def option_lines(xl: Translator, spec: VolumeSpec) -> list[str]:
    """``key = value  (where it comes from)`` for every declared and every given option."""
    out = []
    given = xl.given_options
    for opt in xl.options:
        used = [name for name in opt.names if name in given]
        if used:
            name = used[-1]
            line = spec.option_lines.get(name)
            origin = "--xlator-option" if line == 0 else (f"line {line}" if line else "given")
            if name != opt.key:
                origin += f", as '{name}'"
            out.append(f"{opt.key} = {_quote(given[name])}  ({origin})")
        elif opt.default is not None:
            value = _quote(opt.default) if opt.default else '""'
            out.append(f"{opt.key} = {value}  (default)")
        else:
            out.append(f"{opt.key}  (unset)")
    for key in xl.unknown_options:
        out.append(f"{key} = {_quote(given[key])}  (unknown option: ignored)")
    return out


def render_tree(graph: Graph, show_defaults: bool = True) -> str:
    """The graph from the top as an indented tree with each volume's options."""
    lines: list[str] = []
    shown: set[str] = set()

    def rec(xl: Translator, prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("`-- " if last else "|-- ")
        head = f"{prefix}{branch}{xl.name} ({xl.type})"
        child_prefix = prefix if root else prefix + ("    " if last else "|   ")
        if xl.name in shown:
            lines.append(head + "  (shown above)")
            return
        shown.add(xl.name)
        lines.append(head)
        spec = _spec(graph, xl.name)
        bar = "|   " if xl.children else "    "
        for text in option_lines(xl, spec):
            if show_defaults or not text.endswith(("(default)", "(unset)")):
                lines.append(f"{child_prefix}{bar}{text}")
        for i, child in enumerate(xl.children):
            rec(child, child_prefix, i == len(xl.children) - 1, False)

    rec(graph.top, "", True, True)
    dangling = [xl for xl in graph.xlators.values() if xl is not graph.top and not xl.parents]
    for xl in dangling:
        lines.append("")
        lines.append("not reachable from the top (dangling):")
        rec(xl, "", True, True)
    return "\n".join(lines) + "\n"


# -- subcommands -------------------------------------------------------------------------

def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--xlator-option", action="append", default=[], metavar="VOL.KEY=VALUE",
                   help="set option KEY of every volume whose name matches the glob VOL "
                        "(repeatable), as the mount command does")


@subcommand
def add_check(sub: Any) -> None:
    p = sub.add_parser("check", help="validate a volfile without touching any brick",
                       description="Parse VOLFILE (or its TOML form), build the graph and "
                                   "validate every option, without calling init().")
    p.add_argument("volfile", metavar="VOLFILE")
    _add_overrides(p)
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    graph = _build(args)
    warnings = graph_warnings(graph, args.xlator_option or ())
    for w in warnings:
        print(w, file=sys.stderr)
    if warnings and args.strict:
        print(f"{args.volfile}: {len(warnings)} warning(s), failing because of --strict",
              file=sys.stderr)
        return 1
    print(f"{args.volfile}: ok ({len(graph.xlators)} volumes, top '{graph.top.name}')")
    return 0


@subcommand
def add_graph(sub: Any) -> None:
    p = sub.add_parser("graph", help="show the graph as a tree with every option",
                       description="Show the translator graph from the top, each volume with "
                                   "its type and options (given, default or unset).")
    p.add_argument("volfile", metavar="VOLFILE")
    _add_overrides(p)
    p.add_argument("--no-defaults", action="store_true",
                   help="show only the options the volfile sets")
    p.set_defaults(func=run_graph)


def run_graph(args: argparse.Namespace) -> int:
    graph = _build(args)
    for w in graph_warnings(graph, args.xlator_option or ()):
        print(w, file=sys.stderr)
    sys.stdout.write(render_tree(graph, show_defaults=not args.no_defaults))
    return 0


@subcommand
def add_convert(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert between the volfile and TOML forms",
                       description="Rewrite VOLFILE (a volfile, or TOML if it ends in .toml) "
                                   "in the other form. Comments are not carried over.")
    p.add_argument("volfile", metavar="VOLFILE")
    p.add_argument("--to", required=True, choices=("toml", "volfile"))
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    volumes = _load(args.volfile)
    try:
        text = format_toml(volumes) if args.to == "toml" else format_volfile(volumes)
    except ValueError as exc:
        raise CtlError(f"{args.volfile}: cannot be written as a {args.to}: {exc}") from None
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    tmp = f"{args.output}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.output)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CtlError(f"{args.output}: {exc.strerror or exc}") from None
    return 0


@subcommand
def add_rebalance(sub: Any) -> None:
    p = sub.add_parser("rebalance", help="spread a distribute volume over all its children",
                       description="Offline (nothing may mount the bricks meanwhile): give "
                                   "every directory of each cluster/distribute volume of "
                                   "VOLFILE a layout over all its children and move the "
                                   "files there. Safe to interrupt and run again.")
    p.add_argument("volfile", metavar="VOLFILE")
    _add_overrides(p)
    p.add_argument("--volume", help="only this distribute volume")
    p.add_argument("-v", "--verbose", action="store_true", help="print every directory")
    p.set_defaults(func=run_rebalance)


def run_rebalance(args: argparse.Namespace) -> int:
    from .cluster.dht_rebalance import rebalance_graph
    graph = _build(args)
    say = (lambda msg: print(msg, flush=True)) if args.verbose else None
    try:
        results = rebalance_graph(graph, args.volume, say)
    except ValueError as exc:
        raise CtlError(f"{args.volfile}: {exc}") from None
    for name, st in results.items():
        print(f"{name}: {st.directories} directories, {st.files_moved} files moved "
              f"({st.bytes_moved} bytes), {st.links_removed} link files removed, "
              f"{st.skipped_hardlinked} hard-linked files left in place")
    return 0


@subcommand
def add_xlators(sub: Any) -> None:
    p = sub.add_parser("xlators", help="list the translator types (plugins included)",
                       description="Without TYPE: every registered type with the plugin that "
                                   "provides it. With TYPE: its options and fops.")
    p.add_argument("type", nargs="?", metavar="TYPE")
    p.set_defaults(func=run_xlators)


def run_xlators(args: argparse.Namespace) -> int:
    reg = _registry(args)
    if args.type:
        try:
            cls = reg.get(args.type)
        except LookupError as exc:
            raise CtlError(f"{PROG}: {exc.args[0] if exc.args else exc}") from None
        sys.stdout.write(describe_type(reg, args.type, cls))
        return 0
    types = reg.types()
    if not types:
        print("(no translator types are registered)")
        return 0
    rows = [(t, origin_label(reg, t), summary_of(reg.get(t))) for t in types]
    w0 = max(len(r[0]) for r in rows + [("TYPE", "", "")])
    w1 = max(len(r[1]) for r in rows + [("", "PLUGIN", "")])
    print(f"{'TYPE':<{w0}}  {'PLUGIN':<{w1}}  SUMMARY")
    for t, origin, summary in rows:
        print(f"{t:<{w0}}  {origin:<{w1}}  {summary}".rstrip())
    return 0


def describe_type(reg: Registry, type_name: str, cls: type) -> str:
    out = [f"{type_name}: {summary_of(cls)}" if summary_of(cls) else type_name,
           f"  plugin:     {origin_label(reg, type_name)}",
           f"  class:      {cls.__module__}.{cls.__qualname__}",
           f"  subvolumes: {children_text(cls)}"]
    fops = overridden_text(cls)
    out.append("  fops:       " + (fops if fops != "none" else
                                   "none overridden (every fop passes to the first child)"))
    out.append("")
    if cls.options:
        out.append("options:")
        for opt in cls.options:
            out.append(f"  {opt.key}")
            out.append(f"      type:    {opt.describe_type()}")
            out.append(f"      default: {default_text(opt)}")
            if opt.aliases:
                out.append(f"      aliases: {', '.join(opt.aliases)}")
            if opt.description:
                out.append(f"      {' '.join(opt.description.split())}")
    else:
        out.append("options: none")
    example = volfile_example(cls)
    if example:
        out.append("")
        out.append("example:")
        out += ["    " + line if line else "" for line in example.splitlines()]
    return "\n".join(out) + "\n"


# -- main ----------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def extension_modules() -> list[str]:
    """The modules that add subcommands: :data:`EXTENSIONS`, or the entry points."""
    if EXTENSIONS is not None:
        return list(EXTENSIONS)
    names = [ep.value.partition(":")[0].strip() for ep in entry_points(EXTENSION_GROUP)]
    return sorted(set(names))


def _extensions(sub: Any) -> None:
    for name in extension_modules():
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # the extension is not installed
            raise
        add = getattr(mod, "add_subcommands", None)
        if add is not None:
            add(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Check, show and convert xlfs volfiles; list translator types.")
    parser.add_argument("--traceback", action="store_true",
                        help="show a Python traceback for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    add_mount_subcommands(sub)       # status, statedump, profile, top on a mountpoint
    _extensions(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None, *, registry: Optional[Registry] = None) -> int:
    """Run xlfsctl; returns the exit status.  ``registry`` replaces the default one (tests)."""
    try:
        parser = build_parser()
    except Exception as exc:
        print(f"{PROG}: loading a subcommand extension failed: {type(exc).__name__}: "
              f"{_one_line(exc)}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    args.registry = registry
    try:
        return int(func(args) or 0)
    except (CtlError, VolfileError, GraphError) as exc:
        print(_one_line(exc), file=sys.stderr)
        return 1
    except BrokenPipeError:  # xlfsctl ... | head
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1
    except OSError as exc:
        where = exc.filename if exc.filename else PROG
        print(f"{where}: {exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        print(f"{PROG}: unexpected error: {type(exc).__name__}: {_one_line(exc)} "
              f"(run with --traceback for details)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
