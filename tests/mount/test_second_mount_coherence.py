"""Coherence with a second mount of the same brick, on real mounts: every cache of a
caching mount A (each shipped performance volfile alone over posix, the whole perf.vol,
and the kernel's own caches) lets a change made through mount B (local.vol: no cache
at all) be seen through A within the documented bound.

The bound: with ``watch-brick on`` in A, as soon as A's posix reads the inotify event of
B's change and its upcall has passed the translators and reached the kernel (posix
coalesces events for 10 ms).  Polled here for at most ``WINDOW`` seconds, a liveness
limit; every cache under test lasts far longer than that (translator timeouts of 60 s or
more, or no timeout; the kernel's timeouts 60 s where the kernel is under test, else 0),
so only the invalidation can make a check pass.

B makes every kind of change at once: data overwritten in place keeping size and mtime
(a cache that compares them cannot tell), a chmod, an xattr set, a truncate, an unlink,
the removal of one of a file's two names, a rename onto a name A found missing, a create
and a mkdir of names A found missing, all in a directory A has listed. Each case names
the checks its caches really hold; the hazard half (``no-watch``: watch-brick off) shows
that through A those stay stale, so the positive half cannot pass for want of a cache.
The positive half asserts every check. A hazard half that finds a kernel cache fresh is
skipped when some other process dropped the kernel's caches meanwhile
(``unless_caches_dropped``).

read-ahead's pages belong to one open file read sequentially: a test of its own.
open-behind caches nothing (its test here: a deferred open opens the file the name held
at the open, whatever a second mount did to the name since).  readdir-ahead's buffer
belongs to one open directory stream: tests/mount/test_perf_meta_coherence.py lists
through it while the brick or a second mount changes the directory.
"""
from __future__ import annotations

import mmap
import os
import stat
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import pytest

from tests.mountlib import (KERNEL_LONG_CACHE, KERNEL_NO_CACHE, VOLFILES, Mounted,
                            needs_mount, overwrite_keeping_times, read_all,
                            two_mounts, unless_caches_dropped, wait_until)

pytestmark = [pytest.mark.mount, needs_mount]

WINDOW = 2.0
WATCH = {True: "posix.watch-brick=on", False: "posix.watch-brick=off"}

SMALL = bytes(range(256)) * 15 + b"s" * 160          # 4000 bytes: quick-read's size
BIG = bytes(range(256)) * 1200                        # 300 KiB: three io-cache pages
AT, PATCH = 1000, b"N" * 100                           # the overwrite: same size and mtime
XATTR = "user.swift.metadata"                          # one md-cache keeps by default


def _patched(data: bytes) -> bytes:
    return data[:AT] + PATCH + data[AT + len(PATCH):]


def fill_brick(brick) -> None:
    d = brick / "d"
    d.mkdir(parents=True)
    (d / "small").write_bytes(SMALL)
    (d / "big").write_bytes(BIG)
    (d / "mode").write_bytes(b"m")
    os.chmod(d / "mode", 0o644)
    os.setxattr(d / "mode", XATTR, b"old")
    (d / "trunc").write_bytes(b"t" * 5000)
    (d / "gone").write_bytes(b"g")
    (d / "old").write_bytes(b"renamed")
    (d / "linked").write_bytes(b"two names")
    os.link(d / "linked", d / "link")


def change_through(b: Mounted) -> None:
    """Every kind of change, made through mount B."""
    overwrite_keeping_times(b.path("d", "small"), PATCH, AT)
    overwrite_keeping_times(b.path("d", "big"), PATCH, AT)
    os.chmod(b.path("d", "mode"), 0o600)
    os.setxattr(b.path("d", "mode"), XATTR, b"new")
    os.truncate(b.path("d", "trunc"), 100)
    os.unlink(b.path("d", "gone"))
    os.unlink(b.path("d", "link"))
    os.rename(b.path("d", "old"), b.path("d", "new"))
    with open(b.path("d", "made"), "wb") as f:
        f.write(b"made")
    os.mkdir(b.path("d", "dir"))


class Check(NamedTuple):
    """Something mount A shows: ``observe()`` is ``old`` before B's changes, ``new``
    after them."""
    observe: Callable[[], Any]
    old: Any
    new: Any


