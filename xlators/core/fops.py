"""The one table of fops.

Everything that needs to know "which fops exist and what they take" reads this table: the
``Translator`` base class generates its pass-through defaults from it, debug/trace prints
arguments by these names, debug/io-stats counts by it, error-gen picks plausible errnos
from it, the conformance check in ``xlators.testing`` drives every fop through it, and the
docs list it.  A new fop is added here and nowhere else.

Every fop is an ``async def NAME(self, frame, *params)``.  ``forget`` is the only fop
without a reply to the kernel; it still takes a frame (a system frame) for uniformity.
"""
from __future__ import annotations

import errno as E
import linecache
import re
from typing import Any, Callable, NamedTuple


class Fop(NamedTuple):
    name: str
    params: tuple[str, ...]        # after ``frame``; a name ending in "=" has default None/0
    result: str                    # what it returns (documentation and tracing)
    modifies: bool                 # always changes the filesystem (read-only refuses it)
    errnos: tuple[int, ...]        # plausible failures (error-gen's choice when unset)
    data_in: str = ""              # param holding bytes written (io-stats counts them)
    data_out: bool = False         # result is bytes read (io-stats counts them)
    description: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.rstrip("=") for p in self.params)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p for p in self.params if not p.endswith("="))


_F = Fop
FOPS: tuple[Fop, ...] = (
    _F("lookup", ("loc",), "Entry", False, (E.ENOENT, E.ESTALE, E.EACCES),
       description="resolve loc.name in loc.parent"),
    _F("getattr", ("inode", "fd="), "Attr", False, (E.ENOENT, E.ESTALE),
       description="stat / fstat"),
    _F("setattr", ("inode", "changes", "fd="), "Attr", True, (E.EPERM, E.EACCES, E.EROFS),
       description="chmod, chown, truncate, utimens (a SetAttr)"),
    _F("access", ("inode", "mask"), "None", False, (E.EACCES,)),
    _F("readlink", ("inode",), "bytes", False, (E.EINVAL, E.ENOENT)),
    _F("mknod", ("loc", "mode", "rdev", "umask"), "Entry", True, (E.EEXIST, E.ENOSPC, E.EACCES)),
    _F("mkdir", ("loc", "mode", "umask"), "Entry", True, (E.EEXIST, E.ENOSPC, E.EACCES)),
    _F("unlink", ("loc",), "None", True, (E.ENOENT, E.EACCES, E.EISDIR)),
    _F("rmdir", ("loc",), "None", True, (E.ENOENT, E.ENOTEMPTY, E.EACCES)),
    _F("symlink", ("target", "loc"), "Entry", True, (E.EEXIST, E.ENOSPC, E.EACCES)),
    _F("rename", ("oldloc", "newloc", "flags="), "None", True,
       (E.ENOENT, E.EEXIST, E.ENOTEMPTY, E.EXDEV, E.EACCES),
       description="flags: RENAME_NOREPLACE / RENAME_EXCHANGE"),
    _F("link", ("inode", "newloc"), "Entry", True, (E.EEXIST, E.EMLINK, E.EACCES)),
    _F("create", ("loc", "flags", "mode", "umask", "fd"), "Entry", True,
       (E.EEXIST, E.ENOSPC, E.EACCES)),
    _F("open", ("inode", "flags", "fd"), "None", False, (E.EACCES, E.ENOENT, E.EISDIR)),
    _F("readv", ("fd", "size", "offset", "flags="), "bytes", False, (E.EIO, E.EBADF),
       data_out=True),
    _F("writev", ("fd", "data", "offset", "flags="), "int", True, (E.EIO, E.ENOSPC, E.EDQUOT),
       data_in="data"),
    _F("flush", ("fd",), "None", False, (E.EIO, E.ENOSPC)),
    _F("fsync", ("fd", "datasync"), "None", False, (E.EIO, E.ENOSPC)),
    _F("release", ("fd",), "None", False, ()),
    _F("opendir", ("inode", "fd"), "None", False, (E.EACCES, E.ENOTDIR)),
    _F("readdir", ("fd", "offset", "size"), "list[DirEntry]", False, (E.EIO, E.EBADF)),
    _F("readdirp", ("fd", "offset", "size"), "list[DirEntry]", False, (E.EIO, E.EBADF),
       description="readdir whose entries carry .entry (inode and attributes)"),
    _F("fsyncdir", ("fd", "datasync"), "None", False, (E.EIO,)),
    _F("releasedir", ("fd",), "None", False, ()),
    _F("statfs", ("inode",), "StatFs", False, (E.EIO,)),
    _F("setxattr", ("inode", "name", "value", "flags"), "None", True,
       (E.ENOTSUP, E.EEXIST, E.ENODATA, E.ENOSPC, E.EPERM)),
    _F("getxattr", ("inode", "name"), "bytes", False, (E.ENODATA, E.ENOTSUP)),
    _F("listxattr", ("inode",), "list[bytes]", False, (E.ENOTSUP,)),
    _F("removexattr", ("inode", "name"), "None", True, (E.ENODATA, E.ENOTSUP, E.EPERM)),
    _F("lk", ("fd", "cmd", "lock"), "Lock", False, (E.EAGAIN, E.EDEADLK, E.ENOLCK),
       description="cmd: LK_GET / LK_SET / LK_SETW; POSIX record locks and flock"),
    _F("fallocate", ("fd", "mode", "offset", "length"), "None", True,
       (E.ENOSPC, E.EOPNOTSUPP),
       description="mode: FALLOC_FL_* (keep-size, punch-hole, zero-range)"),
    _F("lseek", ("fd", "offset", "whence"), "int", False, (E.ENXIO, E.EINVAL),
       description="SEEK_DATA / SEEK_HOLE"),
    _F("copy_file_range", ("fd_in", "off_in", "fd_out", "off_out", "length", "flags"), "int",
       True, (E.EIO, E.ENOSPC, E.EXDEV)),
    _F("resolve", ("nodeid",), "Entry", False, (E.ESTALE,),
       description="find the object whose export key is nodeid (see xlators.core.inode) "
                   "when no Inode holds it any more: file handles (open_by_handle_at, NFS "
                   "export) of inodes the kernel forgot; ESTALE when it is gone"),
    _F("forget", ("inode",), "None", False, (),
       description="the last reference to an inode is gone: drop per-inode state"),
    _F("ipc", ("op", "xdata="), "dict", False, (E.EOPNOTSUPP,),
       description="extension fop between translators"),
)

