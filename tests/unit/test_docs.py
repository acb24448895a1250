"""The docs cannot drift from the code: the generated part of docs/volfile.md must be what
the option declarations and the fop table produce, and the files that
docs/writing-translators.md quotes must be quoted exactly."""
import re
from pathlib import Path

import pytest

from xlators import FOP_NAMES, Option, Registry, Translator
from xlators.core import docgen

ROOT = Path(__file__).resolve().parents[2]
VOLFILE_MD = ROOT / "docs" / "volfile.md"
WRITING_MD = ROOT / "docs" / "writing-translators.md"


def test_volfile_md_generated_section_is_up_to_date():
    document = VOLFILE_MD.read_text(encoding="utf-8")
    assert document.count(docgen.BEGIN) == 1 and document.count(docgen.END) == 1
    expected = docgen.generated_section(Registry(load_entrypoints=False))
    assert docgen.current_generated(document) == expected, (
        "docs/volfile.md is out of date with the option declarations: run "
        "`python -m xlators.core.docgen --write` and commit the result")


def test_volfile_md_documents_every_builtin_type_and_every_fop():
    document = VOLFILE_MD.read_text(encoding="utf-8")
    for type_name in Registry(load_entrypoints=False).types():
        assert f"### `{type_name}`" in document
    for name in FOP_NAMES:
        assert f"| `{name}` |" in document


def test_volfile_md_grammar_reference_covers_the_rules():
    text = VOLFILE_MD.read_text(encoding="utf-8").split(docgen.BEGIN)[0]
    text = " ".join(text.replace("**", "").split())
    for needle in ["end-volume", "subvolumes", "Quoted strings", "Comments",
                   "Define before use", "Backticks are refused", "last volume",
                   "the last value wins", "--xlator-option", "glob", "[[volume]]",
                   "in definition order (leaves first)", "reverse definition order",
                   "PARENT_UP", "CHILD_UP", "mount/fuse"]:
        assert needle in text, needle


# -- the generator --------------------------------------------------------------------------------

class Documented(Translator):
    """test/documented: a translator for the doc generator's tests.

        volume d
            type test/documented
            option mode fast
            subvolumes x
        end-volume
    """
    type = "test/documented"
    children_range = (1, 1)
    options = (
        Option.str("mode", default="fast", values=("fast", "safe"),
                   description="how | to go\n   on two lines"),
        Option.int("level", min=0, max=9, aliases=("lvl", "old-level")),
        Option.fops("enable", description="the fops"),
    )

    async def lookup(self, frame, loc):
        return await self.child.lookup(frame, loc)


class Bare(Translator):
    type = "test/bare"


@pytest.fixture
def reg():
    r = Registry(load_entrypoints=False)
    r.register(Documented, "my-plugin")
    r.register(Bare, "builtin")
    return r


def test_options_markdown(reg):
    md = docgen.options_markdown(reg, ["test/documented", "test/bare"])
    assert md.index("### `test/bare`") < md.index("### `test/documented`")   # sorted
    assert "a translator for the doc generator's tests." in md
    assert "test/documented:" not in md
    assert ("Subvolumes: exactly 1. Provided by the plugin `my-plugin`. Overrides: `lookup`."
            in md)
    assert "| Option | Type | Default | Aliases | Description |" in md
    assert "| `mode` | str (fast\\|safe) | `fast` |  | how \\| to go on two lines |" in md
    assert "| `level` | int [0..9] | (unset) | `lvl`, `old-level` |  |" in md
    assert '| `enable` | fops | `""` |  | the fops |' in md
    bare = md.split("### `test/bare`")[1].split("###")[0]
    assert "No options." in bare and "no fop (all pass through)" in bare
    assert "Provided by" not in bare


def test_options_markdown_for_the_whole_registry(reg):
    md = docgen.options_markdown(reg)
    assert all(f"### `{t}`" in md for t in reg.types())


def test_fops_markdown():
    md = docgen.fops_markdown()
    for name in FOP_NAMES:
        assert f"| `{name}` |" in md
    assert "| `rename` | `oldloc, newloc, flags=None` | None | yes |" in md
    assert "`stat`" in md and "= `getattr`" in md


def test_helpers():
    assert docgen.volfile_example(Documented).splitlines()[0] == "volume d"
    assert docgen.volfile_example(Documented).splitlines()[-1] == "end-volume"
    assert docgen.volfile_example(Bare) is None
    assert docgen.children_text(Documented) == "exactly 1"
    assert docgen.children_text(Bare) == "any number"
    assert docgen.summary_of(Documented) == "a translator for the doc generator's tests."


def test_replace_generated_is_idempotent():
    doc = f"intro\n{docgen.BEGIN}\nold stuff\n{docgen.END}\noutro\n"
    new = docgen.replace_generated(doc, "NEW\n")
    assert new == f"intro\n{docgen.BEGIN}\nNEW\n{docgen.END}\noutro\n"
    assert docgen.replace_generated(new, "NEW\n") == new
    assert docgen.current_generated(new) == "NEW\n"
    with pytest.raises(ValueError, match="lacks the markers"):
        docgen.replace_generated("no markers", "x")


def test_docgen_command_check_and_write(tmp_path, capsys):
    doc = tmp_path / "v.md"
    doc.write_text(f"# title\n{docgen.BEGIN}\nstale\n{docgen.END}\n")
    assert docgen.main(["--check", "--file", str(doc)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert docgen.main(["--write", "--file", str(doc)]) == 0
    assert docgen.main(["--check", "--file", str(doc)]) == 0
    assert doc.read_text().startswith(f"# title\n{docgen.BEGIN}\n")
    assert docgen.main(["--check", "--file", str(tmp_path / "missing.md")]) == 1


# -- docs/writing-translators.md quotes the example's files exactly ----------------------------

def _quoted_files(text):
    pattern = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```", re.S)
    return pattern.findall(text)


def test_writing_translators_quotes_the_example_exactly():
    quoted = _quoted_files(WRITING_MD.read_text(encoding="utf-8"))
    assert len(quoted) >= 4
    for path, body in quoted:
        assert body == (ROOT / path).read_text(encoding="utf-8"), (
            f"docs/writing-translators.md quotes {path}, which has changed: update the doc")


def test_writing_translators_covers_the_rules():
    text = " ".join(WRITING_MD.read_text(encoding="utf-8").replace("**", "").split())
    for needle in ["frame.cancel_scope", "frame.on_interrupt", "upcall", "check_passthrough",
                   "Harness", "xlfsctl xlators playground/rot-13", "[project.entry-points.xlfs]",
                   "xlfs_register_xlators", "spawn", "FopError"]:
        assert needle in text, needle


def test_overridden_text():
    assert docgen.overridden_text(Bare) == "none"
    assert docgen.overridden_text(Documented) == "lookup"
    assert docgen.overridden_text(Documented, code=True) == "`lookup`"
    from xlators.core.fops import FOPS

    async def fop(self, frame, *args):
        pass
    most = type("Most", (Translator,), {"type": "test/most", **{
        f.name: fop for f in FOPS if f.name not in ("forget", "ipc")}})
    assert docgen.overridden_text(most) == "every fop except forget, ipc"
    every = type("Every", (Translator,), {"type": "test/every", **{f.name: fop for f in FOPS}})
    assert docgen.overridden_text(every) == "every fop"
