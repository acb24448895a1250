"""FUSE messages as one line of text: every field of a request, its reply or a
notification, decoded with ``fuse_bridge.abi``'s layouts as the opcode table
(``fuse_bridge.opcodes``) assigns them to each opcode's request and reply (this module
holds no struct format and no per-opcode layout of its own: only field names where abi has
no NamedTuple for a layout, and how a few bodies are shown).

    READ unique=14 nodeid=5 uid=0 gid=0 pid=812 len=80 fh=1 offset=0 size=4096 ...
    READ unique=14 ok len=16400 data=16384 bytes

:class:`Conversation` pairs each reply with its request (by ``unique``) and follows INIT's
reply (whether SETXATTR carries the long ``SETXATTR_IN``).  Used by ``xlfsctl dump-decode``
(fuse_bridge.dump) and by the ``-L TRACE`` request log (fuse_bridge.trace_log).  File data
and xattr values are shown by length only; names are shown quoted.
"""
from __future__ import annotations

import errno
import struct
from typing import Any, Optional, Sequence

from . import abi
from .opcodes import NO_REPLY, TABLE

O = abi.Opcode
_ATTR = abi.Attr._fields
_STATX = ("mask", "blksize", "attributes", "nlink", "uid", "gid", "mode", "ino", "size",
          "blocks", "attributes_mask", "atime", "atime_nsec", "btime", "btime_nsec",
          "ctime", "ctime_nsec", "mtime", "mtime_nsec", "rdev_major", "rdev_minor",
          "dev_major", "dev_minor")

#: Field names of every abi layout that has no NamedTuple of its own (or is a compound).
FIELD_NAMES: dict[struct.Struct, tuple[str, ...]] = {
    abi.FORGET_IN: ("nlookup",),
    abi.BATCH_FORGET_IN: ("count",),
    abi.RENAME_IN: ("newdir",),
    abi.RENAME2_IN: abi.Rename2In._fields,
    abi.LINK_IN: ("oldnodeid",),
    abi.ACCESS_IN: ("mask",),
    abi.GETXATTR_IN: ("size",),
    abi.INTERRUPT_IN: ("unique",),
    abi.INIT_IN_COMPAT: abi.InitIn._fields[:4],
    abi.INIT_IN: abi.InitIn._fields,
    abi.SETUPMAPPING_IN: ("fh", "foffset", "len", "flags", "moffset"),
    abi.REMOVEMAPPING_IN: ("count",),
    abi.SYNCFS_IN: (),
    abi.CUSE_INIT_IN: ("major", "minor", "flags"),
    abi.ENTRY_OUT: ("nodeid", "generation", "entry_valid", "attr_valid",
                    "entry_valid_nsec", "attr_valid_nsec") + _ATTR,
    abi.ATTR_OUT: ("attr_valid", "attr_valid_nsec") + _ATTR,
    abi.STATX_OUT: ("attr_valid", "attr_valid_nsec", "flags") + _STATX,
    abi.WRITE_OUT: ("size",),
    abi.GETXATTR_OUT: ("size",),
    abi.BMAP_OUT: ("block",),
    abi.LSEEK_OUT: ("offset",),
    abi.POLL_OUT: ("revents",),
    abi.COPY_FILE_RANGE_OUT: ("bytes_copied",),
    abi.IOCTL_OUT: ("result", "flags", "in_iovs", "out_iovs"),
    abi.CUSE_INIT_OUT: ("major", "minor", "flags", "max_read", "max_write", "dev_major",
                        "dev_minor"),
    abi.NOTIFY_INVAL_INODE_OUT: ("ino", "off", "len"),
    abi.NOTIFY_INVAL_ENTRY_OUT: ("parent", "namelen", "flags"),
    abi.NOTIFY_DELETE_OUT: ("parent", "child", "namelen"),
    abi.NOTIFY_STORE_OUT: ("nodeid", "offset", "size"),
    abi.NOTIFY_RETRIEVE_OUT: ("notify_unique", "nodeid", "offset", "size"),
    abi.NOTIFY_POLL_WAKEUP_OUT: ("kh",),
    abi.NOTIFY_PRUNE_OUT: ("count",),
}
# Layouts named by an abi NamedTuple of the same name.
for _layout, _tuple in ((abi.GETATTR_IN, abi.GetattrIn), (abi.SETATTR_IN, abi.SetattrIn),
                        (abi.MKNOD_IN, abi.MknodIn), (abi.MKDIR_IN, abi.MkdirIn),
                        (abi.OPEN_IN, abi.OpenIn), (abi.CREATE_IN, abi.CreateIn),
                        (abi.OPEN_OUT, abi.OpenOut), (abi.RELEASE_IN, abi.ReleaseIn),
                        (abi.FLUSH_IN, abi.FlushIn), (abi.READ_IN, abi.ReadIn),
                        (abi.WRITE_IN, abi.WriteIn), (abi.FSYNC_IN, abi.FsyncIn),
                        (abi.SETXATTR_IN, abi.SetxattrIn),
                        (abi.SETXATTR_IN_COMPAT, abi.SetxattrInCompat),
                        (abi.LK_IN, abi.LkIn), (abi.LK_OUT, abi.FileLock),
                        (abi.BMAP_IN, abi.BmapIn), (abi.IOCTL_IN, abi.IoctlIn),
                        (abi.POLL_IN, abi.PollIn), (abi.FALLOCATE_IN, abi.FallocateIn),
                        (abi.LSEEK_IN, abi.LseekIn), (abi.COPY_FILE_RANGE_IN, abi.CopyFileRangeIn),
                        (abi.STATX_IN, abi.StatxIn), (abi.STATFS_OUT, abi.Kstatfs),
                        (abi.INIT_OUT, abi.InitOut),
                        (abi.NOTIFY_RETRIEVE_IN, abi.NotifyRetrieveIn)):
    FIELD_NAMES.setdefault(_layout, _tuple._fields)
