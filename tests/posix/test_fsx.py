"""fsx-style randomized data integrity on every shipped volfile.

A seeded random sequence of writes, appends, truncates, reads, mmap reads and writes,
hole punching, zeroing and in-file copies runs against one file while a shadow
bytearray says what the file must contain; every read, every size and the whole file at
the end are checked against it.  The file is closed and reopened, and fsynced, now and
then (write-behind's flush and fsync paths).

Every volfile in volfiles/ is covered (the list comes from the directory); a volfile
with features/read-only gets the read-only variant: files placed in the brick before
the mount read back exactly, and every modification fails with EROFS.  "raw" runs the
same sequence on the backing directory, to check the checker.  A run with
``--fuse-passthrough`` (every stack with a performance translator runs with ``auto``)
also checks that the stack took passthrough or declined it as it should, and counts the
READ/WRITE requests the kernel sent during the run (fuse tracepoint, Linux 6.15+): none
with passthrough, some without.

Reproduce a failure with the seed it prints:
    XLFS_FSX_SEED=1234 XLFS_FSX_OPS=5000 pytest tests/posix/test_fsx.py -k write-behind
(XLFS_FSX_SEED=random draws a new seed.)
"""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import random
import stat
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.mountlib import VOLFILES, wait_until
from tests.posix.posixlib import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
                                  FALLOC_FL_ZERO_RANGE, PASSTHROUGH_USED, RequestCount,
                                  Target, check_data_path, check_passthrough_decision, errno_of,
                                  fallocate, get_target, passthrough_mode, probe, rmtree)

ALL_VOLFILES = sorted(VOLFILES.glob("*.vol"))
MAXLEN = 256 * 1024          # fsx's default maximum file size
MAXOP = 64 * 1024            # largest single read/write
OPS = int(os.environ.get("XLFS_FSX_OPS", "2000"))
TIME_LIMIT = float(os.environ.get("XLFS_FSX_SECONDS", "20"))


def is_read_only(volfile: Path) -> bool:
    return "features/read-only" in volfile.read_text()


def seed_for(name: str) -> int:
    env = os.environ.get("XLFS_FSX_SEED")
    if env == "random":
        return random.SystemRandom().randrange(1 << 32)
    if env:
        return int(env)
    return zlib.crc32(name.encode())


# Bridge modes that change the data path, on the stacks where they matter most.
MODES = {
    "writeback": ("--kernel-writeback-cache",),
    "direct-io": ("--direct-io-mode=yes",),
    "passthrough": ("--fuse-passthrough=yes",),
    "passthrough-auto": ("--fuse-passthrough=auto",),
    "passthrough-no": ("--fuse-passthrough=no",),
}
VARIANTS = (("local", "writeback"), ("write-behind", "writeback"), ("memory", "direct-io"),
            ("write-behind", "direct-io"))
# the caches under the bridge's data modes (read-ahead sees each pread in direct-io)
VARIANTS += (("io-cache", "writeback"), ("io-cache", "direct-io"), ("read-ahead", "direct-io"),
             ("quick-read", "writeback"), ("md-cache", "writeback"), ("open-behind", "direct-io"))
# FUSE passthrough: the kernel reads, writes and maps the brick file itself
VARIANTS += (("local", "passthrough"), ("fast", "passthrough"), ("md-cache", "passthrough"),
             ("nl-cache", "passthrough"), ("io-threads", "passthrough"))
# Every stack with a performance translator (each one alone over posix, perf.vol, fast.vol)
# runs with --fuse-passthrough=auto (the default, made explicit) instead of a plain run:
# it uses passthrough or declines it as posixlib.PASSTHROUGH_USED / PASSTHROUGH_REFUSED_BY
# say.  The stacks that use it run once more without it.
PERFORMANCE_STACKS = tuple(v.stem for v in ALL_VOLFILES if "performance/" in v.read_text())
VARIANTS += tuple((stem, "passthrough-no") for stem in sorted(PASSTHROUGH_USED)
                  if stem in PERFORMANCE_STACKS)