FOP_BY_NAME: dict[str, Fop] = {f.name: f for f in FOPS}


class _NotGiven:
    """Default of a generated wrapper's optional parameter: "the caller did not pass it",
    so the child gets its own default (None in one translator, 0 in another)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = _NotGiven()


def compile_fop(fop: Fop, template: str, env: dict[str, Any]) -> Callable[..., Any]:
    """A function for ``fop`` with the table's exact parameters, from ``template``.

    On the request path, ``def f(self, frame, *args, **kwargs)`` and a wind through
    ``getattr(child, name)(frame, *args, **kwargs)`` pack and unpack the arguments at
    every translator; a generated function takes and passes them by name instead.
    ``template`` is the source of one function, with ``{name}`` (the fop), ``{params}``
    (its parameters after ``frame``; an optional one defaults to NOT_GIVEN) and
    ``{wind:X}`` for the call of ``X.<fop>(frame, ...)`` passing exactly what was given.
    ``env`` gives the globals the source uses."""
    required = [p for p in fop.params if not p.endswith("=")]
    optional = [p.rstrip("=") for p in fop.params if p.endswith("=")]
    params = required + [f"{p}=NOT_GIVEN" for p in optional]

    def wind(target: str) -> str:
        call = f"{target}.{fop.name}(frame{''.join(', ' + p for p in required)}"
        if not optional:
            return call + ")"
        opt = optional[-1]      # the table has at most one optional parameter per fop
        return f"({call}) if {opt} is NOT_GIVEN else {call}, {opt}))"

    src = template
    for target in set(re.findall(r"\{wind:(\w+)\}", src)):
        src = src.replace("{wind:%s}" % target, wind(target))
    src = src.replace("{name}", fop.name).replace("{params}", ", ".join(params))
    filename = f"<{env.get('__name__', 'fop')}.{fop.name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)  # tracebacks
    namespace = dict(env, NOT_GIVEN=NOT_GIVEN)
    exec(compile(src, filename, "exec"), namespace)
    return namespace[fop.name]
FOP_NAMES: tuple[str, ...] = tuple(f.name for f in FOPS)

# Fops with no error to report upward: a leaf with no implementation just succeeds.
NO_ERROR_FOPS = frozenset({"forget", "release", "releasedir", "flush"})

# GlusterFS's names for fops that xlfs merges; accepted wherever fop names are options.
FOP_ALIASES: dict[str, str] = {
    "stat": "getattr", "fstat": "getattr", "fsetattr": "setattr", "truncate": "setattr",
    "ftruncate": "setattr", "read": "readv", "write": "writev", "fsetxattr": "setxattr",
    "fgetxattr": "getxattr", "fremovexattr": "removexattr", "seek": "lseek",
    "discard": "fallocate", "zerofill": "fallocate", "inodelk": "lk", "finodelk": "lk",
    "entrylk": "lk", "fentrylk": "lk",
}


def resolve_fop_names(text: str, what: str = "fop",
                      on_unknown: "Callable[[str], None] | None" = None) -> frozenset[str]:
    """Parse a comma/space separated list of fop names (case-insensitive, GlusterFS aliases
    allowed) into xlfs fop names; an empty text means every fop.  An unknown name raises
    ValueError listing the known ones, or is passed to ``on_unknown`` and skipped."""
    words = [w.strip().lower() for w in text.replace(" ", ",").split(",") if w.strip()]
    if not words:
        return frozenset(FOP_NAMES)
    out = set()
    for w in words:
        name = FOP_ALIASES.get(w, w)
        if name in FOP_BY_NAME:
            out.add(name)
        elif on_unknown is not None:
            on_unknown(w)
        else:
            raise ValueError(f"unknown {what} {w!r}; known: {', '.join(FOP_NAMES)}")
    return frozenset(out)