del _layout, _tuple

_NOTIFY_LAYOUT: dict[int, struct.Struct] = {
    abi.NotifyCode.POLL: abi.NOTIFY_POLL_WAKEUP_OUT,
    abi.NotifyCode.INVAL_INODE: abi.NOTIFY_INVAL_INODE_OUT,
    abi.NotifyCode.INVAL_ENTRY: abi.NOTIFY_INVAL_ENTRY_OUT,
    abi.NotifyCode.STORE: abi.NOTIFY_STORE_OUT,
    abi.NotifyCode.RETRIEVE: abi.NOTIFY_RETRIEVE_OUT,
    abi.NotifyCode.DELETE: abi.NOTIFY_DELETE_OUT,
    abi.NotifyCode.PRUNE: abi.NOTIFY_PRUNE_OUT,
}
_NAMED_AFTER = {abi.NotifyCode.INVAL_ENTRY, abi.NotifyCode.DELETE}
_DATA_REPLY = {O.READ, O.GETXATTR, O.LISTXATTR, O.IOCTL}


opcode_name = abi.opcode_name


def _value(name: str, value: int) -> str:
    if name == "mode" or name.endswith("mask") and name != "sx_mask":
        return oct(value)
    if "flags" in name or name in ("valid", "fopen", "events", "revents"):
        return hex(value)
    return str(value)


def fields(layout: struct.Struct, data: Any, offset: int = 0) -> list[str]:
    """``name=value`` for every field of ``layout`` at ``offset`` of ``data``."""
    values = layout.unpack_from(data, offset)
    names = FIELD_NAMES.get(layout, ())
    if len(names) != len(values):
        names = tuple(f"field{i}" for i in range(len(values)))
    return [f"{n}={_value(n, v)}" for n, v in zip(names, values)]


def _q(name: bytes) -> str:
    return repr(bytes(name))[1:]


def _extensions(ext: bytes) -> list[str]:
    out, pos = [], 0
    while pos + abi.EXT_HEADER.size <= len(ext):
        size, typ = abi.EXT_HEADER.unpack_from(ext, pos)
        if size < abi.EXT_HEADER.size:
            break
        if typ == abi.ExtType.GROUPS and size >= abi.EXT_HEADER.size + abi.SUPP_GROUPS.size:
            (count,) = abi.SUPP_GROUPS.unpack_from(ext, pos + abi.EXT_HEADER.size)
            start = pos + abi.EXT_HEADER.size + abi.SUPP_GROUPS.size
            gids = abi.unpack_u32s(ext, start, count) if \
                start + 4 * count <= len(ext) else ()
            out.append("groups=" + ",".join(map(str, gids)))
        elif typ <= abi.FUSE_MAX_NR_SECCTX:
            out.append(f"secctx={typ}")
        else:
            out.append(f"ext{typ}={size - abi.EXT_HEADER.size}b")
        pos += size
    return out


