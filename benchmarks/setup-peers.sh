#!/usr/bin/env bash
# Installs the benchmark's peers on a Debian machine (as root): the project's own set-up,
# the bench extra (pyfuse3, built from source against libfuse3-dev with pkg-config) and
# Debian's GlusterFS client (glusterfs-client; its glusterfs-common dependency carries the
# storage/posix, features/locks and debug/io-stats translators) and bindfs (a C libfuse
# passthrough).  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v glusterfs >/dev/null 2>&1 && [ ! -x /usr/sbin/glusterfs ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq glusterfs-client >/dev/null
    else
        echo "setup-peers: glusterfs-client missing (run as root, or apt-get install it)" >&2
    fi
fi
if ! command -v bindfs >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs >/dev/null
    else
        echo "setup-peers: bindfs missing (run as root, or apt-get install it)" >&2
    fi
fi
.venv/bin/python -c 'import pyfuse3' >/dev/null 2>&1 || .venv/bin/pip install -q -e '.[bench]'
