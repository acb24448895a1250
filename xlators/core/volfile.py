"""Volfiles: the GlusterFS text form of a translator graph, and an equivalent TOML form.

Volfile grammar (as GlusterFS's ``libglusterfs/src/graph.l`` and ``graph.y`` behave)::

    volume NAME
        type CATEGORY/NAME
        option KEY VALUE          # any number, before and/or after the subvolumes line
        subvolumes NAME NAME ...  # at most one; each NAME defined earlier in the file
    end-volume

* A stream of tokens: line breaks are whitespace like space, tab and CR, so a statement may
  span lines. A *word* is a run of characters other than space, tab, CR, LF, ``"`` and ``\\``.
  ``#`` starts a comment (to the end of the line) only where a token would start (``a#b`` is
  one word). Keywords are lowercase: ``volume type option subvolumes end-volume`` (graph.l also
  takes ``subvolumeS``); an unquoted word equal to a keyword IS that keyword.
* ``"..."`` is one word holding anything: ``\\x`` gives ``x``, a line break inside is dropped,
  an unterminated quote is an error. A value with spaces must be quoted (``option k a b`` is a
  syntax error); a backslash outside quotes is an error.
* ``type`` comes first; a volume needs an option or a subvolumes line besides it (a lone
  ``type`` line is a syntax error in graph.y). A second ``type`` or ``subvolumes`` line, a
  nested ``volume``, a missing ``end-volume``, a name defined twice, a subvolume not defined
  earlier or equal to the volume itself are errors. The same option twice: the last value wins
  (keeping the first one's position). The top of the graph is the LAST volume.
* Stricter than GlusterFS: backticks are refused anywhere (GlusterFS runs them through a shell
  before parsing; xlfs never runs commands); ``type mount/fuse`` is refused (the FUSE bridge is
  not part of the graph); a type must look like ``category/name``; a subvolume listed twice, an
  empty volume name and an empty option key are refused.

Every error is a :class:`VolfileError`, whose text is ``FILE:LINE: message``.

TOML form: ``[[volume]]`` tables in graph order (the top is the last); no other keys::

    [[volume]]
    name = "posix"
    type = "storage/posix"
    subvolumes = []            # optional, default []
    [volume.options]           # optional; strings, integers, booleans or finite floats
    directory = "/data"

Non-string values become volfile text: ``true``/``false`` -> ``on``/``off``, integers in
decimal, floats as Python's ``repr``. Strings may not hold a line break or a backtick (a
volfile could not), so both forms describe the same graphs, and :func:`check_volumes` applies
the same rules to both.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional

try:  # pragma: no cover - depends on the interpreter
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["VolumeSpec", "VolfileError", "parse_volfile", "load_volfile", "format_volfile",
           "parse_toml", "format_toml", "quote_word", "check_volumes", "KEYWORDS"]

#: Words that are keywords when unquoted (``subvolumeS`` is graph.l's spelling variant).
KEYWORDS = frozenset({"volume", "type", "option", "subvolumes", "subvolumeS", "end-volume"})
_NOT_WORD = frozenset(' \t\r\n"\\')
_WORD_RE = re.compile(r'[^ \t\r\n"\\]+')
_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*/[A-Za-z0-9][A-Za-z0-9_.+-]*")
_ALLOWED = "allowed tokens are 'volume', 'type', 'option', 'subvolumes', 'end-volume'"


@dataclass
class VolumeSpec:
    """One ``volume ... end-volume`` block. Equality ignores the position metadata."""

    name: str
    type: str
    options: dict[str, str]
    subvolumes: list[str]
    line: int = field(default=0, compare=False)
    option_lines: dict[str, int] = field(default_factory=dict, compare=False)
    filename: str = field(default="<volfile>", compare=False)


class VolfileError(Exception):
    """A volfile (or TOML graph) that cannot be used; ``str()`` is ``FILE:LINE: message``."""

    def __init__(self, message: str, filename: str = "<volfile>", line: int = 0) -> None:
        super().__init__(message, filename, line)
        self.message = message
        self.filename = filename
        self.line = line

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: {self.message}"


# Rules shared by the volfile parser and the TOML loader: each returns a message or None.

def _text_problem(what: str, text: str) -> Optional[str]:
    if "`" in text:
        return f"{what} contains a backtick; backticks are not allowed (xlfs never runs commands)"
    if "\n" in text:
        return f"{what} contains a line break, which a volfile cannot hold"
    return None


def _type_problem(vtype: str) -> Optional[str]:
    if vtype == "mount/fuse":
        return ("type 'mount/fuse' cannot be used in a volfile: "
                "the FUSE bridge is not part of the graph")
    if not _TYPE_RE.fullmatch(vtype):
        return f"type '{vtype}' is not valid (expected CATEGORY/NAME, such as storage/posix)"
    return None


def _sub_problem(volume: str, sub: str, defined: dict[str, int], seen: list[str]) -> Optional[str]:
    if sub == volume:
        return f"lists itself ('{sub}') as a subvolume"
    if sub not in defined:
        return f"subvolume '{sub}' is not defined prior to usage"
    if sub in seen:
        return f"subvolume '{sub}' is listed twice"
    return None


# Volfile text -> VolumeSpec

class _Tok(NamedTuple):
    keyword: bool  # True for an unquoted keyword; text is then normalised ("subvolumes")
    text: str
    line: int


def _tokenize(text: str, filename: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c == '"':
            start, buf, i = line, [], i + 1
            while True:
                if i >= n:
                    raise VolfileError("unterminated quoted string (opened here)", filename, start)
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and text[i + 1] != "\n":
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if c == "\n":  # a line break inside quotes is dropped (so is a backslash before it)
                    line += 1
                elif c != "\\":
                    buf.append(c)
                i += 1
            toks.append(_Tok(False, "".join(buf), start))
        elif c == "\\":
            raise VolfileError("stray backslash outside a quoted string", filename, line)
        else:
            word = _WORD_RE.match(text, i).group()  # type: ignore[union-attr]
            i += len(word)
            kw = "subvolumes" if word == "subvolumeS" else word
            toks.append(_Tok(word in KEYWORDS, kw, line))
    return toks


class _Parser:
    def __init__(self, toks: list[_Tok], filename: str, eof_line: int) -> None:
        self.toks, self.pos, self.filename, self.eof_line = toks, 0, filename, eof_line
        self.defined: dict[str, int] = {}

    def error(self, line: int, message: str) -> VolfileError:
        return VolfileError(message, self.filename, line)

    def next(self) -> Optional[_Tok]:
        self.pos += 1
        return self.toks[self.pos - 1] if self.pos <= len(self.toks) else None

    def word(self) -> Optional[_Tok]:
        if self.pos < len(self.toks) and not self.toks[self.pos].keyword:
            return self.next()
        return None

    def parse(self) -> list[VolumeSpec]:
        volumes: list[VolumeSpec] = []
        while (tok := self.next()) is not None:
            if tok.keyword and tok.text == "volume":
                volumes.append(self.volume(tok))
                self.defined[volumes[-1].name] = tok.line
            elif tok.keyword and tok.text == "end-volume":
                raise self.error(tok.line, "'end-volume' without a matching 'volume'")
            else:
                what = f"'{tok.text}'" if tok.keyword else f"word \"{tok.text}\""
                raise self.error(tok.line, f"syntax error: unexpected {what} outside a volume "
                                           f"definition (expected 'volume NAME')")
        if not volumes:
            raise self.error(1, "no volume defined (the volfile is empty or only has comments)")
        return volumes

    def volume(self, vtok: _Tok) -> VolumeSpec:
        ntok = self.word()
        if ntok is None:
            raise self.error(vtok.line, "'volume' needs a name")
        name = ntok.text
        if not name:
            raise self.error(ntok.line, "volume name must not be empty")
        if name in self.defined:
            raise self.error(ntok.line, f"volume '{name}' defined again "
                                        f"(first defined at line {self.defined[name]})")
        spec = VolumeSpec(name, "", {}, [], line=vtok.line, filename=self.filename)

        def fail(line: int, message: str) -> VolfileError:
            return self.error(line, f"volume '{name}': {message}")

        type_line = sub_line = 0
        last: Optional[_Tok] = None  # the key of the option statement just read
        while True:
            tok = self.next()
            if tok is None:
                raise self.error(self.eof_line, f"'end-volume' not defined for volume '{name}' "
                                                f"(started at line {vtok.line})")
            if not tok.keyword:
                hint = (f" after option '{last.text}' (a value containing spaces must be quoted)"
                        if last is not None else "")
                raise fail(tok.line, f"syntax error: unexpected word \"{tok.text}\"{hint}; "
                                     f"{_ALLOWED}")
            kw, last = tok.text, None
            if kw == "volume":
                raise self.error(tok.line, f"'end-volume' not defined for volume '{name}' "
                                           f"(line {vtok.line}) before the next 'volume'")
            if kw != "type" and not type_line:
                raise fail(tok.line, "'type' not specified" + (
                    "" if kw == "end-volume" else f" before '{kw}' (it must come first)"))
            if kw == "type":
                if type_line:
                    raise fail(tok.line, f"duplicate 'type' (first at line {type_line})")
                ttok = self.word()
                if ttok is None:
                    raise fail(tok.line, "'type' needs a value (CATEGORY/NAME)")
                problem = _type_problem(ttok.text)
                if problem:
                    raise fail(ttok.line, problem)
                spec.type, type_line = ttok.text, tok.line
            elif kw == "option":
                key = self.word()
                if key is None:
                    raise fail(tok.line, "'option' needs a key and a value")
                if not key.text:
                    raise fail(key.line, "option key must not be empty")
                value = self.word()
                if value is None:
                    raise fail(tok.line, f"option '{key.text}' needs a value")
                spec.options[key.text] = value.text
                spec.option_lines[key.text] = tok.line
                last = key
            elif kw == "subvolumes":
                if sub_line:
                    raise fail(tok.line, f"duplicate 'subvolumes' (first at line {sub_line})")
                sub_line = tok.line
                while (stok := self.word()) is not None:
                    problem = _sub_problem(name, stok.text, self.defined, spec.subvolumes)
                    if problem:
                        raise fail(stok.line, problem)
                    spec.subvolumes.append(stok.text)
                if not spec.subvolumes:
                    raise fail(tok.line, "'subvolumes' needs at least one name")
            elif not spec.options and not spec.subvolumes:  # end-volume
                raise fail(tok.line, "a volume needs an option or a subvolumes line besides "
                                     "its 'type'")
            else:
                return spec


def parse_volfile(text: str, filename: str = "<volfile>") -> list[VolumeSpec]:
    """Parse volfile text into volumes in definition order (the top of the graph is the last)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    tick = text.find("`")
    if tick >= 0:
        raise VolfileError("backticks are not allowed in a volfile: GlusterFS would run the text "
                           "between them through a shell, xlfs never runs commands",
                           filename, text.count("\n", 0, tick) + 1)
    toks = _tokenize(text, filename)
    return _Parser(toks, filename, toks[-1].line if toks else 1).parse()