def _params():
    out = [pytest.param("raw", (), id="raw")]
    for v in ALL_VOLFILES:
        mode = "passthrough-auto" if v.stem in PERFORMANCE_STACKS else None
        out.append(pytest.param(v.stem, MODES[mode] if mode else (),
                                id=f"{v.stem}+{mode}" if mode else v.stem,
                                marks=pytest.mark.mount))
    for stem, mode in VARIANTS:
        if (VOLFILES / f"{stem}.vol").exists():
            out.append(pytest.param(stem, MODES[mode], id=f"{stem}+{mode}",
                                    marks=pytest.mark.mount))
    return out


class Fsx:
    def __init__(self, path: str, seed: int, ops_supported: dict[str, bool]) -> None:
        self.path = path
        self.seed = seed
        self.rng = random.Random(seed)
        self.shadow = bytearray()
        self.history: deque = deque(maxlen=25)
        self.supported = ops_supported
        self.fd = -1
        self.afd = -1
        self.n = 0
        self.counts: dict[str, int] = {}

    # -- bookkeeping -------------------------------------------------------------------
    def fail(self, msg: str) -> None:
        hist = "\n  ".join(self.history)
        pytest.fail(f"fsx seed {self.seed}, op #{self.n}: {msg}\nlast operations:\n  {hist}\n"
                    f"(reproduce: XLFS_FSX_SEED={self.seed} XLFS_FSX_OPS={self.n + 1})",
                    pytrace=False)

    def note(self, text: str) -> None:
        self.history.append(f"#{self.n} {text}")

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.afd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def close(self) -> None:
        for fd in (self.fd, self.afd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.afd = -1

    def check_range(self, got: bytes, off: int, size: int, how: str) -> None:
        want = bytes(self.shadow[off:off + size])
        if got != want:
            bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                       min(len(got), len(want)))
            self.fail(f"{how} at {off}+{size}: {len(got)} bytes read, {len(want)} "
                      f"expected; first difference at offset {off + bad} "
                      f"(got {got[bad:bad + 8].hex()}, want {want[bad:bad + 8].hex()})")

    def check_size(self, how: str) -> None:
        size = os.fstat(self.fd).st_size
        if size != len(self.shadow):
            self.fail(f"after {how}: st_size {size}, expected {len(self.shadow)}")

    def _span(self, limit: int) -> tuple[int, int]:
        off = self.rng.randrange(max(limit, 1))
        size = self.rng.randrange(1, MAXOP + 1)
        if self.rng.random() < 0.3:                     # small, unaligned
            size = self.rng.randrange(1, 300)
        return off, min(size, MAXLEN - off)

    def _data(self, size: int) -> bytes:
        # cheap, position-dependent, never all zeros
        base = self.rng.randrange(1, 256)
        return bytes(((base + i * 7) % 251) + 1 for i in range(min(size, 4096))) * \
            (size // 4096 + 1)

    def _grow(self, end: int) -> None:
        if end > len(self.shadow):
            self.shadow.extend(bytes(end - len(self.shadow)))

    # -- operations --------------------------------------------------------------------
    def op_read(self) -> None:
        if not self.shadow:
            return False
        off, size = self._span(len(self.shadow))
        self.note(f"read {off}+{size}")
        self.check_range(os.pread(self.fd, size, off), off, size, "read")

    def op_write(self) -> None:
        off, size = self._span(MAXLEN)
        data = self._data(size)[:size]
        self.note(f"write {off}+{size}")
        if os.pwrite(self.fd, data, off) != size:
            self.fail("short write")
        self._grow(off + size)
        self.shadow[off:off + size] = data

    def op_append(self) -> None:
        size = self.rng.randrange(1, 20000)
        size = min(size, MAXLEN - len(self.shadow))
        if size <= 0:
            return False
        data = self._data(size)[:size]
        self.note(f"append {len(self.shadow)}+{size}")
        if os.write(self.afd, data) != size:
            self.fail("short append")
        self.shadow.extend(data)

    def op_truncate(self) -> None:
        size = self.rng.randrange(MAXLEN + 1)
        if self.rng.random() < 0.5:
            size = self.rng.randrange(len(self.shadow) + 1)
        self.note(f"truncate {len(self.shadow)} -> {size}")
        os.ftruncate(self.fd, size)
        if size < len(self.shadow):
            del self.shadow[size:]
        else:
            self._grow(size)

    def op_mapread(self) -> None:
        if not self.shadow or not self.supported["mmap"]:
            return False
        off, size = self._span(len(self.shadow))
        size = min(size, len(self.shadow) - off)
        self.note(f"mapread {off}+{size}")
        with mmap.mmap(self.fd, len(self.shadow), mmap.MAP_SHARED, mmap.PROT_READ) as m:
            got = m[off:off + size]
        self.check_range(got, off, size, "mapread")

    def op_mapwrite(self) -> None:
        if not self.supported["mmap"]:
            return False
        off, size = self._span(MAXLEN)
        data = self._data(size)[:size]
        end = off + size
        self.note(f"mapwrite {off}+{size}")
        if end > len(self.shadow):
            os.ftruncate(self.fd, end)                  # as fsx does: grow, then map
            self._grow(end)
        with mmap.mmap(self.fd, end, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[off:end] = data
            m.flush()
        self.shadow[off:end] = data

    def op_punch(self) -> None:
        if not self.shadow or not self.supported.get("punch"):
            return False
        off, size = self._span(len(self.shadow))
        self.note(f"punch_hole {off}+{size}")
        fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, size)
        end = min(off + size, len(self.shadow))
        self.shadow[off:end] = bytes(end - off)

    def op_zero(self) -> None:
        if not self.supported.get("zero"):
            return False
        off, size = self._span(MAXLEN)
        keep = self.rng.random() < 0.5
        self.note(f"zero_range {off}+{size} keep_size={keep}")
        fallocate(self.fd, FALLOC_FL_ZERO_RANGE | (FALLOC_FL_KEEP_SIZE if keep else 0),
                  off, size)
        end = off + size
        if not keep:
            self._grow(end)
        end = min(end, len(self.shadow))
        if end > off:
            self.shadow[off:end] = bytes(end - off)

    def op_copy(self) -> None:
        if len(self.shadow) < 2:
            return False
        src, size = self._span(len(self.shadow))
        size = min(size, len(self.shadow) - src)
        dst = self.rng.randrange(MAXLEN - size + 1)
        if dst < src + size and src < dst + size:
            return False                                      # overlapping: EINVAL
        self.note(f"copy_range {src}+{size} -> {dst}")
        done = 0
        while done < size:
            n = os.copy_file_range(self.fd, self.fd, size - done, src + done, dst + done)
            if n <= 0:
                self.fail(f"copy_file_range returned {n}")
            done += n
        data = bytes(self.shadow[src:src + size])
        self._grow(dst + size)
        self.shadow[dst:dst + size] = data

    def op_fsync(self) -> None:
        self.note("fsync")
        os.fsync(self.fd)

    def op_reopen(self) -> None:
        self.note("close+open")
        self.close()
        self.open()

    WEIGHTS = {"read": 20, "write": 20, "append": 6, "truncate": 6, "mapread": 8,
               "mapwrite": 8, "punch": 4, "zero": 4, "copy": 4, "fsync": 2, "reopen": 2}

    def run(self, ops: int, seconds: float) -> int:
        names = list(self.WEIGHTS)
        weights = [self.WEIGHTS[n] for n in names]
        deadline = time.monotonic() + seconds
        self.open()
        try:
            for self.n in range(ops):
                name = self.rng.choices(names, weights)[0]
                try:
                    skipped = getattr(self, "op_" + name)() is False
                except OSError as exc:
                    self.fail(f"{name}: {exc}")
                if not skipped:
                    self.counts[name] = self.counts.get(name, 0) + 1
                self.check_size(name)
                if time.monotonic() > deadline:
                    break
            done = self.n + 1
        finally:
            self.close()
        # the whole file, through a fresh open
        self.n = done
        with open(self.path, "rb") as f:
            got = f.read()
        self.check_range(got, 0, max(len(got), len(self.shadow)), "final read")
        if os.stat(self.path).st_size != len(self.shadow):
            self.fail("final size")
        return done


def _supported(path: str) -> dict[str, bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, bytes(8192))
        punch = probe(lambda: fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                        0, 4096)) is None
        zero = probe(lambda: fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 4096)) is None
        # shared writable mappings (not with FUSE direct I/O, unless the kernel allows it)
        mapping = probe(lambda: mmap.mmap(fd, 8192, mmap.MAP_SHARED,
                                          mmap.PROT_READ | mmap.PROT_WRITE).close()) is None
    finally:
        os.close(fd)
        os.unlink(path)
    return {"punch": punch, "zero": zero, "mmap": mapping}


