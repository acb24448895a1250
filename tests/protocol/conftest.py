"""Forgets of files that keep their names linger for a second before they are applied
(fuse_bridge.forget_backlog.LINGER): the protocol tests that wait for the forgets they
sent (``FakeKernel.sync``, the fuzz's wind-down) would wait that long each time, so
here they linger no longer than forgets after a removal wait.
``tests/protocol/test_forget_backlog.py`` tests the real values."""
from __future__ import annotations

import pytest

from fuse_bridge import forget_backlog

REAL_LINGER = forget_backlog.LINGER
REAL_MAX_LINGER = forget_backlog.MAX_LINGER


@pytest.fixture(autouse=True)
def short_linger(monkeypatch):
    monkeypatch.setattr(forget_backlog, "LINGER", forget_backlog.QUIET)
    monkeypatch.setattr(forget_backlog, "MAX_LINGER", forget_backlog.MAX_WAIT)
