"""Coherence of the data caches on real mounts: a change made directly in the brick is
seen through a mount of io-cache, read-ahead or quick-read (each alone over posix, as
shipped in volfiles/) within the documented bound: at once with ``watch-brick on`` (the
upcall; posix coalesces inotify events for 10 ms), here asserted within 2 s.

The hazard half first, for the translators that keep data across opens: with the brick
watch off and the translator's timeout long, the same change stays invisible through
the mount (so the test can tell a cache that is invalidated from one that is not used).
The change keeps the file's size and mtime (only the upcall can tell)."""
from __future__ import annotations

import os
import time

import pytest

from tests.mountlib import (VOLFILES, Mounted, needs_mount, overwrite_keeping_times,
                            read_all, wait_until)

pytestmark = [pytest.mark.mount, needs_mount]

WINDOW = 2.0
#: volfile stem -> (file size, overrides that make its cache last, no brick watch)
CASES = {
    "io-cache": (300 * 1024, ("ioc.cache-timeout=60",)),
    "quick-read": (4000, ("qr.cache-invalidation=on",)),
    "read-ahead": (2 << 20, ()),
    "perf": (300 * 1024, ("io-cache.cache-timeout=60",)),   # the whole shipped stack
}


@pytest.mark.parametrize("stem", ["io-cache", "quick-read"])
def test_without_the_brick_watch_the_cache_is_stale(stem, tmp_path):
    size, longer = CASES[stem]
    old = b"o" * size
    m = Mounted(VOLFILES / f"{stem}.vol", tmp_path,
                overrides=("posix.watch-brick=off",) + longer)
    m.brick.mkdir(parents=True)
    (m.brick / "f").write_bytes(old)
    with m:
        assert read_all(m.path("f")) == old
        assert read_all(m.path("f")) == old
        overwrite_keeping_times(m.brick / "f", b"N" * 100)
        time.sleep(0.5)
        assert read_all(m.path("f")) == old          # served from the translator


@pytest.mark.parametrize("stem", sorted(CASES))
def test_a_change_in_the_brick_is_seen_through_the_mount(stem, tmp_path):
    size, longer = CASES[stem]
    old = bytes(range(256)) * (size // 256)
    m = Mounted(VOLFILES / f"{stem}.vol", tmp_path, overrides=longer)
    m.brick.mkdir(parents=True)
    (m.brick / "f").write_bytes(old)
    with m:
        for round_ in range(3):
            assert read_all(m.path("f")) == old
            assert read_all(m.path("f")) == old
            new = bytearray(old)
            at = (round_ * 7919) % (size - 200)
            new[at:at + 100] = bytes([65 + round_]) * 100
            overwrite_keeping_times(m.brick / "f", new[at:at + 100], at)
            wait_until(lambda: read_all(m.path("f")) == bytes(new), WINDOW,
                       f"{stem}: round {round_}: the brick change to be seen",
                       interval=0.05)
            old = bytes(new)


def test_read_ahead_drops_prefetched_pages_on_a_brick_change(tmp_path):
    """An fd that stays open: the pages read-ahead fetched must go.  direct-io mode, so
    the kernel passes each pread as it is (its own readahead would make the next read
    look non-sequential to the translator, which then drops its pages anyway)."""
    size = 4 << 20
    old = b"o" * size
    m = Mounted(VOLFILES / "read-ahead.vol", tmp_path, "--direct-io-mode=yes")
    m.brick.mkdir(parents=True)
    (m.brick / "f").write_bytes(old)
    with m:
        fd = os.open(m.path("f"), os.O_RDONLY)
        try:
            pos = 0
            while pos < 1 << 20:                      # sequential: pages are prefetched
                pos += len(os.pread(fd, 65536, pos))
            overwrite_keeping_times(m.brick / "f", b"N" * 65536, pos)
            time.sleep(0.5)                           # the upcall has arrived by now
            # one read only: a repeated pread at the same offset is not sequential and
            # would bypass the pages whatever happened to them
            assert os.pread(fd, 65536, pos) == b"N" * 65536
        finally:
            os.close(fd)
