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
need=()
command -v pypy3 >/dev/null 2>&1 || need+=(pypy3)
pypy3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(pypy3-venv)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "setup-pypy: missing Debian packages: ${need[*]} (run as root, or apt-get install them)" >&2
        exit 1
    fi
fi
if [ ! -x .venv-pypy/bin/python ]; then
    pypy3 -m venv .venv-pypy
fi
stamp=.venv-pypy/.xlfs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv-pypy/bin/pip install -q --upgrade pip >/dev/null
    .venv-pypy/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
