"""FUSE passthrough on real mounts (fuse_bridge/passthrough.py).

READ and WRITE are counted in a ``--dump-fuse`` recording (every request the kernel sent,
decoded with fuse_bridge/dump.py): with ``--fuse-passthrough=yes`` over local.vol none
reach the daemon while data, mmap, truncate and O_APPEND stay what the brick holds; a
stack with a translator that changes or must see data (rot13, error-gen on writev,
write-behind) never uses it, and ``yes`` then fails the mount with one clear line naming
that translator (on every shipped stack that declines, perf.vol among them).  fsx and the
POSIX suite run every shipped performance stack with ``--fuse-passthrough=auto`` and
check the same (tests/posix: posixlib.PASSTHROUGH_USED / PASSTHROUGH_REFUSED_BY).
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from tests.mount.test_cli import run_xlfs
from tests.mountlib import VOLFILES, Mounted, can_mount, requests_in_dump
from tests.posix.posixlib import PASSTHROUGH_REFUSED_BY

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

LOCAL = VOLFILES / "local.vol"
FAST = VOLFILES / "fast.vol"


requests = requests_in_dump


def exercise(m: Mounted, brick: Path) -> None:
    """Writes, reads, a shared mapping both ways, truncate and O_APPEND through the
    mount, each checked against the brick file (the raw directory)."""
    p = m.path("f")
    data = bytes(range(256)) * 4096                      # 1 MiB
    with open(p, "wb") as f:
        f.write(data)
    with open(p, "rb") as f:
        assert f.read() == data
    assert (brick / "f").read_bytes() == data
    # a shared writable mapping: stores reach the brick file, reads see its bytes
    fd = os.open(p, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as mm:
            assert mm[4096:4100] == data[4096:4100]
            mm[0:5] = b"hello"
            mm.flush()
    finally:
        os.close(fd)
    data = b"hello" + data[5:]
    assert (brick / "f").read_bytes() == data
    # a change made in the brick is read through a new open (cached pages are the
    # brick file's own: passthrough reads the brick page cache)
    with open(brick / "f", "r+b") as f:
        f.seek(100)
        f.write(b"BRICK")
    data = data[:100] + b"BRICK" + data[105:]
    with open(p, "rb") as f:
        assert f.read() == data
    os.truncate(p, 5000)
    data = data[:5000]
    with open(p, "ab") as f:
        f.write(b"appended")
    data += b"appended"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.pwrite(fd, b"+more", 0)                          # O_APPEND ignores the offset
    finally:
        os.close(fd)
    data += b"+more"
    assert os.stat(p).st_size == len(data)
    with open(p, "rb") as f:
        assert f.read() == data
    assert (brick / "f").read_bytes() == data
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == data


@pytest.mark.parametrize("mode", ["yes", "auto", "no"])
def test_read_write_bypass_the_daemon(tmp_path: Path, mode: str) -> None:
    dump = tmp_path / "fuse.dump"
    with Mounted(LOCAL, tmp_path, f"--fuse-passthrough={mode}", f"--dump-fuse={dump}") as m:
        exercise(m, m.brick)
        log = m.read_log()
    got = requests(dump)
    assert got["OPEN"] + got["CREATE"] >= 5
    if mode == "no":
        assert got["READ"] > 0 and got["WRITE"] > 0, got
        assert "PASSTHROUGH" not in log.split("INIT: kernel", 1)[1].splitlines()[0]
    else:
        assert got["READ"] == 0 and got["WRITE"] == 0, got
        assert "PASSTHROUGH" in log.split("INIT: kernel", 1)[1].splitlines()[0]


def test_same_file_through_two_opens_and_mmap_of_a_new_file(tmp_path: Path) -> None:
    """Two descriptors of one file share one backing (the kernel insists on it); a file
    created and mapped before any write grows through ftruncate and the mapping."""
    dump = tmp_path / "fuse.dump"
    with Mounted(LOCAL, tmp_path, "--fuse-passthrough=yes", f"--dump-fuse={dump}") as m:
        p = m.path("g")
        a = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        b = os.open(p, os.O_RDWR)
        try:
            os.pwrite(a, b"first", 0)
            assert os.pread(b, 5, 0) == b"first"
            os.ftruncate(b, 8192)
            with mmap.mmap(b, 8192) as mm:
                mm[8000:8004] = b"MMAP"
            assert os.pread(a, 4, 8000) == b"MMAP"
        finally:
            os.close(a)
            os.close(b)
        raw = (m.brick / "g").read_bytes()
        assert raw[:5] == b"first" and raw[8000:8004] == b"MMAP" and len(raw) == 8192
        # every open of the inode was released: the backing is gone, a new open works
        with open(p, "rb") as f:
            assert f.read(5) == b"first"
    got = requests(dump)
    assert got["READ"] == 0 and got["WRITE"] == 0, got


@pytest.mark.parametrize("volfile", [FAST, VOLFILES / "md-cache.vol"], ids=lambda p: p.stem)
def test_md_cache_stack_uses_it_and_keeps_sizes_right(tmp_path: Path, volfile: Path) -> None:
    """md-cache over posix passes data through; the kernel's writes bypass md-cache,
    which then must not answer GETATTR from what it cached before them (md-cache.vol
    caches for 10 minutes, fast.vol for 1 s)."""
    dump = tmp_path / "fuse.dump"
    with Mounted(volfile, tmp_path, "--fuse-passthrough=yes", "--attribute-timeout=0",
                 f"--dump-fuse={dump}") as m:
        exercise(m, m.brick)
        p = m.path("grow")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for i in range(1, 5):
                os.write(fd, b"x" * 1000)
                assert os.fstat(fd).st_size == 1000 * i
                assert os.stat(p).st_size == 1000 * i
        finally:
            os.close(fd)
        assert os.stat(p).st_size == 4000
        with open(p, "rb") as f:
            assert f.read() == b"x" * 4000
    got = requests(dump)
    assert got["READ"] == 0 and got["WRITE"] == 0, got


def test_noatime_mount_keeps_brick_atimes(tmp_path: Path) -> None:
    """The kernel opens a backing file with the caller's flags, not the noatime mount's:
    on a noatime mount files are served through the graph, and reads leave the brick
    file's atime as it was; a relatime mount does use passthrough."""
    old = 1_000_000_000 * 10**9
    brick = tmp_path / "brick"
    brick.mkdir()
    f = brick / "f"
    f.write_bytes(b"data")
    os.utime(f, ns=(old, f.stat().st_mtime_ns))
    dump = tmp_path / "fuse.dump"
    with Mounted(LOCAL, tmp_path, "--fuse-passthrough=yes", "-o", "noatime",
                 f"--dump-fuse={dump}") as m:
        with open(m.path("f"), "rb") as fh:
            assert fh.read() == b"data"
    assert f.stat().st_atime_ns == old
    assert requests(dump)["READ"] > 0               # served through the graph
    with Mounted(LOCAL, tmp_path / "relatime", "--fuse-passthrough=yes", brick=brick) as m:
        with open(m.path("f"), "rb") as fh:
            assert fh.read() == b"data"
    assert f.stat().st_atime_ns > old                 # passthrough read the brick file


