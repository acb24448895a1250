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

from tests.mountlib import VOLFILES, Mounted, needs_mount, wait_until

pytestmark = [pytest.mark.mount, needs_mount]

KERNEL_NO_CACHE = ("--attribute-timeout=0", "--entry-timeout=0", "--negative-timeout=0")
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


def test_readdir_ahead_does_not_serve_attributes_older_than_a_brick_change(tmp_path):
    """The kernel keeps READDIRPLUS attributes (attribute timeout 30 s here): entries
    read ahead before a change in the brick must not be served after it.  (Entry timeout
    0: the stats below are LOOKUPs, after which the kernel asks READDIRPLUS again.)

    This checks the end-to-end promise only: it also passes when readdir-ahead ignores
    the upcalls, because the kernel asks READDIRPLUS only at offset 0 and for the first
    request after lookups, so what is read ahead is plain READDIR, which carries no
    attributes.  The discard itself is proved by tests/xlators/test_readdir_ahead.py."""
    with Mounted(VOLFILES / "readdir-ahead.vol", tmp_path, "--attribute-timeout=30",
                 "--entry-timeout=0") as m:
        os.mkdir(m.path("d"))
        n = 1500
        for i in range(n):
            os.mknod(m.path("d", f"file-{i:05d}"))
        with os.scandir(m.path("d")) as it:
            seen = [next(it).name for _ in range(5)]      # the rest is read ahead
            for name in seen:
                os.stat(m.path("d", name))
            time.sleep(0.3)
            # the first names seen last: once the kernel shows the change of the last
            # one, every upcall before it has been handled too
            order = [f"file-{i:05d}" for i in range(n) if f"file-{i:05d}" not in seen]
            for name in order + seen:
                with open(m.brick / "d" / name, "ab") as f:
                    f.write(b"12345")
            wait_until(lambda: os.stat(m.path("d", seen[-1])).st_size == 5, WAIT,
                       "the last entry's new size")
            seen += [e.name for e in it]
        assert len(seen) == n
        stale = [name for name in seen if os.stat(m.path("d", name)).st_size != 5]
        assert not stale, f"{len(stale)} entries show the size before the brick change"


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
