#!/usr/bin/env bash
# Opt-in: a second virtualenv, .venv-pypy, with xlfs and its test dependencies under PyPy
# (Debian's pypy3, Python 3.9), for running the daemon under PyPy's JIT
# (docs/benchmarks.md, "The interpreter: PyPy against CPython").  scripts/setup.sh, the
# default CPython environment in .venv, is neither needed nor changed.  Safe to run
# again: it skips what is already there.
#   scripts/setup-pypy.sh
#   .venv-pypy/bin/xlfs -N -f volfiles/fast.vol --xlator-option=posix.directory=$PWD/brick mnt
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-lib.sh
need=()
command -v pypy3 >/dev/null 2>&1 || need+=(pypy3)
pypy3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(pypy3-venv)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
install_debian_packages setup-pypy "${need[@]}"
venv_with_xlfs pypy3 .venv-pypy
