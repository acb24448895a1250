"""debug/io-stats: the dump on request, ``setfattr -n trusted.io-stats-dump -v NAME MNT``.

As in GlusterFS (io-stats.c, ``conditional_dump``): a setxattr whose key matches
``*io*stat*dump`` makes every debug/io-stats it passes write its statistics to
``DUMPDIR/NAME.VOLUME``, where DUMPDIR is the statedump directory (``$XLFS_DUMP_DIR``,
else ``/var/run/xlfs`` for root, ``/tmp`` for others; GlusterFS's is /var/run/gluster),
NAME is the value with a leading ``/`` dropped and every other ``/`` turned into ``-``,
and VOLUME is the io-stats volume's name.  A value containing ``../`` is refused.  The
format is the text table (``profile info``), or JSON when the key matches
``*io*stat*<pid>_json_dump`` (``<pid>`` the daemon's).  Any path of the mount works.

The key never reaches the storage: the last io-stats on the way answers the setxattr
itself.  Unlike GlusterFS, which ignores a failed dump and reports success, a refused
name (EINVAL) or a file that cannot be written (its errno) fails the setxattr.
"""
from __future__ import annotations

import errno
import fnmatch
import os
from typing import Any

import trio

from ..core.errors import FopError
from ..core.statedump import dump_directory

DUMP_KEY_GLOB = "*io*stat*dump"


def is_dump_key(name: Any) -> bool:
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).decode(errors="replace")
    return isinstance(name, str) and fnmatch.fnmatchcase(name, DUMP_KEY_GLOB)


def dump_path(value: bytes, volume: str, directory: str = "") -> str:
    """Where the dump asked for with ``value`` goes (GlusterFS's naming)."""
    text = bytes(value).rstrip(b"\0").decode(errors="replace")
    if "../" in text:
        raise FopError(errno.EINVAL, f"{text}: no \"../\" allowed in the dump name")
    text = text[1:] if text.startswith("/") else text
    if not text:
        raise FopError(errno.EINVAL, "no dump name given")
    return os.path.join(directory or dump_directory(), f"{text.replace('/', '-')}.{volume}")


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


async def dump_on_request(xl: Any, name: Any, value: bytes) -> str:
    """Write ``xl``'s statistics as the setxattr ``name``=``value`` asks; its path."""
    key = bytes(name).decode(errors="replace") if isinstance(name, (bytes, bytearray)) \
        else str(name)
    path = dump_path(value, xl.name)
    as_json = fnmatch.fnmatchcase(key, f"*io*stat*{os.getpid()}_json_dump")
    text = xl.dump_json() + "\n" if as_json else xl.dump_text()
    await trio.to_thread.run_sync(_write, path, text)
    xl.log.info("io-stats dump written to %s (%s)", path, key)
    return path


def _io_stats_below(xl: Any) -> bool:
    cls = type(xl)
    todo = list(xl.children)
    while todo:
        c = todo.pop()
        if isinstance(c, cls):
            return True
        todo.extend(c.children)
    return False


def install_dump_xattr(cls: type) -> None:
    """Make ``cls.setxattr`` (io-stats' counted one) answer the dump keys."""
    counted = cls.setxattr

    async def setxattr(self: Any, frame: Any, inode: Any, name: Any, value: Any,
                       flags: Any) -> None:
        if is_dump_key(name):
            await dump_on_request(self, name, value)
            if not _io_stats_below(self):
                return None           # the key must not reach the storage
        return await counted(self, frame, inode, name, value, flags)

    setxattr.__name__ = "setxattr"
    setxattr.__qualname__ = f"{cls.__name__}.setxattr"
    setxattr.__signature__ = getattr(counted, "__signature__", None)  # type: ignore
    setxattr.__doc__ = counted.__doc__
    cls.setxattr = setxattr
