"""A report's generated block in docs/benchmarks.md: the text between its begin and end
markers, replaced in place on every ``--write-docs`` (appended, with the markers, where
the file has none yet).  Every report writes its block through :func:`write`."""
from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_HEAD = "# Benchmarks\n"


def write(path: Path, begin: str, end: str, body: str, head: str = DEFAULT_HEAD) -> None:
    """Put ``body`` between ``begin`` and ``end`` in ``path``; a begin marker's words in
    brackets (the command that writes it) may differ from the file's.  A missing file is
    made, starting with ``head``.  Written to a temporary file and renamed."""
    tag = begin.split(" (")[0].removesuffix(" -->")
    block_re = re.compile(re.escape(tag) + r"[^>]*-->.*?" + re.escape(end), re.S)
    block = f"{begin}\n{body}\n{end}"
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = head
    if block_re.search(text):
        text = block_re.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
