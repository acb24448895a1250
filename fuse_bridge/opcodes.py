"""THE opcode table: one row per FUSE opcode.

Each row says what the kernel sends (the fixed argument's layout from ``abi`` and the
names after it), what we answer (the reply's fixed layouts; no reply at all for FORGET,
BATCH_FORGET, INTERRUPT and NOTIFY_REPLY), the protocol minor that brought the opcode, and
the handler that serves it.  Everything per-opcode is derived from here:

- dispatch (``fuse_bridge.serving``, ``routes``): the handler, the shortest valid body,
  whether a reply is due; an opcode without a handler is answered ENOSYS (no-reply ones:
  ignored);
- ``xlfsctl dump-decode`` and the TRACE log (``fuse_bridge.wire_text``): the layouts and
  the names of a request, the layouts of its reply;
- the opcode table in docs/architecture.md (:func:`markdown`, checked by
  tests/unit/test_opcode_table.py).

A handler is ``async def h(client: FuseClient, req: Request, body: memoryview)``: it
decodes ``body`` (the bytes after the in-header, extensions excluded) with ``abi``, winds
one fop on ``client.top`` and returns the reply payload (bytes, a list of parts, or None
for an empty reply), or raises ``FopError``.  A handler that hands out entries or handles
answers itself (``req.session.reply``) so that it can count only what the kernel took.
A handler marked ``encode.whole_reply`` returns the whole reply message instead, its
out-header included (``encode.attr_reply``, ``write_reply``...: one pack, one write).
"""
from __future__ import annotations

import struct
from typing import Any, Awaitable, Callable, NamedTuple, Optional

from . import abi, ops, ops_dir, ops_entry, ops_file

O = abi.Opcode
Handler = Callable[[Any, Any, memoryview], Awaitable[Any]]


class OpcodeRow(NamedTuple):
    opcode: abi.Opcode
    minor: int                          # the protocol minor (7.x) that brought it
    input: Optional[struct.Struct]      # fixed argument; None: names only, or nothing
    names: tuple[str, ...]              # NUL-terminated names after it, by role
    out: tuple[struct.Struct, ...]      # fixed parts of a successful reply, in order
    handler: Optional[Handler]          # None: answered ENOSYS
    reply: bool = True                  # False: the kernel expects no answer


def _r(op: abi.Opcode, minor: int, input: Optional[struct.Struct], handler: Optional[Handler],
       *, names: tuple[str, ...] = (), out: tuple[struct.Struct, ...] = (),
       reply: bool = True) -> OpcodeRow:
    return OpcodeRow(op, minor, input, names, out, handler, reply)


_ENTRY = (abi.ENTRY_OUT,)
_NAME = ("name",)
e, f, d = ops_entry, ops_file, ops_dir

