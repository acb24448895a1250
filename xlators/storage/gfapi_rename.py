"""storage/gfapi's rename without libgfapi's two forced lookups.

``glfs_h_rename`` (and ``glfs_rename``) resolve both names with a lookup they force
(``glfs_resolve_at`` with an iatt, GlusterFS 10.3's ``api/src/glfs-handleops.c``): one
request to every brick per name, one name after the other, then the locks and the
rename.  The kernel looked both names up just before, and storage/gfapi knows the
objects behind them, so this module builds the two ``loc_t`` itself and sends
replicate the rename alone, as ``glfs_h_rename`` does after its lookups
(``syncop_rename`` on the active graph, then ``inode_rename`` in libgfapi's inode
table).  Measured on a replica-2 volume: 4 LOOKUPs to the bricks per rename(2) instead
of 8 (the kernel's own lookup of the new name is the rest).

What it needs of GlusterFS beyond libgfapi's public API, each checked once at
``probe``, where any doubt leaves renames to ``glfs_h_rename``:

- exported symbols: libgfapi's ``glfs_active_subvol``/``glfs_subvol_done``
  (GFAPI_PRIVATE_3.4.0), libglusterfs's ``syncop_rename``, ``inode_ref``,
  ``inode_unref``, ``inode_rename`` and ``__glusterfs_this_location``;
- layouts, unchanged since GlusterFS 3.x: ``struct glfs_object`` starts with its
  ``inode_t *``; ``inode_t`` with its table and gfid; ``inode_table_t`` holds its root
  inode and its xlator at 64 and 72 bytes (checked: the root handle's inode is its
  table's root, the table's xlator the active graph's top, the gfid the handle's);
  ``loc_t`` is path, name, inode, parent, gfid, pargfid (not checkable at run time).

The calling thread's ``THIS`` (GlusterFS's per-thread current xlator, whose ctx gives
the call frame's pool) is set to the graph's top for the call, as a public call sets
it to its own.  The caller's identity is the thread's (``glfs_setfs*``), as for any
public call.  A handle whose inode belongs to another graph (after a graph switch), a
name whose object this client does not know, a new name this client knows an object
of (a rename over an existing file: distribute and shard act on the target's inode,
which the new name's ``loc_t`` would lack here), or an answer ESTALE/ENOENT (another
client moved the name meanwhile) go to ``glfs_h_rename``, which looks the names up.
A new name sent here has a ``loc_t`` without inode: the kernel's lookup just before
found nothing there, so a target another client created in between is replaced
without distribute's cleanup of its data file (docs/gluster.md, Limits).
"""
from __future__ import annotations

import ctypes
import errno
import uuid
from ctypes import POINTER, Structure, c_char_p, c_int, c_ubyte, c_void_p
from typing import Any, Optional

TABLE_ROOT = 64           # offsetof(inode_table_t, root) on LP64
TABLE_XL = 72             # offsetof(inode_table_t, xl)
INODE_GFID = 8            # offsetof(inode_t, gfid)
GLUSTERFS_LIBRARY = "libglusterfs.so.0"


class Loc(Structure):
    """GlusterFS's ``loc_t``."""
    _fields_ = [("path", c_char_p), ("name", c_char_p), ("inode", c_void_p),
                ("parent", c_void_p), ("gfid", c_ubyte * 16), ("pargfid", c_ubyte * 16)]


def _ptr(address: int) -> int:
    return c_void_p.from_address(address).value or 0


def _inode(obj: int) -> int:
    """The ``inode_t *`` of a ``glfs_object``."""
    return _ptr(obj)


def _gfid(inode: int) -> bytes:
    return ctypes.string_at(inode + INODE_GFID, 16)


