"""storage/posix ``watch-brick`` on a real mount: a change made directly in the brick shows
through the mount at once although the kernel's caches are good for a minute.

The hazard half first: without the option the same changes stay invisible through the
mount (for the test's window; they would for up to the 60 s timeouts).  Then with it, each
shows within 2 s, carried by kernel notifications from the notifier thread."""
from __future__ import annotations

import os
import time

import pytest

from tests.deadlocks.seedlib import mount_marks, mounted, statedump, volfile
from tests.mountlib import cache_drops, read_all, unless_caches_dropped, wait_until

pytestmark = mount_marks

LONG = ("--attribute-timeout=60", "--entry-timeout=60", "--negative-timeout=60")
WINDOW = 2.0


def make_brick(tmp_path):
    """The brick's first content, made before the mount (so before any watch)."""
    brick = tmp_path / "brick"
    brick.mkdir()
    (brick / "old").write_bytes(b"v1\n")
    (brick / "gone").write_bytes(b"soon gone\n")
    os.mkdir(brick / "dir")


def prime(m, brick):
    """Fill the kernel's caches: a negative entry, a file's attributes and pages, a name."""
    assert not os.path.exists(m.path("new"))              # negative dentry, 60 s
    assert not os.path.exists(m.path("dir", "inner"))
    assert read_all(m.path("old")) == b"v1\n"                # attributes and pages
    assert os.path.exists(m.path("gone"))                   # positive dentry


def change_the_brick(brick):
    (brick / "new").write_bytes(b"brand new\n")
    with open(brick / "old", "ab") as f:
        f.write(b"v2\n")
    os.unlink(brick / "gone")
    (brick / "dir" / "inner").write_bytes(b"")


def seen(m) -> dict:
    """What the mount shows.  The file is read, never stat-ed: a read invalidates the
    cached atime, so a later stat() would fetch fresh attributes whatever the timeout;
    a read is bounded by the cached size, so stale attributes show as stale content.
    (Not ``open().read()``: Python fstat()s the file first.)"""
    old = read_all(m.path("old"))
    return {"new": os.path.exists(m.path("new")), "old": old,
            "gone": os.path.exists(m.path("gone")),
            "inner": os.path.exists(m.path("dir", "inner"))}


FRESH = {"new": True, "old": b"v1\nv2\n", "gone": False, "inner": True}
STALE = {"new": False, "old": b"v1\n", "gone": True, "inner": False}


def test_hazard_without_watch_brick_changes_stay_invisible(tmp_path):
    vol = volfile(tmp_path / "posix.vol")
    make_brick(tmp_path)
    # the stale page cache is the hazard: FUSE passthrough reads the brick file itself
    drops = cache_drops()
    with mounted(tmp_path, vol, *LONG, "--fuse-passthrough=no") as m:
        prime(m, m.brick)
        change_the_brick(m.brick)
        time.sleep(WINDOW)
        state = seen(m)
    with unless_caches_dropped(since=drops):
        names = ("old", "gone")
        assert {k: state[k] for k in names} == {k: STALE[k] for k in names}
        assert state == STALE


def test_watch_brick_shows_changes_at_once(tmp_path):
    vol = volfile(tmp_path / "posix.vol")
    make_brick(tmp_path)
    with mounted(tmp_path, vol, *LONG, overrides=["posix.watch-brick=on"]) as m:
        prime(m, m.brick)
        t0 = time.monotonic()
        change_the_brick(m.brick)
        wait_until(lambda: seen(m) == FRESH and seen(m), WINDOW, "the fresh state",
                   detail=lambda: f"still {seen(m)}")
        took = time.monotonic() - t0
        state = statedump(m)
    assert took < WINDOW
    assert int(state["notify.sent.inval-entry"]) >= 2      # new, dir/inner
    assert int(state["notify.sent.delete"]) == 1           # gone: it had been looked up
    assert int(state["notify.sent.inval-inode"]) >= 1      # old
    assert state["notify.dropped"] == "0" and state["notify.errors"] == "0"
    assert int(state["watch.directories"]) == 2            # the root and dir
