"""The POSIX suite (tests/posix/test_posix_suite.py, the same cases) on an xlfs mount over
storage/gfapi and a replica-2 GlusterFS volume (fixtures in tests/gluster/conftest.py).

Cases GlusterFS itself cannot pass are skipped with the measured reason."""
import pytest

from tests.posix.test_posix_suite import CASES, Env

LIMITS = {
    "rename_exchange": "libgfapi has no renameat2: RENAME_EXCHANGE is EINVAL",
    "xattrs": "the 4000-byte value does not fit next to GlusterFS's own trusted.* xattrs "
              "in the brick's ext4 inode (ENOSPC from the brick)",
    "path_beyond_path_max": "GlusterFS bricks keep real paths: a directory chain "
                            "beyond PATH_MAX cannot be created (ENOENT)",
    "fallocate_modes": "GlusterFS 10.3 reports st_blocks from before a KEEP_SIZE "
                       "fallocate (the bricks have the blocks)",
}


@pytest.mark.mount
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.skip(reason=LIMITS[n])) if n in LIMITS else n
    for n in sorted(CASES)])
def test_posix(name: str, target, d) -> None:
    CASES[name](Env(target, d))