def load_volfile(path: str | os.PathLike) -> list[VolumeSpec]:
    """Read a volfile (the TOML form if the name ends in ``.toml``); OSError propagates."""
    filename = os.fsdecode(path)
    with open(filename, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VolfileError("file is not valid UTF-8", filename,
                           data.count(b"\n", 0, exc.start) + 1) from None
    if filename.endswith(".toml"):
        return parse_toml(text, filename)
    return parse_volfile(text, filename)


# VolumeSpec -> volfile text

def quote_word(value: str) -> str:
    """Return ``value`` as one volfile word, quoted only when it has to be (or would not read
    back the same in an editor: empty, a keyword, starts with ``#``, holds a space, quote,
    backslash or any non-printable character). Raises ValueError for a line break or a
    backtick, which a volfile cannot hold."""
    problem = _text_problem("value", value)
    if problem:
        raise ValueError(f"{value!r}: {problem}")
    if (value and value not in KEYWORDS and not value.startswith("#")
            and all(c not in _NOT_WORD and c.isprintable() for c in value)):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_volfile(volumes: list[VolumeSpec]) -> str:
    """The canonical volfile text: options first, then the subvolumes line."""
    blocks = []
    for v in volumes:
        lines = [f"volume {quote_word(v.name)}", f"    type {quote_word(v.type)}"]
        lines += [f"    option {quote_word(k)} {quote_word(val)}" for k, val in v.options.items()]
        if v.subvolumes:
            lines.append("    subvolumes " + " ".join(quote_word(s) for s in v.subvolumes))
        lines.append("end-volume\n")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


# Graph rules for VolumeSpecs built in code or read from TOML

def check_volumes(volumes: list[VolumeSpec], filename: str = "<volumes>") -> None:
    """Apply the volfile's graph rules to ``volumes``; raise VolfileError on the first problem."""
    if not volumes:
        raise VolfileError("no volume defined", filename, 0)
    defined: dict[str, int] = {}
    for index, v in enumerate(volumes, 1):
        texts = [("name", v.name), ("type", v.type)]
        texts += [(f"option '{k}'", k + val) for k, val in v.options.items()]
        texts += [("subvolume name", sub) for sub in v.subvolumes]
        problem = (
            _first(_text_problem(what, text) for what, text in texts)
            or ("" if v.name else "volume name must not be empty")
            or (f"defined again (first defined as volume #{defined[v.name]})"
                if v.name in defined else "")
            or _type_problem(v.type)
            or ("option key must not be empty" if "" in v.options else "")
            or _first(_sub_problem(v.name, sub, defined, v.subvolumes[:i])
                      for i, sub in enumerate(v.subvolumes))
            or ("" if v.options or v.subvolumes
                else "a volume needs an option or a subvolumes line besides its 'type'"))
        if problem:
            vol = f"volume '{v.name}'" if v.name else f"volume #{index}"
            raise VolfileError(f"{vol}: {problem}", filename, v.line)
        defined[v.name] = index


def _first(problems: Iterable[Optional[str]]) -> Optional[str]:
    return next((p for p in problems if p), None)


# TOML form

_TOML_NAMES = {dict: "a table", list: "an array", str: "a string", int: "an integer",
               bool: "a boolean", float: "a float"}
_TOML_KEYS = ("name", "type", "subvolumes", "options")


def _toml_kind(value: object) -> str:
    return _TOML_NAMES.get(type(value), "a date/time")


def _option_text(value: object) -> Optional[str]:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (str, int)):
        return str(value)
    return repr(value) if isinstance(value, float) and math.isfinite(value) else None


