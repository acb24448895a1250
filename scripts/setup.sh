#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for xlfs: fuse3 (fusermount3, and libfuse3
# headers for the pyfuse3 benchmark peer), attr, acl and libcap2-bin (setfacl, setcap:
# the POSIX tests), glusterfs-server and glusterfs-client (storage/gfapi and its tests), a virtualenv in .venv with the package
# and its test dependencies.  Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-lib.sh
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
# not root: say what is missing and go on (the tests that need it skip)
install_debian_packages setup "${need[@]}" || true
venv_with_xlfs python3 .venv
