"""The kernel's directory cache (FOPEN_CACHE_DIR) driven by performance/md-cache.

md-cache hints ``cache_dir`` (and ``keep_cache`` while the directory is unchanged) on
OPENDIR; the bridge turns them into FOPEN flags, so a warm listing is served by the
kernel without READDIR requests.  A change through the mount, or made directly in the
brick (posix watch-brick's upcall), shows in the next listing.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mountlib import VOLFILES, Mounted, needs_mount, requests_in_dump, wait_until

pytestmark = [pytest.mark.mount, needs_mount]

LONG = ("--attribute-timeout=60", "--entry-timeout=60")
LISTED = ("READDIR", "READDIRPLUS")


def listed(dump: Path) -> int:
    got = requests_in_dump(dump)
    return sum(got[op] for op in LISTED)


def listings(tmp_path: Path, stem: str, times: int) -> int:
    """READDIR(PLUS) requests the kernel sent for ``times`` listings of a 200-entry
    directory on a fresh mount (the dump is read after unmount)."""
    work = tmp_path / f"{stem}-{times}"
    dump = work / "fuse.dump"
    brick = work / "brick"
    (brick / "d").mkdir(parents=True)
    for i in range(200):
        (brick / "d" / f"f{i:03}").write_bytes(b"")
    names = sorted(f"f{i:03}" for i in range(200))
    with Mounted(VOLFILES / f"{stem}.vol", work, *LONG, f"--dump-fuse={dump}") as m:
        for _ in range(times):
            assert sorted(os.listdir(m.path("d"))) == names
    return listed(dump)


@pytest.mark.parametrize("stem,cached", [("md-cache", True), ("local", False)])
def test_a_warm_listing_comes_from_the_kernel(tmp_path: Path, stem: str, cached: bool):
    once, four = listings(tmp_path, stem, 1), listings(tmp_path, stem, 4)
    assert once > 0
    assert four == (once if cached else 4 * once), (once, four)


def test_the_kept_listing_follows_changes(tmp_path: Path):
    brick = tmp_path / "brick"
    (brick / "d").mkdir(parents=True)
    (brick / "d" / "a").write_bytes(b"")
    with Mounted(VOLFILES / "md-cache.vol", tmp_path, *LONG) as m:
        d = m.path("d")
        assert os.listdir(d) == ["a"]
        assert os.listdir(d) == ["a"]
        open(os.path.join(d, "b"), "wb").close()            # through the mount
        assert sorted(os.listdir(d)) == ["a", "b"]
        os.unlink(os.path.join(d, "a"))
        assert os.listdir(d) == ["b"]
        (brick / "d" / "c").write_bytes(b"")                # behind the mount
        wait_until(lambda: sorted(os.listdir(d)) == ["b", "c"], 2.0,
                   "the listing to show b and c", interval=0.05)
