"""Fixtures shared by the translator tests."""
from __future__ import annotations

import os
from typing import Mapping

import pytest

from tests.xlators.perflib import build


@pytest.fixture
def watched_brick(tmp_path):
    """``await watched_brick(XL, options)``: XL (a caching translator) over storage/posix
    with watch-brick on.  A file of the brick is read through XL, then rewritten in the
    brick behind the stack's back at the same size (only the watch's upcall can tell);
    XL still serves what it cached until the watch's events are dispatched, and the new
    bytes after.  Root only (storage/posix tests run as root)."""
    if os.geteuid() != 0:
        pytest.skip("storage/posix tests run as root")
    stacks = []

    async def check(xl_type: str, options: Mapping[str, str]) -> None:
        brick = tmp_path / "brick"
        brick.mkdir()
        (brick / "f").write_bytes(b"before")
        h, _, _ = build(xl_type, options, leaf="storage/posix",
                        leaf_options={"directory": str(brick), "reserve": "0",
                                      "watch-brick": "on"})
        stacks.append(h)
        fd = await h.open("/f", os.O_RDONLY)
        assert await h.read(fd, 100) == b"before"
        with open(brick / "f", "r+b") as f:
            f.write(b"AFTER!")
        assert await h.read(fd, 100) == b"before"
        watch = h.top.child.child._watch
        assert watch.dispatch(watch.read_available()) >= 1
        assert await h.read(fd, 100) == b"AFTER!"
        await h.close(fd)

    yield check
    for h in stacks:
        h.fini()