def checks(a: Mounted, held: int, mapped: mmap.mmap) -> dict[str, Check]:
    """What A shows of B's changes; ``held`` is a descriptor of A's ``d/big`` that stays
    open (the kernel keeps an open file's pages until an open without keep_cache or an
    invalidation drops them), ``mapped`` a shared mapping of it."""
    def d(*names: str) -> str:
        return a.path("d", *names)
    return {
        # first: what A asks later may refresh the inode's attributes by the way.  The
        # name removed was looked up through A (else A's posix cannot tell which inode
        # lost a link: see test_a_link_count_changed_by_a_second_mount_is_seen)
        "unlink-a-link": Check(lambda: (os.path.exists(d("link")),
                                        os.stat(d("linked")).st_nlink), (True, 2), (False, 1)),
        "data": Check(lambda: read_all(d("small")), SMALL, _patched(SMALL)),
        "big-data": Check(lambda: read_all(d("big")), BIG, _patched(BIG)),
        "open-data": Check(lambda: os.pread(held, len(BIG), 0), BIG, _patched(BIG)),
        "mmap-data": Check(lambda: mapped[:], BIG, _patched(BIG)),
        "chmod": Check(lambda: stat.S_IMODE(os.stat(d("mode")).st_mode), 0o644, 0o600),
        "xattr": Check(lambda: os.getxattr(d("mode"), XATTR), b"old", b"new"),
        "truncate": Check(lambda: os.stat(d("trunc")).st_size, 5000, 100),
        "unlink": Check(lambda: os.path.exists(d("gone")), True, False),
        "rename-from": Check(lambda: os.path.exists(d("old")), True, False),
        "rename-to": Check(lambda: os.path.exists(d("new")), False, True),
        "create": Check(lambda: os.path.exists(d("made")), False, True),
        "mkdir": Check(lambda: os.path.isdir(d("dir")), False, True),
        "listing": Check(lambda: sorted(os.listdir(d())),
                         ["big", "gone", "link", "linked", "mode", "old", "small", "trunc"],
                         ["big", "dir", "linked", "made", "mode", "new", "small", "trunc"]),
    }


# the open file's first: a new open of d/big without keep_cache drops the kernel's pages
DATA = ("open-data", "mmap-data", "data", "big-data")
ATTRIBUTES = ("chmod", "truncate", "unlink", "unlink-a-link", "rename-from")
NEGATIVES = ("rename-to", "create", "mkdir")
EVERYTHING = DATA + ATTRIBUTES + NEGATIVES + ("xattr", "listing")


@dataclass(frozen=True)
class Case:
    volfile: str
    flags: tuple[str, ...]          # A's bridge flags
    lasting: tuple[str, ...]        # overrides that make A's translator caches outlast the test
    stale: tuple[str, ...]          # the checks A's caches hold: stale without the watch


#: Stacks over posix that pass file data through use FUSE passthrough (the kernel reads
#: the brick file itself: nothing to cache); the others keep an open file's pages in
#: the kernel ("open-data", "mmap-data").
CASES = {
    # translators alone, the kernel caching no attributes or entries
    "md-cache": Case("md-cache", KERNEL_NO_CACHE, (), ATTRIBUTES + ("xattr", "listing")),
    "io-cache": Case("io-cache", KERNEL_NO_CACHE, ("ioc.cache-timeout=60",), DATA),
    "quick-read": Case("quick-read", KERNEL_NO_CACHE, ("qr.cache-invalidation=on",),
                       ("open-data", "mmap-data", "data")),
    "nl-cache": Case("nl-cache", KERNEL_NO_CACHE, (), NEGATIVES),
    # the kernel's attribute, entry and negative entry caches, no translator cache
    "kernel": Case("local", KERNEL_LONG_CACHE, (), ATTRIBUTES + NEGATIVES),
    # and its page cache, kept across opens, and directory cache, which md-cache's
    # keep_cache and cache_dir hints turn on (passthrough would bypass the page cache)
    "kernel-pages": Case("md-cache", KERNEL_LONG_CACHE + ("--fuse-passthrough=no",), (),
                         EVERYTHING),
    # the whole shipped stack, as mounted with long kernel timeouts
    "perf": Case("perf", KERNEL_LONG_CACHE, ("io-cache.cache-timeout=60",), EVERYTHING),
}


