"""Coherence of the metadata caches on real mounts: a change made directly in the brick
(storage/posix ``watch-brick on``) is seen through the caching mount.

The kernel's own timeouts are set to 0 so that every stat, lookup and readdir reaches the
translators: what is measured is the translator's cache, not the kernel's.  The bound
documented for each cache with an upcall source is "as soon as the upcall arrives"
(posix pauses 10 ms to coalesce events); the tests poll for at most ``WAIT`` seconds, a
liveness limit, never a timing assertion.  Each test also checks the hazard half: with
watch-brick off the cache really does serve the old state (so the positive half cannot
pass without the cache being there).
"""
from __future__ import annotations

import os
import time

import pytest

from tests.mountlib import (KERNEL_NO_CACHE, VOLFILES, Mounted, PlusListing, needs_getdents,
                            needs_mount, two_mounts, unless_caches_dropped, wait_until)

pytestmark = [pytest.mark.mount, needs_mount]

WAIT = 10.0


def mount(volfile: str, tmp_path, watch: bool) -> Mounted:
    return Mounted(VOLFILES / volfile, tmp_path, *KERNEL_NO_CACHE,
                   overrides=[f"posix.watch-brick={'on' if watch else 'off'}"])


def _size(path: str) -> int:
    return os.stat(path).st_size


@pytest.mark.parametrize("watch", [True, False], ids=["watch-brick", "no-watch"])
def test_md_cache_sees_a_brick_write(tmp_path, watch):
    with mount("md-cache.vol", tmp_path, watch) as m:
        with open(m.path("f"), "wb") as f:
            f.write(b"abc")
        assert _size(m.path("f")) == 3
        with open(m.brick / "f", "ab") as f:           # behind the mount
            f.write(b"defgh")
        if watch:
            wait_until(lambda: _size(m.path("f")) == 8, WAIT, "the size 8")
        else:
            time.sleep(0.5)
            assert _size(m.path("f")) == 3, "md-cache (timeout 600) should still serve it"


@pytest.mark.parametrize("watch", [True, False], ids=["watch-brick", "no-watch"])
def test_md_cache_sees_a_brick_chmod_and_unlink(tmp_path, watch):
    with mount("md-cache.vol", tmp_path, watch) as m:
        open(m.path("g"), "wb").close()
        assert os.stat(m.path("g")).st_mode & 0o777 == 0o644
        os.chmod(m.brick / "g", 0o600)
        if watch:
            wait_until(lambda: os.stat(m.path("g")).st_mode & 0o777 == 0o600, WAIT,
                       "the mode 0600")
            os.unlink(m.brick / "g")
            wait_until(lambda: not os.path.exists(m.path("g")), WAIT, "g to go")
        else:
            time.sleep(0.5)
            assert os.stat(m.path("g")).st_mode & 0o777 == 0o644


@pytest.mark.parametrize("watch", [True, False], ids=["watch-brick", "no-watch"])
def test_nl_cache_sees_a_name_created_in_the_brick(tmp_path, watch):
    with mount("nl-cache.vol", tmp_path, watch) as m:
        os.mkdir(m.path("d"))
        assert not os.path.exists(m.path("d", "f"))          # cached negative (and new dir)
        assert not os.path.exists(m.path("top"))
        (m.brick / "d" / "f").write_bytes(b"x")
        (m.brick / "top").write_bytes(b"y")
        if watch:
            wait_until(lambda: os.path.exists(m.path("d", "f")), WAIT, "d/f to appear")
            wait_until(lambda: os.path.exists(m.path("top")), WAIT, "top to appear")
        else:
            time.sleep(0.5)
            assert not os.path.exists(m.path("d", "f")), "nl-cache should still answer"
            assert not os.path.exists(m.path("top"))