def parse_toml(text: str, filename: str = "<toml>") -> list[VolumeSpec]:
    """Parse the TOML form (see the module docstring) and apply the volfile's graph rules."""
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise VolfileError(f"invalid TOML: {exc}", filename, int(m.group(1)) if m else 0) from None
    for key in data:
        if key != "volume":
            raise VolfileError(f"unknown top-level key '{key}' (only [[volume]] tables are "
                               f"allowed)", filename, 0)
    raw_volumes = data.get("volume", [])
    if not isinstance(raw_volumes, list):
        raise VolfileError(f"'volume' must be an array of tables ([[volume]]), not "
                           f"{_toml_kind(raw_volumes)}", filename, 0)
    if not raw_volumes:
        raise VolfileError("no volume defined (expected [[volume]] tables)", filename, 0)
    headers = [n + 1 for n, ln in enumerate(text.split("\n"))
               if re.match(r"\s*\[\[\s*volume\s*\]\]", ln)]
    if len(headers) != len(raw_volumes):  # inline tables: no header line to point at
        headers = [0] * len(raw_volumes)
    volumes = []
    for index, (raw, line) in enumerate(zip(raw_volumes, headers), 1):
        where = f"volume #{index}"

        def fail(message: str) -> VolfileError:
            return VolfileError(f"{where}: {message}", filename, line)

        if not isinstance(raw, dict):
            raise fail(f"must be a table, not {_toml_kind(raw)}")
        name = raw.get("name")
        if not isinstance(name, str):
            raise fail("'name' is missing" if name is None
                       else f"'name' must be a string, not {_toml_kind(name)}")
        where = f"volume '{name}'"
        for key in raw:
            if key not in _TOML_KEYS:
                raise fail(f"unknown key '{key}' (allowed: {', '.join(_TOML_KEYS)})")
        vtype = raw.get("type")
        if not isinstance(vtype, str):
            raise fail("'type' is missing" if vtype is None
                       else f"'type' must be a string, not {_toml_kind(vtype)}")
        subs = raw.get("subvolumes", [])
        if not isinstance(subs, list) or not all(isinstance(s, str) for s in subs):
            raise fail("'subvolumes' must be an array of strings")
        raw_options = raw.get("options", {})
        if not isinstance(raw_options, dict):
            raise fail(f"'options' must be a table, not {_toml_kind(raw_options)}")
        options = {}
        for key, value in raw_options.items():
            text_value = _option_text(value)
            if text_value is None:
                kind = "a non-finite float" if isinstance(value, float) else _toml_kind(value)
                raise fail(f"option '{key}' must be a string, integer, boolean or finite "
                           f"float, not {kind}")
            options[key] = text_value
        volumes.append(VolumeSpec(name, vtype, options, list(subs), line=line, filename=filename))
    check_volumes(volumes, filename)
    return volumes


_TOML_ESCAPES = {i: f"\\u{i:04X}" for i in [*range(0x20), 0x7F]}
_TOML_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 8: "\\b", 9: "\\t", 10: "\\n",
                      12: "\\f", 13: "\\r"})


def _toml_str(value: str) -> str:
    return '"' + value.translate(_TOML_ESCAPES) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def format_toml(volumes: list[VolumeSpec]) -> str:
    """The TOML form of ``volumes``; option values are written as strings."""
    blocks = []
    for v in volumes:
        lines = ["[[volume]]", f"name = {_toml_str(v.name)}", f"type = {_toml_str(v.type)}",
                 "subvolumes = [" + ", ".join(_toml_str(s) for s in v.subvolumes) + "]"]
        if v.options:
            lines.append("[volume.options]")
            lines += [f"{_toml_key(k)} = {_toml_str(val)}" for k, val in v.options.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