class FsxThread:
    """``fsx.run(ops, seconds)`` in a background thread while the test changes things
    around it (fails a brick, reloads the volfile):

        with FsxThread(fsx, 100000, 25.0, detail=m.read_log) as run:
            run.wait_ops(400)          # fsx is well under way
            ...                        # break something
            run.wait_ops(400)          # and it goes on

    ``done`` is what ``fsx.run`` returned; leaving the block waits for the run to end and
    raises what it raised (an exception of the block's own goes first)."""

    def __init__(self, fsx: Fsx, ops: int, seconds: float,
                 detail: Optional[Callable[[], str]] = None) -> None:
        self.fsx = fsx
        self.done: Optional[int] = None
        self.detail = detail
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ops, seconds), daemon=True)

    def _run(self, ops: int, seconds: float) -> None:
        try:
            self.done = self.fsx.run(ops, seconds)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self._failure.append(exc)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait_ops(self, more: int, timeout: float = 30.0) -> bool:
        """Wait until fsx has done ``more`` operations past where it is now, or has
        ended; True if it is still running."""
        at = self.fsx.n
        wait_until(lambda: self.fsx.n > at + more or not self.running, timeout,
                   f"{more} more fsx operations (after {at})", detail=self.detail)
        return self.running

    def __enter__(self) -> "FsxThread":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._thread.join(60)
        if exc_type is not None:
            return
        if self._failure:
            raise self._failure[0]
        assert not self.running, "fsx still running 60 s after the test let it be"