ERROR_GEN_VOL = """\
volume posix
    type storage/posix
    option directory /var/lib/xlfs/brick
end-volume

volume errors
    type debug/error-gen
    option failure 0
    option enable writev,readv
    subvolumes posix
end-volume
"""

ROT13_VOL = """\
volume posix
    type storage/posix
    option directory /var/lib/xlfs/brick
end-volume

volume rot
    type playground/rot-13
    subvolumes posix
end-volume
"""


def _stack(tmp_path: Path, name: str) -> tuple[Path, bool]:
    """(volfile, whether the brick holds the bytes written: rot13 changes them)."""
    if name == "write-behind":
        return VOLFILES / "write-behind.vol", True
    if name == "rot13":
        pytest.importorskip("xlfs_rot13", reason="examples/xlfs-rot13 is not installed "
                            "(tests/unit/test_plugin_example.py installs it)")
        vol, text, plain = tmp_path / "rot13.vol", ROT13_VOL, False
    else:
        vol, text, plain = tmp_path / "error-gen.vol", ERROR_GEN_VOL, True
    vol.write_text(text)
    return vol, plain


@pytest.mark.parametrize("stack", ["error-gen", "write-behind", "rot13"])
def test_data_changing_stack_does_not_use_it(tmp_path: Path, stack: str) -> None:
    vol, plain = _stack(tmp_path, stack)
    dump = tmp_path / "fuse.dump"
    with Mounted(vol, tmp_path, "--fuse-passthrough=auto", f"--dump-fuse={dump}") as m:
        data = b"Hello, passthrough world!\n" * 5000
        with open(m.path("f"), "wb") as f:
            f.write(data)
        with open(m.path("f"), "rb") as f:
            assert f.read() == data
        fd = os.open(m.path("f"), os.O_RDWR)
        try:
            with mmap.mmap(fd, 0) as mm:
                assert mm[:26] == data[:26]
                mm[0:5] = b"HELLO"
        finally:
            os.close(fd)
        with open(m.path("f"), "rb") as f:
            assert f.read() == b"HELLO" + data[5:]
        raw = (m.brick / "f").read_bytes()
        assert len(raw) == len(data)
        assert (raw == b"HELLO" + data[5:]) == plain
        log = m.read_log()
    assert "FUSE passthrough not used" in log
    got = requests(dump)
    assert got["READ"] > 0 and got["WRITE"] > 0, got


