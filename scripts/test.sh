#!/usr/bin/env bash
# Runs the whole test suite (unit, translators, volfiles, real mounts) after installing
# what is missing.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