@pytest.mark.parametrize("name, flags", _params())
def test_fsx(name: str, flags: tuple, mount_pool) -> None:
    if name != "raw" and is_read_only(VOLFILES / f"{name}.vol"):
        return _read_only(name, mount_pool)
    target = get_target(mount_pool, name, *flags)
    d = target.root / "fsx"
    rmtree(d)
    d.mkdir()
    try:
        path = str(d / "file")
        supported = _supported(path)
        seed = seed_for(" ".join((name,) + flags))
        fsx = Fsx(path, seed, supported)
        # with --fuse-passthrough: the stack took it or declined it as it should, and
        # READ/WRITE reached the daemon during the run exactly when it did not
        mode = passthrough_mode(flags)
        used = mode is not None and check_passthrough_decision(target, mode)
        with (RequestCount(target.mount) if mode else contextlib.nullcontext()) as sent:
            done = fsx.run(OPS, TIME_LIMIT)
        print(f"fsx {' '.join((name,) + flags)}: seed {seed}, {done} operations {fsx.counts}")
        assert done >= min(OPS, 300), f"only {done} operations in {TIME_LIMIT}s"
        if mode is not None and sent.counts is not None:
            print(f"requests sent: {sent.counts}")
            check_data_path(target, used, sent.counts)
        elif mode is not None:
            print(f"READ/WRITE not counted: {sent.why}")
    finally:
        rmtree(d)
        if target.mount is not None and target.mount.proc.poll() is not None:
            pytest.fail(f"daemon died: {target.mount.read_log()[-3000:]}")