@pytest.mark.parametrize("stack", ["perf", "write-behind"])
def test_yes_fails_the_mount_on_a_data_changing_stack(tmp_path: Path, stack: str) -> None:
    """A shipped stack that declines passthrough: ``yes`` fails with one line naming the
    volume that refuses, and nothing is mounted.  (The other declining stacks give the
    same reason to ``auto``, checked by their fsx and POSIX runs in tests/posix.)"""
    (tmp_path / "mnt").mkdir()
    r = run_xlfs("-f", str(VOLFILES / f"{stack}.vol"), "--fuse-passthrough=yes",
                 str(tmp_path / "mnt"))
    assert r.returncode != 0
    assert r.stderr.strip() == (f"xlfs: --fuse-passthrough=yes: {PASSTHROUGH_REFUSED_BY[stack]}"
                                " may change or must see file data"), r.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_mount_option_form(tmp_path: Path) -> None:
    dump = tmp_path / "fuse.dump"
    with Mounted(LOCAL, tmp_path, "-o", "fuse-passthrough=yes",
                 f"--dump-fuse={dump}") as m:
        with open(m.path("x"), "wb") as f:
            f.write(b"x" * 65536)
        with open(m.path("x"), "rb") as f:
            assert f.read() == b"x" * 65536
    got = requests(dump)
    assert got["READ"] == 0 and got["WRITE"] == 0, got


def test_writeback_cache_gives_way(tmp_path: Path) -> None:
    """The kernel refuses passthrough with its writeback cache: passthrough wins (as in
    libfuse's passthrough_hp) and the writeback cache is not asked for."""
    dump = tmp_path / "fuse.dump"
    with Mounted(LOCAL, tmp_path, "--fuse-passthrough=yes", "--kernel-writeback-cache",
                 f"--dump-fuse={dump}") as m:
        exercise(m, m.brick)
        log = m.read_log()
    init = log.split("INIT: kernel", 1)[1].splitlines()[0]
    assert "PASSTHROUGH" in init and "WRITEBACK_CACHE" not in init
    assert "--kernel-writeback-cache overridden" in log
    got = requests(dump)
    assert got["READ"] == 0 and got["WRITE"] == 0, got