@pytest.mark.parametrize("watch", [True, False], ids=["watch-brick", "no-watch"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_change_through_a_second_mount_is_seen(tmp_path, name, watch):
    case = CASES[name]
    fill_brick(tmp_path / "brick")
    with two_mounts(VOLFILES / f"{case.volfile}.vol", tmp_path, *case.flags,
                    overrides=(WATCH[watch],) + case.lasting) as (a, b):
        held = os.open(a.path("d", "big"), os.O_RDONLY)
        mapped = mmap.mmap(held, len(BIG), prot=mmap.PROT_READ)
        try:
            shown = checks(a, held, mapped)
            with unless_caches_dropped():
                for _ in range(2):               # fill A's caches, then be served by them
                    for what, check in shown.items():
                        assert check.observe() == check.old, f"{name}: {what} before"
                change_through(b)
                if not watch:
                    time.sleep(0.5)              # the upcall would have come by now
                    for what in case.stale:
                        check = shown[what]
                        assert check.observe() == check.old, f"{name}: {what} not cached"
                    return
            for what, check in shown.items():
                wait_until(lambda: check.observe() == check.new, WINDOW,
                           f"{name}: {what} changed through the second mount",
                           detail=a.read_log, interval=0.05)
        finally:
            mapped.close()
            os.close(held)


@pytest.mark.parametrize("watch", [True, False], ids=["watch-brick", "no-watch"])
def test_read_ahead_drops_pages_a_second_mount_overwrote(tmp_path, watch):
    """An fd of A that stays open, read sequentially: the pages read-ahead fetched
    beyond the reader must go when B overwrites them.  direct-io mode, so the kernel
    passes each pread as it is.  Sync point: B then appends to ``marker``, whose size
    A's kernel caches for 60 s; once A shows the new size, the upcall of the overwrite
    (sent before it) has passed read-ahead."""
    size = 4 << 20
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "f").write_bytes(b"o" * size)
    (tmp_path / "brick" / "marker").write_bytes(b"")
    with two_mounts(VOLFILES / "read-ahead.vol", tmp_path, "--direct-io-mode=yes",
                    "--attribute-timeout=60", overrides=[WATCH[watch]]) as (a, b):
        assert os.stat(a.path("marker")).st_size == 0
        fd = os.open(a.path("f"), os.O_RDONLY)
        try:
            pos = 0
            while pos < 1 << 20:                     # sequential: pages are prefetched
                pos += len(os.pread(fd, 65536, pos))
            time.sleep(0.5)                          # the prefetch has finished
            # (a drop of the kernel's caches would refresh the marker before its upcall)
            with unless_caches_dropped():
                overwrite_keeping_times(b.path("f"), b"N" * 65536, pos)
                if watch:
                    with open(b.path("marker"), "ab") as f:
                        f.write(b"x")
                    wait_until(lambda: os.stat(a.path("marker")).st_size == 1, WINDOW,
                               "the marker's append through the second mount",
                               detail=a.read_log)
                    expect = b"N" * 65536
                else:
                    time.sleep(0.5)
                    expect = b"o" * 65536            # the prefetched page, stale
                # one read only: a repeated pread at the same offset is not sequential
                # and would bypass the pages whatever happened to them
                assert os.pread(fd, 65536, pos) == expect
        finally:
            os.close(fd)


def test_open_behind_opens_the_file_it_was_asked_for(tmp_path):
    """open-behind caches nothing, but it answers a read-only open before the brick sees
    it.  The file must still be the one that name held at the open: B replaces one
    name by a rename and unlinks another before A's first read (which makes the
    deferred opens), and A reads what it opened."""
    (tmp_path / "brick").mkdir()
    for name in ("x", "y", "z"):
        (tmp_path / "brick" / name).write_bytes(b"contents of " + name.encode())
    with two_mounts(VOLFILES / "open-behind.vol", tmp_path, "--direct-io-mode=yes",
                    overrides=[WATCH[True]]) as (a, b):
        fx = os.open(a.path("x"), os.O_RDONLY)
        fy = os.open(a.path("y"), os.O_RDONLY)
        try:
            os.rename(b.path("z"), b.path("x"))
            os.unlink(b.path("y"))
            assert os.pread(fx, 100, 0) == b"contents of x"
            assert os.pread(fy, 100, 0) == b"contents of y"
            wait_until(lambda: read_all(a.path("x")) == b"contents of z", WINDOW,
                       "x replaced through the second mount", detail=a.read_log)
        finally:
            os.close(fx)
            os.close(fy)


@pytest.mark.parametrize("change", ["link", "unlink-unseen"])
def test_a_link_count_changed_by_a_second_mount_is_seen(tmp_path, change):
    """B makes a hard link to ``x`` (posix stats the new name and finds the inode A
    holds), or removes ``q``, the second name of ``p``, which A never looked up (posix
    invalidates every held file it saw with several names); A has looked up ``x`` and
    ``p`` only, and keeps attributes 60 s."""
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "x").write_bytes(b"x")
    (tmp_path / "brick" / "p").write_bytes(b"p")
    os.link(tmp_path / "brick" / "p", tmp_path / "brick" / "q")
    with two_mounts(VOLFILES / "local.vol", tmp_path, *KERNEL_LONG_CACHE,
                    overrides=[WATCH[True]]) as (a, b):
        def links() -> tuple[int, int]:
            return os.stat(a.path("x")).st_nlink, os.stat(a.path("p")).st_nlink
        assert links() == (1, 2)
        if change == "link":
            os.link(b.path("x"), b.path("y"))
            want = (2, 2)
        else:
            os.unlink(b.path("q"))
            want = (1, 1)
        wait_until(lambda: links() == want, WINDOW,
                   f"the link counts changed through the second mount ({change})",
                   detail=lambda: f"A shows {links()}")