ROWS: tuple[OpcodeRow, ...] = (
    _r(O.LOOKUP, 1, None, e.lookup, names=_NAME, out=_ENTRY),
    _r(O.FORGET, 1, abi.FORGET_IN, ops.forget, reply=False),
    _r(O.GETATTR, 1, abi.GETATTR_IN, e.getattr_, out=(abi.ATTR_OUT,)),
    _r(O.SETATTR, 1, abi.SETATTR_IN, e.setattr_, out=(abi.ATTR_OUT,)),
    _r(O.READLINK, 1, None, e.readlink),
    _r(O.SYMLINK, 1, None, e.symlink, names=("name", "target"), out=_ENTRY),
    _r(O.MKNOD, 1, abi.MKNOD_IN, e.mknod, names=_NAME, out=_ENTRY),
    _r(O.MKDIR, 1, abi.MKDIR_IN, e.mkdir, names=_NAME, out=_ENTRY),
    _r(O.UNLINK, 1, None, e.unlink, names=_NAME),
    _r(O.RMDIR, 1, None, e.rmdir, names=_NAME),
    _r(O.RENAME, 1, abi.RENAME_IN, e.rename, names=("name", "newname")),
    _r(O.LINK, 1, abi.LINK_IN, e.link, names=_NAME, out=_ENTRY),
    _r(O.OPEN, 1, abi.OPEN_IN, f.open_, out=(abi.OPEN_OUT,)),
    _r(O.READ, 1, abi.READ_IN, f.read),
    _r(O.WRITE, 1, abi.WRITE_IN, f.write, out=(abi.WRITE_OUT,)),
    _r(O.STATFS, 1, None, e.statfs, out=(abi.STATFS_OUT,)),
    _r(O.RELEASE, 1, abi.RELEASE_IN, f.release),
    _r(O.FSYNC, 1, abi.FSYNC_IN, f.fsync),
    # The short form: with SETXATTR_EXT negotiated the handler reads SETXATTR_IN.
    _r(O.SETXATTR, 1, abi.SETXATTR_IN_COMPAT, e.setxattr, names=_NAME),
    _r(O.GETXATTR, 1, abi.GETXATTR_IN, e.getxattr, names=_NAME),
    _r(O.LISTXATTR, 1, abi.GETXATTR_IN, e.listxattr),
    _r(O.REMOVEXATTR, 1, None, e.removexattr, names=_NAME),
    _r(O.FLUSH, 1, abi.FLUSH_IN, f.flush),
    # The pre-7.36 form: abi.decode_init_in reads the long one when it is there.
    _r(O.INIT, 1, abi.INIT_IN_COMPAT, ops.init, out=(abi.INIT_OUT,)),
    _r(O.OPENDIR, 1, abi.OPEN_IN, d.opendir, out=(abi.OPEN_OUT,)),
    _r(O.READDIR, 1, abi.READ_IN, d.readdir),
    _r(O.RELEASEDIR, 1, abi.RELEASE_IN, d.releasedir),
    _r(O.FSYNCDIR, 1, abi.FSYNC_IN, d.fsyncdir),
    _r(O.GETLK, 7, abi.LK_IN, f.getlk, out=(abi.LK_OUT,)),
    _r(O.SETLK, 7, abi.LK_IN, f.setlk),
    _r(O.SETLKW, 7, abi.LK_IN, f.setlkw),
    _r(O.ACCESS, 3, abi.ACCESS_IN, e.access),
    _r(O.CREATE, 3, abi.CREATE_IN, f.create, names=_NAME, out=(abi.ENTRY_OUT, abi.OPEN_OUT)),
    _r(O.INTERRUPT, 7, abi.INTERRUPT_IN, ops.interrupt, reply=False),
    _r(O.BMAP, 8, abi.BMAP_IN, None, out=(abi.BMAP_OUT,)),
    _r(O.DESTROY, 8, None, ops.destroy),
    _r(O.IOCTL, 11, abi.IOCTL_IN, None, out=(abi.IOCTL_OUT,)),
    _r(O.POLL, 11, abi.POLL_IN, None, out=(abi.POLL_OUT,)),
    # The kernel's answer to NotifyCode.RETRIEVE (which the bridge never sends).
    _r(O.NOTIFY_REPLY, 15, abi.NOTIFY_RETRIEVE_IN, None, reply=False),
    _r(O.BATCH_FORGET, 16, abi.BATCH_FORGET_IN, ops.batch_forget, reply=False),
    _r(O.FALLOCATE, 19, abi.FALLOCATE_IN, f.fallocate),
    _r(O.READDIRPLUS, 21, abi.READ_IN, d.readdirplus),
    _r(O.RENAME2, 23, abi.RENAME2_IN, e.rename2, names=("name", "newname")),
    _r(O.LSEEK, 24, abi.LSEEK_IN, f.lseek, out=(abi.LSEEK_OUT,)),
    _r(O.COPY_FILE_RANGE, 28, abi.COPY_FILE_RANGE_IN, f.copy_file_range,
       out=(abi.WRITE_OUT,)),
    _r(O.SETUPMAPPING, 31, abi.SETUPMAPPING_IN, None),
    _r(O.REMOVEMAPPING, 31, abi.REMOVEMAPPING_IN, None),
    _r(O.SYNCFS, 34, abi.SYNCFS_IN, ops.syncfs),
    # A placeholder name may end the body; it carries no meaning.
    _r(O.TMPFILE, 37, abi.CREATE_IN, None, out=(abi.ENTRY_OUT, abi.OPEN_OUT)),
    _r(O.STATX, 39, abi.STATX_IN, None, out=(abi.STATX_OUT,)),
    _r(O.COPY_FILE_RANGE_64, 45, abi.COPY_FILE_RANGE_IN, f.copy_file_range,
       out=(abi.COPY_FILE_RANGE_OUT,)),
    _r(O.CUSE_INIT, 0, abi.CUSE_INIT_IN, None, out=(abi.CUSE_INIT_OUT,)),
)
del e, f, d

#: The rows by opcode number.
TABLE: dict[int, OpcodeRow] = {int(r.opcode): r for r in ROWS}
#: Opcodes the kernel expects no answer to.
NO_REPLY: frozenset[int] = frozenset(op for op, r in TABLE.items() if not r.reply)


def row(opcode: int) -> Optional[OpcodeRow]:
    return TABLE.get(opcode)


def min_body(opcode: int) -> int:
    """The shortest body a request of ``opcode`` may have (its fixed argument)."""
    r = TABLE.get(opcode)
    return r.input.size if r is not None and r.input is not None else 0


def markdown() -> str:
    """The opcode table as documented in docs/architecture.md."""
    lines = ["| opcode | # | since | argument | names | reply (fixed part) | served by |",
             "|---|---|---|---|---|---|---|"]
    for r in ROWS:
        arg = f"{_layout_name(r.input)} ({r.input.size} B)" if r.input is not None else "-"
        if not r.reply:
            out = "none"
        else:
            out = " + ".join(_layout_name(x) for x in r.out) or "-"
        served = (f"`{r.handler.__module__.rsplit('.', 1)[1]}.{r.handler.__name__}`"
                  if r.handler is not None else ("ignored" if not r.reply else "ENOSYS"))
        since = f"7.{r.minor}" if r.minor else "CUSE"
        lines.append(f"| {r.opcode.name} | {int(r.opcode)} | {since} | {arg} | "
                     f"{', '.join(r.names) or '-'} | {out} | {served} |")
    return "\n".join(lines) + "\n"


def _layout_name(layout: struct.Struct) -> str:
    for name, value in vars(abi).items():
        if value is layout and name.isupper():
            return f"`{name}`"
    return "?"


BEGIN = "<!-- opcode table: begin -->"
END = "<!-- opcode table: end -->"
DOC = "docs/architecture.md"


def with_table(document: str) -> str:
    """``document`` with the text between BEGIN and END replaced by :func:`markdown`."""
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown()}{END}{tail}"


if __name__ == "__main__":          # python -m fuse_bridge.opcodes [--write]
    import pathlib
    import sys
    path = pathlib.Path(__file__).resolve().parents[1] / DOC
    if sys.argv[1:] == ["--write"]:
        path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.stdout.write(markdown())
