"""storage/gfapi drops the bricks' UP_FORGET of an object this client removed a name of
(news of its own removal), but only for a while: the name may not have been the
object's last, and a later UP_FORGET of the surviving object must go through.  No
libgfapi needed: the bookkeeping alone (tests/gluster has the real notices)."""
from __future__ import annotations

import collections

from xlators.storage import gfapi_upcall
from xlators.storage.gfapi_upcall import Upcalls


def bookkeeping() -> Upcalls:
    up = Upcalls.__new__(Upcalls)           # (its __init__ registers with libgfapi)
    up.removed_here = collections.OrderedDict()
    return up


def test_an_own_removal_is_news_for_a_while_only(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(gfapi_upcall.time, "monotonic", lambda: now[0])
    up = bookkeeping()
    up.removed(7)
    assert up.own_forget(7) and up.own_forget(7)      # one notice per brick
    assert not up.own_forget(8)
    now[0] += gfapi_upcall.OWN_FORGET_WINDOW + 1      # ln f g; rm f; ... much later
    assert not up.own_forget(7) and 7 not in up.removed_here


def test_a_failed_removal_is_no_news(monkeypatch):
    up = bookkeeping()
    up.removed(7)
    up.removed(7, False)
    assert not up.own_forget(7)


def test_only_the_newest_removals_are_remembered(monkeypatch):
    monkeypatch.setattr(gfapi_upcall, "REMOVED_REMEMBERED", 3)
    up = bookkeeping()
    for ino in (1, 2, 3, 1, 4):                        # 1 removed again: newest again
        up.removed(ino)
    assert list(up.removed_here) == [3, 1, 4]