def _io_stats_dump(m: Mounted, dumps: Path, name: str) -> dict:
    """local.vol's io-stats ("stats") dumped as JSON on request (io_stats_dump)."""
    import json
    os.setxattr(m.path(), f"trusted.io-stats-{m.proc.pid}_json_dump", name.encode())
    return json.loads((dumps / f"{name}.stats").read_text())


@pytest.mark.parametrize("count", ["off", "on"])
def test_io_stats_says_what_it_counts(tmp_path: Path, count: str) -> None:
    """io-stats by default lets passthrough happen and says READ/WRITE of those opens are
    not counted; ``count-passthrough-data on`` turns passthrough off (auto mounts
    without it) and every READ/WRITE reaches the daemon and is counted."""
    dump, dumps = tmp_path / "fuse.dump", tmp_path / "dumps"
    with Mounted(LOCAL, tmp_path, "--fuse-passthrough=auto", f"--dump-fuse={dump}",
                 overrides=[f"stats.count-passthrough-data={count}"],
                 env={"XLFS_DUMP_DIR": str(dumps)}) as m:
        Path(m.path("f")).write_bytes(b"x" * 10000)
        assert Path(m.path("f")).read_bytes() == b"x" * 10000
        stats = _io_stats_dump(m, dumps, "run")
        log = m.read_log()
    got = requests(dump)
    if count == "off":
        assert got["READ"] == 0 and got["WRITE"] == 0, got
        assert stats["passthrough_data"].startswith("not counted"), stats
        assert stats["passthrough_opens"] >= 2, stats
        assert stats["bytes_read"] == 0 and stats["bytes_written"] == 0, stats
    else:
        assert "count-passthrough-data on" in log
        assert got["READ"] > 0 and got["WRITE"] > 0, got
        assert stats["passthrough_data"].startswith("counted"), stats
        assert stats["passthrough_opens"] == 0, stats
        assert stats["bytes_read"] == 10000 and stats["bytes_written"] == 10000, stats


def _warm_pread_requests(m: Mounted, name: str) -> dict[str, int]:
    """Make a 4 MiB file, read it through one descriptor, then count the requests the
    kernel sends (fuse tracepoint) during 2,000 4 KiB preads at random offsets of it."""
    import random

    from benchmarks.fuse_trace import FuseTrace
    p = m.path(name)
    size = 4 << 20
    with open(p, "wb") as f:
        f.write(os.urandom(size))
    rng = random.Random(7)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(2000)]
    fd = os.open(p, os.O_RDONLY)
    try:
        assert len(os.pread(fd, size, 0)) == size
        assert m.conn is not None
        with FuseTrace(m.conn) as trace:
            for off in offsets:
                assert len(os.pread(fd, 4096, off)) == 4096
    finally:
        os.close(fd)
    return trace.counts()


def _tracing_unavailable() -> str | None:
    from benchmarks.fuse_trace import unavailable
    return unavailable()


@pytest.mark.skipif(_tracing_unavailable() is not None, reason=str(_tracing_unavailable()))
def test_warm_preads_send_nothing(tmp_path: Path) -> None:
    """Warm random reads of fast.vol reach no daemon (benchmarks' random_read_warm).
    With passthrough nothing at all is sent, even with attribute timeouts of 0: the
    kernel's passthrough read never revalidates attributes.  Without passthrough the
    page cache serves them (no READ), and with attributes valid (60 s) no GETATTR
    either; only a cache emptied from elsewhere (drop_caches by another process) would
    send READs, so that case may look twice."""
    with Mounted(FAST, tmp_path / "pt", "--fuse-passthrough=yes",
                 "--attribute-timeout=0", "--entry-timeout=0") as m:
        assert _warm_pread_requests(m, "warm") == {}
    with Mounted(FAST, tmp_path / "cached", "--fuse-passthrough=no",
                 "--attribute-timeout=60") as m:
        got = _warm_pread_requests(m, "warm")
        if got.get("READ"):
            got = _warm_pread_requests(m, "warm2")
        assert got == {}, got
