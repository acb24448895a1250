#!/usr/bin/env bash
# Mounts volfiles/fast.vol (md-cache over posix, the fastest correct stack measured in
# docs/benchmarks.md) on ./mnt over the brick ./brick, in the foreground: Ctrl-C
# unmounts.  FUSE passthrough is used when the kernel and privileges allow it (auto).
# Extra arguments go to xlfs (e.g. --debug, --fuse-passthrough=no, or -f for another
# volfile: the last -f wins).  ./ is the checkout; XLFS_LOCAL_DIR=DIR (an existing
# directory) puts mnt and brick in DIR instead (tests/mount/test_mount_local.py);
# XLFS_SKIP_SETUP=1 skips scripts/setup.sh (what it installs is there already).
set -euo pipefail
dir=$(cd "${XLFS_LOCAL_DIR:-$(dirname "$0")/..}" && pwd)
cd "$(dirname "$0")/.."
[ "${XLFS_SKIP_SETUP:-}" = 1 ] || scripts/setup.sh
mkdir -p "$dir/brick" "$dir/mnt"
echo "xlfs: serving $dir/brick on $dir/mnt (Ctrl-C unmounts)"
exec .venv/bin/xlfs -N --xlator-option=posix.directory="$dir/brick" \
    -f volfiles/fast.vol --fuse-passthrough=auto "$@" "$dir/mnt"