class DirectRename:
    """Renames through ``syncop_rename`` on handles this client already resolved."""

    def __init__(self, gfapi: Any, glusterfs: Any, fs: int, this_location: Any) -> None:
        self._api = gfapi
        self._gf = glusterfs
        self._fs = fs
        self._this = this_location          # the calling thread's THIS (xlator_t **)
        self.sent = 0             # renames sent without lookups
        self.fell_back = 0        # answered ESTALE/ENOENT, then done by glfs_h_rename

    @classmethod
    def probe(cls, fs: int, root: int, root_gfid: bytes) -> Optional["DirectRename"]:
        """A DirectRename for volume ``fs`` (``root``: its root's handle), or None when
        a symbol is missing or a layout does not check out."""
        try:
            api = ctypes.CDLL("libgfapi.so.0", use_errno=True)
            gf = ctypes.CDLL(GLUSTERFS_LIBRARY, use_errno=True)
            api.glfs_active_subvol.argtypes = [c_void_p]
            api.glfs_active_subvol.restype = c_void_p
            api.glfs_subvol_done.argtypes = [c_void_p, c_void_p]
            api.glfs_subvol_done.restype = c_int
            gf.syncop_rename.argtypes = [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]
            gf.syncop_rename.restype = c_int
            gf.inode_ref.argtypes = [c_void_p]
            gf.inode_ref.restype = c_void_p
            gf.inode_unref.argtypes = [c_void_p]
            gf.inode_unref.restype = c_void_p
            gf.inode_rename.argtypes = [c_void_p, c_void_p, c_char_p, c_void_p, c_char_p,
                                        c_void_p, c_void_p]
            gf.inode_rename.restype = c_int
            this_location = getattr(gf, "__glusterfs_this_location")  # no mangling
            this_location.argtypes = []
            this_location.restype = POINTER(c_void_p)
        except (OSError, AttributeError):
            return None
        subvol = api.glfs_active_subvol(fs)
        if not subvol:
            return None
        try:
            inode = _inode(root)
            table = _ptr(inode) if inode else 0
            if not table or _ptr(table + TABLE_ROOT) != inode or \
                    _ptr(table + TABLE_XL) != subvol or _gfid(inode) != root_gfid:
                return None
        finally:
            api.glfs_subvol_done(fs, subvol)
        return cls(api, gf, fs, this_location)

    def rename(self, oldparent: int, oldname: bytes, obj: int, newparent: int,
               newname: bytes) -> bool:
        """Rename ``oldname`` in ``oldparent`` (the object ``obj``) to ``newname`` in
        ``newparent`` (all handles) in the calling worker thread: True when done,
        False when it is ``glfs_h_rename``'s to do (the handles are not of the active
        graph, or the bricks did not find what this client knows); OSError for any
        other failure."""
        api, gf, fs = self._api, self._gf, self._fs
        subvol = api.glfs_active_subvol(fs)
        if not subvol:
            raise OSError(errno.EIO, "rename: no active graph")
        try:
            inodes = [_inode(oldparent), _inode(obj), _inode(newparent)]
            if not all(inodes) or any(_ptr(_ptr(i) + TABLE_XL) != subvol for i in inodes):
                return False
            op, child, np = inodes
            old = _loc(op, oldname, child)
            new = _loc(np, newname, 0)
            held = []
            this = caller = None
            try:
                for i in inodes:
                    gf.inode_ref(i)
                    held.append(i)
                this = self._this()
                caller = this[0]
                this[0] = subvol
                rc = gf.syncop_rename(subvol, ctypes.byref(old), ctypes.byref(new),
                                      None, None)
                if rc == 0:
                    gf.inode_rename(_ptr(child), op, oldname, np, newname, child, None)
            finally:
                if this is not None:
                    this[0] = caller
                for i in held:
                    gf.inode_unref(i)
            if rc == -errno.ESTALE or rc == -errno.ENOENT:
                self.fell_back += 1
                return False
            if rc < 0:
                raise OSError(-rc, "rename")
            self.sent += 1
            return True
        finally:
            api.glfs_subvol_done(fs, subvol)


def _loc(parent: int, name: bytes, inode: int) -> Loc:
    """The loc_t of ``name`` in ``parent`` (path ``<gfid:PARENT>/name``, as GlusterFS
    names an entry of a directory it knows by gfid only)."""
    pgfid = _gfid(parent)
    loc = Loc()
    loc.path = b"<gfid:%s>/%s" % (str(uuid.UUID(bytes=pgfid)).encode(), name)
    loc.name = name
    loc.inode = inode or None
    loc.parent = parent
    ctypes.memmove(loc.pargfid, pgfid, 16)
    if inode:
        ctypes.memmove(loc.gfid, _gfid(inode), 16)
    return loc
