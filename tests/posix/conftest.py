"""Fixtures of the POSIX suite: the filesystems under test (mounted once per session) and
a fresh directory per test."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from tests.posix.posixlib import (MountPool, Target, check_passthrough_decision, get_target,
                                  passthrough_mode, rmtree)

# raw = the backing directory itself (the oracle); the others are xlfs mounts, given as
# VOLFILE-STEM[:BRIDGE-FLAG...].  More for one run:
#   XLFS_POSIX_EXTRA="memory:--kernel-writeback-cache memory:--direct-io-mode=yes"
SUITE_TARGETS = ("raw", "local", "memory", "write-behind", "mirror", "dist3", "dist-rep",
                 "local:--kernel-writeback-cache", "write-behind:--direct-io-mode=yes") + tuple(
    os.environ.get("XLFS_POSIX_EXTRA", "").split())
# perf.vol and the performance translators, each alone over posix (volfiles/<stem>.vol),
# with --fuse-passthrough=auto (the default, made explicit): io-threads, md-cache,
# nl-cache and readdir-ahead use FUSE passthrough, the others decline it (checked when
# mounted, below)
SUITE_TARGETS += tuple(f"{stem}:--fuse-passthrough=auto" for stem in (
    "perf", "io-cache", "read-ahead", "quick-read", "io-threads", "md-cache", "nl-cache",
    "readdir-ahead", "open-behind"))
# FUSE passthrough: READ, WRITE and mmap done by the kernel on the brick files
SUITE_TARGETS += ("local:--fuse-passthrough=yes",)
# the README's stack (md-cache over posix), with and without passthrough
SUITE_TARGETS += ("fast:--fuse-passthrough=no", "fast:--fuse-passthrough=yes")


def _param(spec: str):
    return pytest.param(spec, id=spec.replace(":--", "+"),
                        marks=() if spec == "raw" else (pytest.mark.mount,))


@pytest.fixture(scope="session")
def posix_base():
    """A world-searchable scratch directory (other uids must reach the mountpoints)."""
    base = Path(tempfile.mkdtemp(prefix="xlfs-posix-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    rmtree(base)


@pytest.fixture(scope="session")
def mount_pool(posix_base):
    pool = MountPool(posix_base)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session", params=[_param(n) for n in SUITE_TARGETS])
def target(request, mount_pool) -> Target:
    name, *flags = request.param.split(":")
    t = get_target(mount_pool, name, *flags)
    mode = passthrough_mode(flags)
    if mode is not None:          # the stack took passthrough, or declined it, as it should
        check_passthrough_decision(t, mode)
    return t


@pytest.fixture
def d(request, target) -> Path:
    """This test's own directory on the target (removed afterwards)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:120]
    path = target.root / name
    rmtree(path)
    path.mkdir()
    os.chmod(path, 0o755)
    yield path
    rmtree(path)
    if target.mount is not None and target.mount.proc.poll() is not None:
        pytest.fail(f"the xlfs daemon of {target.name} died: {target.mount.read_log()[-3000:]}")
