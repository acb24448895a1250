#!/usr/bin/env bash
# Mounts volfiles/local.vol on ./mnt over the brick ./brick, in the foreground: Ctrl-C
# unmounts.  Extra arguments go to xlfs (e.g. --debug).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p brick mnt
echo "xlfs: serving $(pwd)/brick on $(pwd)/mnt (Ctrl-C unmounts)"
exec .venv/bin/xlfs -N --xlator-option=posix.directory="$(pwd)/brick" \
    -f volfiles/local.vol "$@" "$(pwd)/mnt"
