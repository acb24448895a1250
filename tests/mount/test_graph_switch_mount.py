"""Graph switch on SIGHUP (fuse_bridge.graph_switch) on real mounts: the volfile is
rewritten with a new topology and the daemon switches to it while files stay open."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
from pathlib import Path

import pytest

from tests.mountlib import Mounted, needs_mount, run_in_child, wait_until

pytestmark = [pytest.mark.mount, needs_mount]

POSIX = """volume posix
    type storage/posix
    option directory {brick}
end-volume
"""
LOCKS = """
volume locks
    type features/locks
    subvolumes {below}
end-volume
"""
LOCAL = POSIX + LOCKS.format(below="posix") + """
volume stats
    type debug/io-stats
    option count-fop-hits on
    subvolumes locks
end-volume
"""
WRITE_BEHIND = POSIX + LOCKS.format(below="posix") + """
volume wb
    type performance/write-behind
    subvolumes locks
end-volume

volume stats
    type debug/io-stats
    subvolumes wb
end-volume
"""
MIRROR = POSIX + """
volume posix2
    type storage/posix
    option directory {brick2}
end-volume

volume mirror
    type cluster/replicate
    subvolumes posix posix2
end-volume
""" + LOCKS.format(below="mirror")

OUTCOME = re.compile(r"SIGHUP: (graph switched|graph switch to .* (refused|failed)|"
                     r"cannot reload|.* reconfigured in place|.* unchanged)")


def outcomes(m: Mounted) -> list[str]:
    return [x.group(0) for x in OUTCOME.finditer(m.read_log())]


def sighup(m: Mounted, vol: Path, text: str, timeout: float = 30.0) -> str:
    """Rewrite the volfile, SIGHUP the daemon, return the outcome line it logs."""
    before = len(outcomes(m))
    vol.write_text(text)
    m.proc.send_signal(signal.SIGHUP)
    got = wait_until(lambda: len(outcomes(m)) > before and outcomes(m), timeout,
                     "a SIGHUP outcome in the log", detail=m.read_log)
    return got[before]


def mounted(tmp_path: Path, text: str, *flags: str, **kw) -> tuple[Mounted, Path]:
    vol = tmp_path / "stack.vol"
    vol.write_text(text.format(brick=tmp_path / "brick", brick2=tmp_path / "brick2"))
    # These switches go to stacks that must see file data (write-behind, replicate) while
    # files are open: FUSE passthrough would refuse them (test_passthrough_mount.py).
    return Mounted(vol, tmp_path, "--fuse-passthrough=no", *flags, **kw), vol


def test_switch_keeps_open_files_and_a_listing_going(tmp_path: Path) -> None:
    """local stack -> the same with write-behind: a file open before the switch reads
    what was written before and takes writes after; a directory listing started before
    goes on where it was; new files work."""
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    m, vol = mounted(tmp_path, LOCAL, env={"XLFS_DUMP_DIR": str(dumps)})
    names = {f"entry-{i:04d}-{'x' * 80}" for i in range(600)}
    with m:
        d = m.path("d")
        os.mkdir(d)
        for n in names:
            open(os.path.join(d, n), "w").close()
        fd = os.open(m.path("f"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"before the switch\n")
            listing = os.scandir(d)
            seen = [next(listing).name for _ in range(50)]
            out = sighup(m, vol, WRITE_BEHIND.format(brick=tmp_path / "brick"))
            assert out.startswith("SIGHUP: graph switched"), m.read_log()[-3000:]
            seen += [e.name for e in listing]
            listing.close()
            assert len(seen) == len(names) and set(seen) == names
            assert os.pread(fd, 100, 0) == b"before the switch\n"
            os.write(fd, b"after it\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        assert open(m.path("f"), "rb").read() == b"before the switch\nafter it\n"
        with open(m.path("new"), "w") as f:
            f.write("made on the new graph")
        assert open(m.path("new")).read() == "made on the new graph"
        assert "volume wb" in m.read_log().split("graph switched", 1)[1]
        m.proc.send_signal(signal.SIGUSR1)            # the statedump shows the new graph
        dump = wait_until(lambda: list(dumps.iterdir()), 10, "a statedump",
                          interval=0.05)[0].read_text()
        assert "performance.write-behind.wb]" in dump, dump[:2000]
    assert "Traceback" not in m.read_log(), m.read_log()[-3000:]


def test_switch_from_posix_to_a_mirror_of_two_bricks(tmp_path: Path) -> None:
    (tmp_path / "brick2").mkdir()
    m, vol = mounted(tmp_path, LOCAL)
    with m:
        os.mkdir(m.path("d"))
        fd = os.open(m.path("d", "f"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"one ")
            out = sighup(m, vol, MIRROR.format(brick=tmp_path / "brick",
                                               brick2=tmp_path / "brick2"))
            assert out.startswith("SIGHUP: graph switched"), m.read_log()[-3000:]
            assert os.pread(fd, 100, 0) == b"one "
            os.write(fd, b"two")
            os.fsync(fd)
        finally:
            os.close(fd)
        assert open(m.path("d", "f"), "rb").read() == b"one two"
        for b in ("brick", "brick2"):
            assert (tmp_path / b / "d" / "f").read_bytes() == b"one two", b


@pytest.mark.parametrize("case", ["unknown type", "init fails", "syntax"])
def test_a_failed_new_graph_leaves_the_old_one_serving(tmp_path: Path, case: str) -> None:
    m, vol = mounted(tmp_path, LOCAL)
    bad = {"unknown type": LOCAL + "\nvolume x\n    type no/such-type\n"
                                   "    subvolumes stats\nend-volume\n",
           "init fails": MIRROR.replace("{brick2}", str(tmp_path / "missing")),
           "syntax": "volume x\n    type\nend-volume\n"}[case]
    with m:
        fd = os.open(m.path("f"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"kept")
            out = sighup(m, vol, bad.format(brick=tmp_path / "brick"))
            assert not out.startswith("SIGHUP: graph switched"), out
            log = m.read_log()
            want = {"unknown type": "no/such-type", "init fails": "init failed",
                    "syntax": "cannot reload"}[case]
            line = next(x for x in log.splitlines() if "SIGHUP" in x and want in x)
            assert "the running graph serves on" in line, line
            assert os.pread(fd, 10, 0) == b"kept"
            os.write(fd, b" and more")
        finally:
            os.close(fd)
        assert open(m.path("f"), "rb").read() == b"kept and more"
        assert sighup(m, vol, WRITE_BEHIND.format(brick=tmp_path / "brick")).startswith(
            "SIGHUP: graph switched")


@pytest.mark.parametrize("kind", ["posix", "flock"])
def test_a_held_lock_refuses_the_switch_until_released(tmp_path: Path, kind: str) -> None:
    m, vol = mounted(tmp_path, LOCAL)
    lock = fcntl.lockf if kind == "posix" else fcntl.flock
    with m:
        with open(m.path("f"), "w+") as f:
            lock(f, fcntl.LOCK_EX)
            out = sighup(m, vol, WRITE_BEHIND.format(brick=tmp_path / "brick"))
            assert "refused" in out, out
            line = next(x for x in m.read_log().splitlines() if "locks are held" in x)
            assert "volume 'locks' (features/locks) holds or waits for 1 lock" in line
            lock(f, fcntl.LOCK_UN)
            out = sighup(m, vol, WRITE_BEHIND.format(brick=tmp_path / "brick") + "\n")
            assert out.startswith("SIGHUP: graph switched"), out
            lock(f, fcntl.LOCK_EX)                    # locks work on the new graph

            def conflicts() -> int:                   # ... and conflict as before
                with open(m.path("f"), "r+") as other:
                    try:
                        lock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError as exc:
                        return 0 if exc.errno in (errno.EAGAIN, errno.EACCES) else 2
                return 1
            assert run_in_child(conflicts) == 0


@pytest.mark.parametrize("flag", ["--read-only", "-oro"])
def test_read_only_mount_switches_and_stays_read_only(tmp_path: Path, flag: str) -> None:
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "f").write_text("readable")
    m, vol = mounted(tmp_path, LOCAL, flag)
    with m:
        fd = os.open(m.path("f"), os.O_RDONLY)
        try:
            out = sighup(m, vol, WRITE_BEHIND.format(brick=tmp_path / "brick"))
            log = m.read_log()
            assert out.startswith("SIGHUP: graph switched"), log[-3000:]
            assert "different graph" not in log
            assert "volume xlfs-read-only" in log.split("graph switched", 1)[1]
            assert os.pread(fd, 20, 0) == b"readable"
        finally:
            os.close(fd)
        with pytest.raises(OSError) as exc:
            open(m.path("g"), "w")
        assert exc.value.errno == errno.EROFS


@pytest.mark.parametrize("flags", [(), ("--reader-thread-count=3",)])
def test_switches_under_load_lose_nothing(tmp_path: Path, flags: tuple) -> None:
    """Two threads write, read back and list without pause while the graph switches 20
    times (with one /dev/fuse channel, and with cloned ones: every reader pauses): no
    error reaches them and every byte is where it was written."""
    import threading
    m, vol = mounted(tmp_path, LOCAL, *flags)
    texts = [WRITE_BEHIND.format(brick=tmp_path / "brick"),
             LOCAL.format(brick=tmp_path / "brick")]
    errors: list = []
    stop = threading.Event()
    written = [0, 0]

    def writer(k: int) -> None:
        try:
            fd = os.open(m.path(f"w{k}"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                i = 0
                while not stop.is_set():
                    rec = b"%08d\n" % i
                    os.pwrite(fd, rec, 9 * i)
                    assert os.pread(fd, 9, 9 * i) == rec, i
                    if i % 50 == 0:
                        os.listdir(m.mountpoint)
                        with open(m.path(f"small{k}-{i}"), "wb") as f:
                            f.write(rec)
                    i += 1
                written[k] = i
            finally:
                os.close(fd)
        except BaseException as exc:       # noqa: BLE001 - reported by the test
            errors.append(exc)

    with m:
        threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        try:
            for i in range(20):
                out = sighup(m, vol, texts[i % 2])
                assert out.startswith("SIGHUP: graph switched"), out
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors, errors
        for k in (0, 1):
            data = open(m.path(f"w{k}"), "rb").read()
            assert written[k] > 0
            assert data == b"".join(b"%08d\n" % i for i in range(written[k]))
            for i in range(0, written[k], 50):
                assert open(m.path(f"small{k}-{i}"), "rb").read() == b"%08d\n" % i


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))


def test_100_switches_with_open_files_leak_nothing(tmp_path: Path) -> None:
    """100 switches with two files and a directory held open: the daemon's descriptor
    count is the same after the 100th as after the 10th, and its memory grows by no
    more than noise (the numbers are printed: docs/operating.md quotes them)."""
    m, vol = mounted(tmp_path, LOCAL)
    texts = [WRITE_BEHIND.format(brick=tmp_path / "brick"),
             LOCAL.format(brick=tmp_path / "brick")]
    with m:
        pid = m.proc.pid
        a = os.open(m.path("a"), os.O_RDWR | os.O_CREAT, 0o644)
        b = os.open(m.path("b"), os.O_RDWR | os.O_CREAT, 0o644)
        os.mkdir(m.path("d"))
        d = os.open(m.path("d"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            samples = {}
            for i in range(1, 101):
                os.pwrite(a, b"%06d" % i, 0)
                out = sighup(m, vol, texts[(i - 1) % 2])
                assert out.startswith("SIGHUP: graph switched"), (i, out)
                assert os.pread(a, 6, 0) == b"%06d" % i
                if i in (10, 100):
                    samples[i] = (_fds(pid), _rss_kib(pid))
            os.pwrite(b, b"still open", 0)
            assert os.pread(b, 20, 0) == b"still open"
            assert os.listdir(m.path("d")) == []
        finally:
            for x in (a, b, d):
                os.close(x)
        (fds10, rss10), (fds100, rss100) = samples[10], samples[100]
        print(f"\n100 switches: descriptors {fds10} -> {fds100}, "
              f"RSS {rss10} KiB -> {rss100} KiB ({rss100 - rss10:+d} KiB)")
        assert fds100 == fds10
        assert rss100 - rss10 < 4096, (rss10, rss100)


def test_passthrough_files_refuse_a_switch_to_a_data_stack_until_closed(
        tmp_path: Path) -> None:
    """With a file open in FUSE passthrough the kernel does its READ/WRITE on the brick
    file: a new graph with a translator that must see data (write-behind) is refused
    until that file is closed, then the switch goes through and new opens use the graph."""
    m, vol = mounted(tmp_path, LOCAL)
    m.flags = ["--fuse-passthrough=auto"]              # mounted() pins "no" for the others
    with m:
        fd = os.open(m.path("f"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"open in passthrough")
            out = sighup(m, vol, WRITE_BEHIND.format(brick=tmp_path / "brick"))
            assert out.endswith("refused"), out
            assert "open files bypass the graph through FUSE passthrough" in m.read_log()
        finally:
            os.close(fd)
        out = sighup(m, vol, WRITE_BEHIND.format(brick=tmp_path / "brick"))
        assert out.startswith("SIGHUP: graph switched"), out
        with open(m.path("f"), "r+b") as f:
            assert f.read() == b"open in passthrough"
            f.write(b", then through write-behind")
    assert (tmp_path / "brick" / "f").read_bytes() == \
        b"open in passthrough, then through write-behind"
