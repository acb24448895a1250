#!/usr/bin/env bash
# Mounts volfiles/fast.vol (md-cache over posix, the fastest correct stack measured in
# docs/benchmarks.md) on ./mnt over the brick ./brick, in the foreground: Ctrl-C
# unmounts.  FUSE passthrough is used when the kernel and privileges allow it (auto).
# Extra arguments go to xlfs (e.g. --debug, --fuse-passthrough=no, or -f for another
# volfile: the last -f wins).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p brick mnt
echo "xlfs: serving $(pwd)/brick on $(pwd)/mnt (Ctrl-C unmounts)"
exec .venv/bin/xlfs -N --xlator-option=posix.directory="$(pwd)/brick" \
    -f volfiles/fast.vol --fuse-passthrough=auto "$@" "$(pwd)/mnt"
