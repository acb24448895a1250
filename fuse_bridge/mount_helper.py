"""``mount.xlfs``: lets ``mount -t xlfs VOLFILE /mnt -o opts`` and fstab lines work.

    # /etc/fstab
    /etc/xlfs/local.vol  /mnt/data  xlfs  defaults,_netdev,attribute-timeout=0  0 0

mount(8) runs ``mount.xlfs VOLFILE MOUNTPOINT [-sfnv] [-o OPTIONS]``.  Like
mount.glusterfs, every ``key=value`` option maps onto the long flag of the same name
(``-o fuse-flush-handle-interrupt=yes``), ``x-*``, ``_netdev``, ``auto``, ``noauto`` and
``defaults`` are ignored, atime-like and other generic options go to the kernel, an
unknown option fails with "Invalid option", and it returns only once the mount answers.

``mount -o remount,ro MNT`` (``rw``, ``noatime``, any VFS flag) changes the live mount in
place (fuse_bridge.mount.remount): same FUSE connection, same daemon, which notices the
new flags itself (fuse_bridge.mount_watch).
"""
from __future__ import annotations

import sys
from typing import Optional

from .cli import main as xlfs_main
from .cli_args import EXIT_USAGE


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    fake = False
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word in ("-s", "-n", "-v"):       # sloppy, no mtab, verbose: nothing to do
            continue
        if word == "-f":                     # mount(8)'s "fake": check only
            fake = True
            continue
        if word == "-t":                     # the type (mount(8) passes it with a subtype)
            i += 1
            continue
        if word == "-o":
            if i >= len(argv):
                print("mount.xlfs: option '-o' requires an argument", file=sys.stderr)
                return EXIT_USAGE
            out += ["-o", argv[i]]
            i += 1
            continue
        if word.startswith("-o") and len(word) > 2:
            out += ["-o", word[2:]]
            continue
        out.append(word)
    if fake:
        out.insert(0, "--volfile-check")
    return xlfs_main(out, prog="mount.xlfs")


if __name__ == "__main__":
    sys.exit(main())
