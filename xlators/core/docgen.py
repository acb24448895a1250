"""Reference docs generated from the declarations, so that they cannot drift.

``docs/volfile.md`` ends with a section between two markers that this module writes: every
built-in translator type with its options (from each class's ``options`` declarations) and
the fop table (from :mod:`xlators.core.fops`).  Regenerate it after changing a declaration::

    python -m xlators.core.docgen --write      # rewrite the generated part of docs/volfile.md
    python -m xlators.core.docgen --check      # exit 1 if it is out of date (tests do this)
    python -m xlators.core.docgen              # print the generated part

The docs list the built-in translators only (a registry with no entry points loaded), so
that the file does not depend on which plugins happen to be installed.  ``xlfsctl xlators``
shows plugins too, from the same helpers.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .fops import FOP_ALIASES, FOPS, NO_ERROR_FOPS
from .options import Option
from .registry import Registry

__all__ = ["BEGIN", "END", "summary_of", "volfile_example", "children_text", "origin_label",
           "overridden_text", "default_text",
           "options_markdown", "fops_markdown", "generated_section", "replace_generated",
           "default_doc_path", "main"]

BEGIN = "<!-- BEGIN GENERATED OPTIONS -->"
END = "<!-- END GENERATED OPTIONS -->"


# -- per-type facts shared with xlfsctl ------------------------------------------------

def summary_of(cls: type) -> str:
    """The one-line summary of a translator class, without a leading ``type:`` prefix."""
    text = cls.describe().strip()
    prefix = f"{cls.type}:"
    if text.startswith(prefix):
        text = text[len(prefix):].strip()
    return text


def volfile_example(cls: type) -> Optional[str]:
    """The first ``volume ... end-volume`` block of the class's or module's docstring."""
    for doc in (inspect.getdoc(cls), inspect.getdoc(inspect.getmodule(cls))):
        if not doc:
            continue
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("volume "):
                for j in range(i, len(lines)):
                    if lines[j].strip() == "end-volume":
                        return textwrap.dedent("\n".join(lines[i:j + 1]))
                break
    return None


def children_text(cls: type) -> str:
    """``children_range`` in words: "none", "exactly 1", "1 or more", "2 to 4"."""
    lo, hi = cls.children_range
    if hi is None:
        return "any number" if lo == 0 else f"{lo} or more"
    if lo == hi:
        return "none" if lo == 0 else f"exactly {lo}"
    return f"{lo} to {hi}"


def origin_label(registry: Registry, type_name: str) -> str:
    """The plugin that registered ``type_name``, with its distribution when known."""
    origin = registry.origin(type_name)
    try:
        for plugin, dist in registry.pm.list_plugin_distinfo():
            if registry.pm.get_name(plugin) == origin:
                return f"{origin} ({dist.project_name} {dist.version})"
    except Exception:  # pragma: no cover - metadata without a name or version
        pass
    return origin


def overridden_text(cls: type, code: bool = False) -> str:
    """The fops ``cls`` overrides, in words: "readv, writev", "every fop except forget",
    "none"."""
    fops = cls.overridden_fops()
    fmt = (lambda names: ", ".join(f"`{n}`" for n in names)) if code else ", ".join
    if not fops:
        return "none"
    if len(fops) > len(FOPS) // 2:
        rest = [f.name for f in FOPS if f.name not in fops]
        return "every fop except " + fmt(rest) if rest else "every fop"
    return fmt(fops)


def default_text(opt: Option) -> str:
    """The default as a volfile user would write it; ``(unset)`` when there is none."""
    if opt.default is None:
        return "(unset)"
    return opt.default if opt.default != "" else '""'


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    text = _cell(text)
    return f"``{text}``" if "`" in text else f"`{text}`"


# -- markdown ----------------------------------------------------------------------------

def options_markdown(registry: Registry, types: Optional[Iterable[str]] = None) -> str:
    """Every registered translator (or just ``types``) as a heading, its summary, and a
    table of its options: key, type, default, aliases, description."""
    out: list[str] = []
    for type_name in sorted(types if types is not None else registry.types()):
        cls = registry.get(type_name)
        out.append(f"### `{type_name}`")
        out.append("")
        summary = summary_of(cls)
        if summary:
            out.append(_cell(summary))
            out.append("")
        facts = [f"Subvolumes: {children_text(cls)}."]
        origin = registry.origin(type_name)
        if origin != "builtin":
            facts.append(f"Provided by the plugin `{origin}`.")
        fops = overridden_text(cls, code=True)
        facts.append("Overrides: " + (fops if fops != "none"
                                      else "no fop (all pass through)") + ".")
        out.append(" ".join(facts))
        out.append("")
        if cls.options:
            out.append("| Option | Type | Default | Aliases | Description |")
            out.append("|---|---|---|---|---|")
            for opt in cls.options:
                aliases = ", ".join(_code(a) for a in opt.aliases)
                default = ("(unset)" if opt.default is None else _code(default_text(opt)))
                out.append(f"| {_code(opt.key)} | {_cell(opt.describe_type())} | {default} "
                           f"| {aliases} | {_cell(opt.description)} |")
        else:
            out.append("No options.")
        out.append("")
    if not out:
        out = ["(no translator types are registered)", ""]
    return "\n".join(out)


def fops_markdown() -> str:
    """The fop table: name, parameters (after ``frame``), result, whether it modifies."""
    out = ["| Fop | Parameters (after `frame`) | Returns | Modifies | Notes |",
           "|---|---|---|---|---|"]
    for fop in FOPS:
        params = ", ".join(p.rstrip("=") + ("=None" if p.endswith("=") else "")
                           for p in fop.params)
        notes = fop.description
        if fop.name in NO_ERROR_FOPS:
            notes = (notes + " " if notes else "") + "A leaf without it succeeds."
        out.append(f"| `{fop.name}` | {_code(params) if params else ''} | {_cell(fop.result)} "
                   f"| {'yes' if fop.modifies else ''} | {_cell(notes)} |")
    out.append("")
    aliases: dict[str, list[str]] = {}
    for gluster, name in FOP_ALIASES.items():
        aliases.setdefault(name, []).append(gluster)
    out.append("GlusterFS fop names accepted in `fops`-type options (for example `enable` of "
               "`debug/delay-gen`), with the xlfs fop they mean: "
               + "; ".join(f"{', '.join(f'`{a}`' for a in sorted(names))} = `{name}`"
                           for name, names in sorted(aliases.items())) + ".")
    out.append("")
    return "\n".join(out)


def generated_section(registry: Optional[Registry] = None) -> str:
    """The text between the markers (markers excluded), ending with a newline."""
    if registry is None:
        registry = Registry(load_entrypoints=False)
    return "\n".join([
        "",
        "<!-- Generated by `python -m xlators.core.docgen --write` from the option",
        "     declarations and xlators/core/fops.py. Do not edit by hand. -->",
        "",
        "## Translator types and their options",
        "",
        "Every built-in type, with the options its class declares. Option types are described",
        "in [Option values](#option-values). `xlfsctl xlators TYPE` shows the same for any",
        "registered type, plugins included.",
        "",
        options_markdown(registry),
        "## The fop table",
        "",
        "Every fop a translator can implement, from `xlators/core/fops.py`. A fop is",
        "`async def NAME(self, frame, ...)` with exactly these parameters; `=None` marks an",
        "optional one.",
        "",
        fops_markdown(),
    ])


def replace_generated(document: str, generated: str) -> str:
    """``document`` with the text between the markers replaced by ``generated``."""
    start = document.find(BEGIN)
    end = document.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the document lacks the markers {BEGIN} ... {END}")
    return document[:start + len(BEGIN)] + "\n" + generated + document[end:]


def current_generated(document: str) -> str:
    """The text now between the markers (after the newline that follows BEGIN)."""
    start = document.find(BEGIN)
    end = document.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the document lacks the markers {BEGIN} ... {END}")
    body = document[start + len(BEGIN):end]
    return body[1:] if body.startswith("\n") else body


def default_doc_path() -> Path:
    """docs/volfile.md of the source tree this package lives in."""
    return Path(__file__).resolve().parents[2] / "docs" / "volfile.md"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xlators.core.docgen",
        description="Generate the option and fop reference of docs/volfile.md.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true",
                      help="rewrite the generated part of the document in place")
    what.add_argument("--check", action="store_true",
                      help="exit 1 if the generated part of the document is out of date")
    parser.add_argument("--file", type=Path, default=None,
                        help="the document (default: docs/volfile.md of this source tree)")
    args = parser.parse_args(argv)
    generated = generated_section()
    if not (args.write or args.check):
        sys.stdout.write(generated)
        return 0
    path = args.file or default_doc_path()
    try:
        document = path.read_text(encoding="utf-8")
        if args.check:
            if current_generated(document) != generated:
                print(f"{path}: the generated options section is out of date; run "
                      f"python -m xlators.core.docgen --write", file=sys.stderr)
                return 1
            print(f"{path}: up to date")
            return 0
        new = replace_generated(document, generated)
        if new != document:
            path.write_text(new, encoding="utf-8")
            print(f"{path}: updated")
        else:
            print(f"{path}: already up to date")
        return 0
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