def request_layout(opcode: int, setxattr_ext: bool, body_len: int) -> Optional[struct.Struct]:
    if opcode == O.SETXATTR and setxattr_ext:
        return abi.SETXATTR_IN
    if opcode == O.INIT and body_len >= abi.INIT_IN.size:
        return abi.INIT_IN
    row = TABLE.get(opcode)
    return row.input if row is not None else None


def describe_request(m: Any, setxattr_ext: bool = False) -> str:
    """One line: opcode, header fields, the fixed argument's fields, names, data."""
    m = bytes(m)
    if len(m) < abi.IN_HEADER.size:
        return f"request of {len(m)} bytes (shorter than a header)"
    length, opcode, unique, nodeid, uid, gid, pid, extlen = abi.IN_HEADER.unpack_from(m)
    parts = [opcode_name(opcode), f"unique={unique}", f"nodeid={nodeid}", f"uid={uid}",
             f"gid={gid}", f"pid={pid}", f"len={length}"]
    end = min(len(m), length) - extlen * 8
    body = m[abi.IN_HEADER.size:max(end, abi.IN_HEADER.size)]
    layout = request_layout(opcode, setxattr_ext, len(body))
    pos = 0
    if layout is not None:
        if len(body) < layout.size:
            return " ".join(parts + [f"malformed: body of {len(body)} bytes"])
        parts += fields(layout, body)
        pos = layout.size
    rest = body[pos:]
    if opcode == O.BATCH_FORGET and layout is not None:
        (count,) = layout.unpack_from(body)
        ones = [abi.FORGET_ONE.unpack_from(rest, i * abi.FORGET_ONE.size)
                for i in range(min(count, len(rest) // abi.FORGET_ONE.size))]
        parts.append("forget=" + ",".join(f"{n}:{k}" for n, k in ones))
        rest = b""
    row = TABLE.get(opcode)
    labels = row.names if row is not None else ()
    if labels:
        try:
            names = abi.split_names(rest, len(labels))
        except ValueError:
            parts.append(f"malformed: names not NUL-terminated ({len(rest)} bytes)")
            names, rest = [], b""
        parts += [f"{label}={_q(n)}" for label, n in zip(labels, names)]
        rest = rest[sum(len(n) + 1 for n in names):]
    if opcode in (O.WRITE, O.SETXATTR, O.IOCTL) or rest and opcode != O.TMPFILE:
        if rest or opcode in (O.WRITE, O.SETXATTR):
            parts.append(f"data={len(rest)} bytes")
    if extlen and end >= abi.IN_HEADER.size:
        parts += _extensions(m[end:end + extlen * 8])
    return " ".join(parts)


def _dirents(data: bytes, plus: bool) -> str:
    layout = abi.DIRENTPLUS if plus else abi.DIRENT
    out, pos = [], 0
    while pos + layout.size <= len(data):
        v = layout.unpack_from(data, pos)
        ino, off, namelen, typ = v[-4:]
        name = data[pos + layout.size:pos + layout.size + namelen]
        extra = f",nodeid={v[0]}" if plus else ""
        out.append(f"{_q(name)}(ino={ino},off={off},type={typ}{extra})")
        pos += (abi.direntplus_size if plus else abi.dirent_size)(namelen)
    return f"entries={len(out)}" + (" " + " ".join(out) if out else "")


def describe_reply(m: Any, request_opcode: Optional[int] = None,
                   request_size: Optional[int] = None) -> str:
    """One line for a reply (or a notification, ``unique`` 0).  ``request_opcode``: the
    opcode of the request it answers, when known; ``request_size``: that request's
    ``size`` field (a GETXATTR/LISTXATTR of size 0 asks for the length only)."""
    m = bytes(m)
    if len(m) < abi.OUT_HEADER.size:
        return f"reply of {len(m)} bytes (shorter than a header)"
    length, error, unique = abi.OUT_HEADER.unpack_from(m)
    body = m[abi.OUT_HEADER.size:length]
    if unique == 0:
        return _describe_notify(error, length, body)
    name = opcode_name(request_opcode) if request_opcode is not None else "reply"
    if error:
        code = errno.errorcode.get(-error, str(error))
        return f"{name} unique={unique} error={code} len={length}"
    parts = [name, f"unique={unique}", "ok", f"len={length}"]
    if request_opcode is None:
        if body:
            parts.append(f"body={len(body)} bytes (request not seen)")
        return " ".join(parts)
    op = request_opcode
    if op in (O.GETXATTR, O.LISTXATTR) and request_size == 0:
        layouts: tuple[struct.Struct, ...] = (abi.GETXATTR_OUT,)
    else:
        row = TABLE.get(op)
        layouts = row.out if row is not None else ()
    pos = 0
    for layout in layouts:
        if len(body) < pos + layout.size:
            break
        parts += fields(layout, body, pos)
        pos += layout.size
    rest = body[pos:]
    if op in (O.READDIR, O.READDIRPLUS):
        parts.append(_dirents(rest, op == O.READDIRPLUS))
    elif op == O.READLINK:
        parts.append(f"target={_q(rest)}")
    elif op == O.LISTXATTR and not pos:
        parts.append("names=" + ",".join(_q(n) for n in rest.split(b"\0")[:-1]))
    elif rest or op in _DATA_REPLY and not pos:
        parts.append(f"data={len(rest)} bytes")
    return " ".join(parts)


def _describe_notify(code: int, length: int, body: bytes) -> str:
    try:
        name = abi.NotifyCode(code).name
    except ValueError:
        name = str(code)
    parts = [f"NOTIFY_{name}", f"len={length}"]
    layout = _NOTIFY_LAYOUT.get(code)
    if layout is not None and len(body) >= layout.size:
        parts += fields(layout, body)
        rest = body[layout.size:]
        if code in _NAMED_AFTER:
            parts.append("name=" + _q(rest.split(b"\0", 1)[0]))
        elif code == abi.NotifyCode.STORE:
            parts.append(f"data={len(rest)} bytes")
        elif rest and code == abi.NotifyCode.PRUNE:
            ids = abi.unpack_u64s(rest, 0, len(rest) // 8)
            parts.append("nodeids=" + ",".join(map(str, ids)))
    return " ".join(parts)


class Conversation:
    """Both directions of one FUSE connection, in order: pairs replies with requests."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[int, Optional[int]]] = {}   # unique -> (opcode, size)
        self.setxattr_ext = False

    def request(self, m: Any) -> str:
        m = bytes(m)
        line = describe_request(m, self.setxattr_ext)
        if len(m) >= abi.IN_HEADER.size:
            _, opcode, unique, *_ = abi.IN_HEADER.unpack_from(m)
            if opcode not in NO_REPLY:
                size = None
                if opcode in (O.GETXATTR, O.LISTXATTR) and \
                        len(m) >= abi.IN_HEADER.size + abi.GETXATTR_IN.size:
                    (size,) = abi.GETXATTR_IN.unpack_from(m, abi.IN_HEADER.size)
                self.pending[unique] = (opcode, size)
        return line

    def reply(self, m: Any) -> str:
        m = bytes(m)
        opcode = size = None
        if len(m) >= abi.OUT_HEADER.size:
            _, error, unique = abi.OUT_HEADER.unpack_from(m)
            if unique:
                opcode, size = self.pending.pop(unique, (None, None))
            if opcode == O.INIT and error == 0 and \
                    len(m) >= abi.OUT_HEADER.size + abi.INIT_OUT.size:
                out = abi.InitOut._make(abi.INIT_OUT.unpack_from(m, abi.OUT_HEADER.size))
                flags = abi.init_flags_join(out.flags, out.flags2)
                self.setxattr_ext = bool(flags & abi.InitFlag.SETXATTR_EXT)
        return describe_reply(m, opcode, size)

    def message(self, direction: bytes | str, m: Any) -> str:
        """``R`` (read from the kernel) or ``W`` (written to it)."""
        return self.request(m) if direction in (b"R", "R") else self.reply(m)


def describe_all(messages: Sequence[tuple[str, bytes]]) -> list[str]:
    conv = Conversation()
    return [conv.message(d, m) for d, m in messages]