@needs_getdents
@pytest.mark.parametrize("source", ["brick", "second-mount"])
def test_readdir_ahead_serves_no_names_or_attributes_older_than_a_change(tmp_path, source):
    """Entries read ahead before a change below (made in the brick, or through a second
    mount of it) must not be served after it: no name removed, no attributes from before
    (the kernel keeps READDIRPLUS attributes and entries 30 s here), and the next listing
    shows the names made and not the names removed.

    The stream is READDIRPLUS throughout, as for ``ls -l``: the kernel asks READDIRPLUS
    at offset 0 and for the first request after a lookup that found a new name in the
    directory, so a lookup of a name not listed yet comes before each getdents.  The
    second request sets readdir-ahead's kind, and its background read buffers the rest
    of the directory (readdirp, with attributes).  Sync point: the last change appends
    to ``marker``, whose size A's kernel caches; once A shows it, the upcalls of the
    changes before it have passed readdir-ahead.  Checked by hand: this fails when
    readdir-ahead ignores upcalls (its ``notify`` discarding nothing)."""
    names = [f"file-{i:04d}" for i in range(600)]
    brick = tmp_path / "brick"
    (brick / "d").mkdir(parents=True)
    for name in names:
        (brick / "d" / name).write_bytes(b"")
    (brick / "marker").write_bytes(b"")
    with two_mounts(VOLFILES / "readdir-ahead.vol", tmp_path, "--attribute-timeout=30",
                    "--entry-timeout=30") as (a, b):
        below = brick if source == "brick" else b.mountpoint
        # (a drop of the kernel's caches would refresh the marker before its upcall)
        with unless_caches_dropped():
            assert os.stat(a.path("marker")).st_size == 0
            with PlusListing(a.path("d"), names[::3]) as listing:   # the others change
                # READDIRPLUS at 0, wound (4 KiB: readdir-ahead cuts the reply to what
                # fits, so the kernel's next offset is its stream's position)
                listing.next(4096)
                listing.next(4096)                 # READDIRPLUS: the rest is read ahead
                before = set(listing.listed)
                removed = [n for n in names[1::3] if n not in before]
                grown = [n for n in names[2::3] if n not in before]
                made = [f"new-{i:02d}" for i in range(30)]
                for name in removed:
                    os.unlink(below / "d" / name)
                # a truncate, not an append: a second mount's RELEASE comes after close(2)
                # returns, and its late event would refresh the kernel after the marker
                for name in grown:
                    os.truncate(below / "d" / name, 5)
                for name in made:
                    (below / "d" / name).write_bytes(b"")
                with open(below / "marker", "ab") as f:
                    f.write(b"x")
                wait_until(lambda: os.stat(a.path("marker")).st_size == 1, WAIT,
                           "the marker's change", detail=a.read_log)
                while listing.next(1 << 20):       # the rest, in one request if it fits
                    pass
            served = set(listing.listed) - before
            assert not served & set(removed), \
                f"{len(served & set(removed))} names removed below were listed after it"
            stale = [n for n in grown if os.stat(a.path("d", n)).st_size != 5]
            assert not stale, f"{len(stale)} entries show the size before the change"
            expect = set(names) - set(removed) | set(made)
            assert set(os.listdir(a.path("d"))) == expect


def test_open_behind_keeps_an_unlinked_file_readable(tmp_path):
    """GlusterFS's open-behind data loss: open, unlink (through the mount and in the
    brick), then read through the descriptor opened before."""
    with Mounted(VOLFILES / "open-behind.vol", tmp_path, "--direct-io-mode=yes") as m:
        for name in ("a", "b"):                       # direct I/O: reads reach xlfs
            with open(m.path(name), "wb") as f:
                f.write(b"contents of " + name.encode())
        fa = os.open(m.path("a"), os.O_RDONLY)
        fb = os.open(m.path("b"), os.O_RDONLY)
        try:
            os.unlink(m.path("a"))
            os.unlink(m.brick / "b")                  # behind the mount
            assert os.pread(fa, 100, 0) == b"contents of a"
            assert os.pread(fb, 100, 0) == b"contents of b"
        finally:
            os.close(fa)
            os.close(fb)


def test_open_behind_reads_what_the_brick_holds_when_it_opens(tmp_path):
    with Mounted(VOLFILES / "open-behind.vol", tmp_path, "--direct-io-mode=yes") as m:
        with open(m.path("f"), "wb") as f:
            f.write(b"before")
        fd = os.open(m.path("f"), os.O_RDONLY)
        try:
            (m.brick / "f").write_bytes(b"after!")    # same inode, changed in the brick
            assert os.pread(fd, 100, 0) == b"after!"
        finally:
            os.close(fd)


def _daemon_rchar(m: Mounted) -> int:
    with open(f"/proc/{m.proc.pid}/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_md_cache_keeps_the_page_cache_of_an_unchanged_file(tmp_path):
    """md-cache's keep_cache hint: a second open of an unchanged file is served by the
    kernel's page cache (the daemon reads almost nothing); a file changed in the brick
    (no watch-brick: only md-cache's ctime check can tell) is read afresh once
    md-cache-timeout (1 s here) has passed.  The second half is end-to-end only: the
    kernel's own check of mtime and size on attribute refresh also drops stale pages
    here, so the hint's version check is proved by tests/xlators/test_md_cache.py."""
    size = 4 << 20
    with Mounted(VOLFILES / "md-cache.vol", tmp_path, overrides=[
            "posix.watch-brick=off", "md-cache.md-cache-timeout=1"]) as m:
        data = os.urandom(size)
        with open(m.path("f"), "wb") as f:
            f.write(data)
        assert _read(m.path("f")) == data              # first open: fills the cache
        before = _daemon_rchar(m)
        assert _read(m.path("f")) == data              # second open: kept
        assert _daemon_rchar(m) - before < size // 4
        new = os.urandom(size)
        (m.brick / "f").write_bytes(new)               # same size, new ctime
        time.sleep(1.2)                                # md-cache-timeout
        assert _read(m.path("f")) == new
