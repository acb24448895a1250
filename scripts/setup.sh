#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for xlfs: fuse3 (fusermount3, and libfuse3
# headers for the pyfuse3 benchmark peer), attr, acl and libcap2-bin (setfacl, setcap:
# the POSIX tests), glusterfs-server and glusterfs-client (storage/gfapi and its tests), a virtualenv in .venv with the package
# and its test dependencies.  Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v setfattr >/dev/null 2>&1 || need+=(attr)
command -v setfacl >/dev/null 2>&1 || need+=(acl)
PATH="$PATH:/usr/sbin:/sbin" command -v setcap >/dev/null 2>&1 || need+=(libcap2-bin)
[ -e /usr/include/fuse3/fuse_lowlevel.h ] || need+=(libfuse3-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# GlusterFS (tests/gluster, storage/gfapi): bricks (glusterfsd), glusterd and the gluster
# CLI, libgfapi (libgfapi0, pulled in by both), GlusterFS's own FUSE client (glusterfs)
PATH="$PATH:/usr/sbin:/sbin" command -v glusterfsd >/dev/null 2>&1 || need+=(glusterfs-server)
PATH="$PATH:/usr/sbin:/sbin" command -v glusterfs >/dev/null 2>&1 || need+=(glusterfs-client)
# the glusterd test's own network namespace (ip netns, nsenter, unshare)
PATH="$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "setup: missing Debian packages: ${need[*]} (run as root, or apt-get install them)" >&2
    fi
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.xlfs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