# -- read-only volfiles -----------------------------------------------------------------
def _ro_files(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {
        "empty": b"",
        "small.txt": b"hello, read-only world\n",
        "page": rng.randbytes(4096),
        "odd": rng.randbytes(123457),
        "big": rng.randbytes(3 * 1024 * 1024 + 17),
        "sub/deeper/nested": rng.randbytes(70000),
    }
    return files


SPARSE_AT = 5 * (1 << 30)


def _fill_brick(brick: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = brick / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    with open(brick / "sparse", "wb") as f:
        f.seek(SPARSE_AT)
        f.write(b"end of a sparse file")
    os.symlink("small.txt", brick / "link")
    os.setxattr(brick / "small.txt", "user.note", b"kept")


def _read_only(name: str, pool) -> None:
    seed = seed_for(name)
    files = _ro_files(seed)
    target: Target = get_target(pool, name, prepare=lambda b: _fill_brick(b, files))
    root = target.root
    rng = random.Random(seed)
    try:
        listed = sorted(os.listdir(root))
        assert listed == sorted(["empty", "small.txt", "page", "odd", "big", "sub", "sparse",
                                 "link"]), listed
        for rel, data in files.items():
            p = root / rel
            assert os.stat(p).st_size == len(data), rel
            assert p.read_bytes() == data, rel
            if data:
                fd = os.open(p, os.O_RDONLY)
                try:
                    for _ in range(50):
                        off = rng.randrange(len(data))
                        size = rng.randrange(1, 70000)
                        got = os.pread(fd, size, off)
                        assert got == data[off:off + size], \
                            f"seed {seed}: {rel} at {off}+{size}"
                    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
                        assert m[:] == data, f"{rel} through mmap"
                finally:
                    os.close(fd)
        fd = os.open(root / "sparse", os.O_RDONLY)
        try:
            assert os.fstat(fd).st_size == SPARSE_AT + 20
            assert os.pread(fd, 4096, 1 << 32) == bytes(4096)
            assert os.pread(fd, 100, SPARSE_AT - 10) == bytes(10) + b"end of a sparse file"
        finally:
            os.close(fd)
        assert os.readlink(root / "link") == "small.txt"
        assert (root / "link").read_bytes() == files["small.txt"]
        assert os.getxattr(root / "small.txt", "user.note") == b"kept"
        # every modification fails with EROFS
        f = root / "small.txt"
        refused = {
            "open for writing": lambda: os.open(f, os.O_WRONLY),
            "open O_RDWR": lambda: os.open(f, os.O_RDWR),
            "open O_TRUNC": lambda: os.open(f, os.O_RDONLY | os.O_TRUNC),
            "create": lambda: os.open(root / "new", os.O_CREAT | os.O_WRONLY, 0o644),
            "mkdir": lambda: os.mkdir(root / "newdir"),
            "mknod": lambda: os.mknod(root / "node", stat.S_IFREG | 0o644),
            "unlink": lambda: os.unlink(f),
            "rmdir": lambda: os.rmdir(root / "sub" / "deeper"),
            "rename": lambda: os.rename(f, root / "renamed"),
            "link": lambda: os.link(f, root / "hardlink"),
            "symlink": lambda: os.symlink("x", root / "sym"),
            "truncate": lambda: os.truncate(f, 0),
            "chmod": lambda: os.chmod(f, 0o600),
            "chown": lambda: os.chown(f, 1000, 1000),
            "utime": lambda: os.utime(f, ns=(1, 1)),
            "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
            "removexattr": lambda: os.removexattr(f, "user.note"),
        }
        wrong = {what: errno.errorcode.get(e, e) if e else "success"
                 for what, fn in refused.items() if (e := errno_of(fn)) != errno.EROFS}
        assert not wrong, f"expected EROFS: {wrong}"
        # nothing changed underneath
        assert sorted(os.listdir(root)) == listed
        assert f.read_bytes() == files["small.txt"]
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o644
        assert os.listdir(target.brick) and (target.brick / "small.txt").read_bytes() == \
            files["small.txt"]
    finally:
        if target.mount is not None and target.mount.proc.poll() is not None:
            pytest.fail(f"daemon died: {target.mount.read_log()[-3000:]}")


def test_a_background_run_hands_its_failure_to_the_test(tmp_path):
    """FsxThread (the mount tests' fsx-while-failing runner) on the raw directory: a run
    that goes well reports what it did; a failing one fails the test at the block's end."""
    path = str(tmp_path / "good")
    fsx = Fsx(path, seed_for("thread"), _supported(path))
    with FsxThread(fsx, 300, TIME_LIMIT) as run:
        run.wait_ops(10)
    assert run.done == 300 and not run.running
    path = str(tmp_path / "bad")
    fsx = Fsx(path, seed_for("thread"), _supported(path))
    fsx.check_size = lambda how: fsx.fail(f"planted, after {how}")
    with pytest.raises(pytest.fail.Exception, match="planted"):
        with FsxThread(fsx, 300, TIME_LIMIT) as run:
            assert not run.wait_ops(10)            # it ended at once
