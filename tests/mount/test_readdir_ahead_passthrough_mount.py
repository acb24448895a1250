"""performance/readdir-ahead with FUSE passthrough on real mounts.

readdir-ahead declares ``passes_data_through``: over posix with
``--fuse-passthrough=yes`` the kernel reads and writes brick files itself (no READ or
WRITE reaches the daemon, counted in a ``--dump-fuse`` recording as in
test_passthrough_mount.py), fsx stays clean, and the sizes ``ls -l`` and ``stat`` see
for a file a passthrough writer keeps appending to are never older than the writes
that had returned before they were asked: readdir-ahead does not hand out the
attributes of entries it read ahead for such a file (xlators/performance/readdir_ahead.py).

Stacks: volfiles/readdir-ahead.vol (readdir-ahead alone over posix) and md-cache over
readdir-ahead over posix (md-cache's FOPEN_CACHE_DIR).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.mount.test_passthrough_mount import exercise
from tests.mountlib import VOLFILES, Mounted, can_mount, requests_in_dump
from tests.posix.test_fsx import Fsx, _supported

pytestmark = [pytest.mark.mount, pytest.mark.timeout(240),
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

MD_CACHE_OVER_RDA = """\
volume posix
    type storage/posix
    option directory /var/lib/xlfs/brick
end-volume

volume readdir-ahead
    type performance/readdir-ahead
    subvolumes posix
end-volume

volume md-cache
    type performance/md-cache
    subvolumes readdir-ahead
end-volume
"""

FILES = 600          # a listing of several READDIR(PLUS) requests, read ahead
ROUNDS = 25


@pytest.fixture(params=["readdir-ahead", "md-cache-over-rda"])
def volfile(request, tmp_path: Path) -> Path:
    if request.param == "readdir-ahead":
        return VOLFILES / "readdir-ahead.vol"
    vol = tmp_path / "md-cache-over-rda.vol"
    vol.write_text(MD_CACHE_OVER_RDA)
    return vol


def test_data_bypasses_the_daemon_and_fsx_is_clean(tmp_path: Path, volfile: Path) -> None:
    dump = tmp_path / "fuse.dump"
    with Mounted(volfile, tmp_path, "--fuse-passthrough=yes",
                 f"--dump-fuse={dump}") as m:
        exercise(m, m.brick)
        os.mkdir(m.path("fsx"))
        path = m.path("fsx", "file")
        fsx = Fsx(path, 20261207, _supported(path))
        done = fsx.run(1500, 15.0)
        assert done >= 300, f"only {done} fsx operations"
        log = m.read_log()
    assert "PASSTHROUGH" in log.split("INIT: kernel", 1)[1].splitlines()[0]
    got = requests_in_dump(dump)
    assert got["OPEN"] + got["CREATE"] >= 5
    assert got["READ"] == 0 and got["WRITE"] == 0, got


def _ls_sizes(directory: str) -> dict[str, int]:
    """Sizes of the regular files ``ls -l`` lists (GNU ls: getdents, then a stat each)."""
    out = subprocess.run(["ls", "-l", "--time-style=+", directory], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    sizes = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and line.startswith("-"):
            sizes[fields[-1]] = int(fields[4])
    return sizes


def test_listed_sizes_follow_a_passthrough_writer(tmp_path: Path, volfile: Path) -> None:
    """A file appended to through a passthrough descriptor in the middle of a listing of
    its directory that stats each entry as it comes (scandir): afterwards fstat, stat
    and ``ls -l`` give the size written.

    How the kernel is led to take attributes from readdir-ahead's buffer: each round
    lists a directory whose 600 files were made in the brick, so the kernel learns them
    from READDIRPLUS; a stat of such an entry while it is valid makes the kernel ask
    READDIRPLUS for the next part too, so the second request (the one that starts the
    read-ahead) and the ones after it are READDIRPLUS.  Attributes stay valid for 30 s:
    the kernel keeps the size a READDIRPLUS reply gives it until the next write."""
    dump = tmp_path / "fuse.dump"
    # no brick watch: its IN_MODIFY of the kernel's own passthrough writes would drop
    # readdir-ahead's buffers and hide what this test is about
    with Mounted(volfile, tmp_path, "--fuse-passthrough=yes", "--attribute-timeout=30",
                 "--entry-timeout=30", f"--dump-fuse={dump}",
                 overrides=["posix.watch-brick=off"]) as m:
        for r in range(ROUNDS):
            name = f"d{r:02d}"
            (m.brick / name).mkdir()
            for i in range(FILES):
                (m.brick / name / f"f{i:04d}").write_bytes(b"x" * (i % 13))
            # the written file: one the listing reaches after the read-ahead began
            # (the brick's order is the listing's)
            target = os.listdir(m.brick / name)[FILES * 3 // 4 + r]
            (m.brick / name / target).write_bytes(b"")
            d, w = m.path(name), m.path(name, target)
            wfd = os.open(w, os.O_WRONLY | os.O_APPEND)
            written, write_at = 0, (r * FILES) // ROUNDS
            try:
                with os.scandir(d) as it:
                    for i, e in enumerate(it):
                        e.stat(follow_symlinks=False)
                        if i == write_at:
                            written += os.write(wfd, b"y" * (r + 1))
                assert os.fstat(wfd).st_size == written, (r, write_at)
                assert os.stat(w).st_size == written, (r, write_at)
                sizes = _ls_sizes(d)
                assert sizes.pop(target) == written, (r, write_at)
                assert all(sizes[f"f{i:04d}"] == i % 13 for i in range(FILES)
                           if f"f{i:04d}" != target)
            finally:
                os.close(wfd)
            assert (m.brick / name / target).stat().st_size == written
        text = m.statedump()          # not .meta: reading it would send READs
        section = text.split("[xlator.performance.readdir-ahead.", 1)[1].split("\n\n")[0]
        rda = dict(line.split("=", 1) for line in section.splitlines() if "=" in line)
        log = m.read_log()
    print(f"readdir-ahead: {rda}")
    assert int(rda["hits"]) > 0 and int(rda["prefetched"]) > 0, rda
    assert int(rda["unattributed"]) > 0, rda       # the writer's entry was read ahead
    assert rda["passthrough_writers"] == "0", rda
    got = requests_in_dump(dump)
    assert got["WRITE"] == 0 and got["READ"] == 0, got
    assert "Traceback" not in log, log[-3000:]
