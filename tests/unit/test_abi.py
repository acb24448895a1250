"""fuse_bridge.abi: golden bytes, decode-back, helpers, and a cross-check against the
kernel header compiled with gcc (skipped when /usr/include/linux/fuse.h or gcc is absent)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

try:
    from fuse_bridge import abi
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from fuse_bridge import abi


def h(*rows: str) -> bytes:
    """Bytes from hex rows (spaces ignored)."""
    return bytes.fromhex("".join(rows))


ATTR_VALUES = abi.Attr(ino=0x11, size=0x1000, blocks=8, atime=1, mtime=2, ctime=3,
                       atimensec=4, mtimensec=5, ctimensec=6, mode=0o100644, nlink=1,
                       uid=1000, gid=1000, rdev=0, blksize=4096, flags=0)
ATTR_BYTES = h(
    "11 00 00 00 00 00 00 00",  # ino
    "00 10 00 00 00 00 00 00",  # size
    "08 00 00 00 00 00 00 00",  # blocks
    "01 00 00 00 00 00 00 00",  # atime
    "02 00 00 00 00 00 00 00",  # mtime
    "03 00 00 00 00 00 00 00",  # ctime
    "04 00 00 00 05 00 00 00",  # atimensec, mtimensec
    "06 00 00 00 a4 81 00 00",  # ctimensec, mode 0100644
    "01 00 00 00 e8 03 00 00",  # nlink, uid 1000
    "e8 03 00 00 00 00 00 00",  # gid 1000, rdev
    "00 10 00 00 00 00 00 00",  # blksize 4096, flags
)


# ------------------------------------------------------------------ golden bytes

def test_in_header() -> None:
    raw = h(
        "38 00 00 00 01 00 00 00",  # len 56, opcode LOOKUP
        "08 07 06 05 04 03 02 01",  # unique
        "01 00 00 00 00 00 00 00",  # nodeid
        "e8 03 00 00 64 00 00 00",  # uid 1000, gid 100
        "92 10 00 00 02 00 00 00",  # pid 4242, total_extlen 2, padding
    )
    values = (56, abi.Opcode.LOOKUP, 0x0102030405060708, abi.ROOT_ID, 1000, 100, 4242, 2)
    assert abi.IN_HEADER.pack(*values) == raw
    hdr = abi.InHeader._make(abi.IN_HEADER.unpack_from(raw))
    assert hdr == values
    assert abi.Opcode(hdr.opcode) is abi.Opcode.LOOKUP
    assert hdr.total_extlen == 2


def test_out_header() -> None:
    raw = h(
        "10 00 00 00 fe ff ff ff",  # len 16, error -ENOENT
        "10 00 00 00 00 00 00 00",  # unique
    )
    assert abi.pack_out_header(16, -2, 0x10) == raw
    assert abi.OutHeader._make(abi.OUT_HEADER.unpack(raw)) == (16, -2, 0x10)
    assert abi.pack_notify_header(40, abi.NotifyCode.INVAL_INODE) == h(
        "28 00 00 00 02 00 00 00",  # len 40, code INVAL_INODE
        "00 00 00 00 00 00 00 00",  # unique 0
    )


def test_attr() -> None:
    assert abi.ATTR.pack(*ATTR_VALUES) == ATTR_BYTES
    assert abi.Attr._make(abi.ATTR.unpack(ATTR_BYTES)) == ATTR_VALUES


def test_entry_out_and_attr_out() -> None:
    entry = h(
        "02 00 00 00 00 00 00 00",  # nodeid
        "01 00 00 00 00 00 00 00",  # generation
        "01 00 00 00 00 00 00 00",  # entry_valid
        "01 00 00 00 00 00 00 00",  # attr_valid
        "00 65 cd 1d 00 00 00 00",  # entry_valid_nsec 500000000, attr_valid_nsec
    ) + ATTR_BYTES
    assert abi.ENTRY_OUT.pack(2, 1, 1, 1, 500_000_000, 0, *ATTR_VALUES) == entry
    assert abi.ENTRY_OUT.unpack(entry)[6:] == ATTR_VALUES
    attr_out = h(
        "05 00 00 00 00 00 00 00",  # attr_valid
        "ff c9 9a 3b 00 00 00 00",  # attr_valid_nsec 999999999, dummy
    ) + ATTR_BYTES
    assert abi.ATTR_OUT.pack(5, 999_999_999, *ATTR_VALUES) == attr_out


def test_init_in() -> None:
    raw = h(
        "07 00 00 00 2d 00 00 00",  # major 7, minor 45
        "00 00 02 00 01 00 00 40",  # max_readahead 128 KiB, flags ASYNC_READ|INIT_EXT
        "ff 07 00 00 00 00 00 00",  # flags2 (bits 32..42), unused
    ) + bytes(40)  # unused
    flags = abi.InitFlag.ASYNC_READ | abi.InitFlag.INIT_EXT
    assert abi.INIT_IN.pack(7, 45, 131072, flags, 0x7FF) == raw
    init = abi.decode_init_in(raw)
    assert init == abi.InitIn(7, 45, 131072, flags, 0x7FF)
    joined = abi.init_flags_join(init.flags, init.flags2)
    assert joined & abi.InitFlag.SECURITY_CTX and joined & abi.InitFlag.REQUEST_TIMEOUT
    assert not joined & (1 << 43)
    # Before 7.36 the kernel sends 16 bytes, and flags2 means nothing without INIT_EXT.
    assert abi.decode_init_in(raw[:16]) == (7, 45, 131072, flags, 0)
    no_ext = abi.INIT_IN.pack(7, 45, 131072, 1, 0x7FF)
    assert abi.decode_init_in(no_ext).flags2 == 0
    assert abi.init_flags_join(1, 0x7FF) == 1


def test_init_out() -> None:
    raw = h(
        "07 00 00 00 2d 00 00 00",  # major 7, minor 45
        "00 00 02 00 01 00 00 40",  # max_readahead, flags
        "0c 00 09 00 00 00 10 00",  # max_background 12, congestion_threshold 9, max_write 1 MiB
        "01 00 00 00 00 01 00 00",  # time_gran 1, max_pages 256, map_alignment 0
        "08 00 00 00 00 00 00 00",  # flags2 HAS_EXPIRE_ONLY>>32, max_stack_depth 0
        "1e 00 00 00 00 00 00 00",  # request_timeout 30, unused
        "00 00 00 00 00 00 00 00",  # unused
        "00 00 00 00 00 00 00 00",  # unused
    )
    flags, flags2 = abi.init_flags_split(
        abi.InitFlag.ASYNC_READ | abi.InitFlag.INIT_EXT | abi.InitFlag.HAS_EXPIRE_ONLY)
    assert (flags, flags2) == (0x40000001, 8)
    out = abi.InitOut(7, 45, 131072, flags, 12, 9, 1 << 20, 1, 256, 0, flags2, 0, 30)
    assert abi.INIT_OUT.pack(*out) == raw
    assert abi.InitOut._make(abi.INIT_OUT.unpack(raw)) == out
    assert abi.init_out_size(45) == 64
    assert abi.init_out_size(22) == abi.FUSE_COMPAT_22_INIT_OUT_SIZE == 24


def test_read_in_and_write_in() -> None:
    read = h(
        "03 00 00 00 00 00 00 00",  # fh
        "00 20 00 00 00 00 00 00",  # offset
        "00 00 02 00 02 00 00 00",  # size 128 KiB, read_flags LOCKOWNER
        "0d f0 fe ca ef be ad de",  # lock_owner
        "02 80 00 00 00 00 00 00",  # flags O_RDWR|O_LARGEFILE, padding
    )
    values = (3, 0x2000, 0x20000, abi.ReadFlag.LOCKOWNER, 0xDEADBEEFCAFEF00D, 0x8002)
    assert abi.READ_IN.pack(*values) == read
    assert abi.ReadIn._make(abi.READ_IN.unpack(read)) == values
    write = h(
        "04 00 00 00 00 00 00 00",  # fh
        "00 10 00 00 00 00 00 00",  # offset
        "05 00 00 00 03 00 00 00",  # size 5, write_flags CACHE|LOCKOWNER
        "00 00 00 00 00 00 00 00",  # lock_owner
        "01 80 00 00 00 00 00 00",  # flags O_WRONLY|O_LARGEFILE, padding
    )
    wflags = abi.WriteFlag.CACHE | abi.WriteFlag.LOCKOWNER
    assert abi.WRITE_IN.pack(4, 0x1000, 5, wflags, 0, 0x8001) == write
    assert abi.WriteIn._make(abi.WRITE_IN.unpack(write)).write_flags == 3


def test_setattr_in() -> None:
    raw = h(
        "7f 00 00 00 00 00 00 00",  # valid MODE|UID|GID|SIZE|ATIME|MTIME|FH, padding
        "02 00 00 00 00 00 00 00",  # fh
        "00 00 01 00 00 00 00 00",  # size 64 KiB
        "00 00 00 00 00 00 00 00",  # lock_owner
        "64 00 00 00 00 00 00 00",  # atime 100
        "c8 00 00 00 00 00 00 00",  # mtime 200
        "00 00 00 00 00 00 00 00",  # ctime
        "01 00 00 00 02 00 00 00",  # atimensec, mtimensec
        "00 00 00 00 80 81 00 00",  # ctimensec, mode 0100600
        "00 00 00 00 e8 03 00 00",  # unused4, uid 1000
        "e9 03 00 00 00 00 00 00",  # gid 1001, unused5
    )
    v = abi.SetattrValid
    valid = v.MODE | v.UID | v.GID | v.SIZE | v.ATIME | v.MTIME | v.FH
    values = abi.SetattrIn(valid, 2, 0x10000, 0, 100, 200, 0, 1, 2, 0, 0o100600, 1000, 1001)
    assert abi.SETATTR_IN.pack(*values) == raw
    decoded = abi.SetattrIn._make(abi.SETATTR_IN.unpack(raw))
    assert decoded == values
    assert v(decoded.valid) & v.FH and not v(decoded.valid) & v.CTIME


def test_lk_in_and_file_lock() -> None:
    lock = h(
        "00 00 00 00 00 00 00 00",  # start
        "ff ff ff ff ff ff ff 7f",  # end OFFSET_MAX
        "01 00 00 00 d2 04 00 00",  # type F_WRLCK, pid 1234
    )
    assert abi.FILE_LOCK.pack(0, 2**63 - 1, 1, 1234) == lock
    assert abi.LK_OUT.pack(0, 2**63 - 1, 1, 1234) == lock
    raw = h(
        "09 00 00 00 00 00 00 00",  # fh
        "88 77 66 55 44 33 22 11",  # owner
    ) + lock + h(
        "01 00 00 00 00 00 00 00",  # lk_flags FLOCK, padding
    )
    values = (9, 0x1122334455667788, 0, 2**63 - 1, 1, 1234, abi.LkFlag.FLOCK)
    assert abi.LK_IN.pack(*values) == raw
    lk = abi.LkIn._make(abi.LK_IN.unpack(raw))
    assert lk == values
    assert abi.FileLock._make(abi.FILE_LOCK.unpack(lock)) == (lk.start, lk.end, lk.type, lk.pid)


def test_notify_inval_entry() -> None:
    name = b"foo"
    body = abi.NOTIFY_INVAL_ENTRY_OUT.pack(1, len(name), abi.InvalEntryFlag.EXPIRE_ONLY)
    total = abi.OUT_HEADER.size + len(body) + len(name) + 1
    msg = abi.pack_notify_header(total, abi.NotifyCode.INVAL_ENTRY) + body + name + b"\0"
    assert msg == h(
        "24 00 00 00 03 00 00 00",  # len 36, code INVAL_ENTRY
        "00 00 00 00 00 00 00 00",  # unique 0
        "01 00 00 00 00 00 00 00",  # parent
        "03 00 00 00 01 00 00 00",  # namelen 3, flags EXPIRE_ONLY
        "66 6f 6f 00",  # "foo" NUL
    )


def test_notify_inval_inode_and_retrieve() -> None:
    assert abi.NOTIFY_INVAL_INODE_OUT.pack(5, 0, -1) == h(
        "05 00 00 00 00 00 00 00",  # ino
        "00 00 00 00 00 00 00 00",  # off
        "ff ff ff ff ff ff ff ff",  # len -1: to the end
    )
    raw = h(
        "00 00 00 00 00 00 00 00",  # dummy1
        "00 10 00 00 00 00 00 00",  # offset
        "00 02 00 00 00 00 00 00",  # size 512, dummy2
    ) + bytes(16)  # dummy3, dummy4
    assert abi.NotifyRetrieveIn._make(abi.NOTIFY_RETRIEVE_IN.unpack(raw)) == (0x1000, 512)


def test_dirent_packing() -> None:
    buf = bytearray(b"\xff" * 64)
    pos = abi.pack_dirent(buf, 0, 5, 1, 4, b"abc")
    assert pos == 32 == abi.dirent_size(3)
    pos = abi.pack_dirent(buf, pos, 6, 2, 8, b"12345678")
    assert pos == 64 == 32 + abi.dirent_size(8)
    assert bytes(buf) == h(
        "05 00 00 00 00 00 00 00",  # ino 5
        "01 00 00 00 00 00 00 00",  # off 1
        "03 00 00 00 04 00 00 00",  # namelen 3, type DT_DIR
        "61 62 63 00 00 00 00 00",  # "abc" + zero padding
        "06 00 00 00 00 00 00 00",  # ino 6
        "02 00 00 00 00 00 00 00",  # off 2
        "08 00 00 00 08 00 00 00",  # namelen 8, type DT_REG
        "31 32 33 34 35 36 37 38",  # "12345678", no padding
    )
    # A record that does not fit writes nothing.
    assert abi.pack_dirent(buf, 40, 7, 3, 8, b"x") == -1
    assert buf[40:] == h("02 00 00 00 00 00 00 00", "08 00 00 00 08 00 00 00",
                         "31 32 33 34 35 36 37 38")
    # Works on a memoryview over a larger buffer too.
    big = bytearray(b"\xff" * 40)
    assert abi.pack_dirent(memoryview(big)[8:], 0, 1, 1, 1, b"a") == 32
    assert big[:8] == b"\xff" * 8 and big[32:40] == h("61 00 00 00 00 00 00 00")
    decoded = abi.Dirent._make(abi.DIRENT.unpack_from(buf, 32))
    assert decoded == (6, 2, 8, 8)


def test_direntplus_packing() -> None:
    attr = ATTR_VALUES._replace(ino=7, mode=0o40755, nlink=2, size=0, blocks=0)
    buf = bytearray(b"\xff" * 200)
    pos = abi.pack_direntplus(buf, 0, 7, 0, 1, 1, 0, 0, attr, 3, 4, b"d")
    assert pos == 160 == abi.direntplus_size(1)
    attr_bytes = abi.ATTR.pack(*attr)
    assert bytes(buf[:160]) == h(
        "07 00 00 00 00 00 00 00",  # nodeid
        "00 00 00 00 00 00 00 00",  # generation
        "01 00 00 00 00 00 00 00",  # entry_valid
        "01 00 00 00 00 00 00 00",  # attr_valid
        "00 00 00 00 00 00 00 00",  # entry_valid_nsec, attr_valid_nsec
    ) + attr_bytes + h(
        "07 00 00 00 00 00 00 00",  # dirent ino (= attr.ino)
        "03 00 00 00 00 00 00 00",  # off 3
        "01 00 00 00 04 00 00 00",  # namelen 1, type DT_DIR
        "64 00 00 00 00 00 00 00",  # "d" + zero padding
    )
    assert attr_bytes[:8] == h("07 00 00 00 00 00 00 00")
    assert attr_bytes[60:68] == h("ed 41 00 00 02 00 00 00")  # mode 040755, nlink 2
    assert buf[160:] == b"\xff" * 40
    assert abi.pack_direntplus(buf, 160, 8, 0, 1, 1, 0, 0, attr, 4, 4, b"e") == -1
    assert buf[160:] == b"\xff" * 40


# ------------------------------------------------------------------ helpers

def test_record_sizes() -> None:
    assert [abi.dirent_size(n) for n in (0, 1, 8, 9, 255)] == [24, 32, 32, 40, 280]
    assert [abi.direntplus_size(n) for n in (0, 1, 8, 9)] == [152, 160, 160, 168]
    assert abi.FUSE_NAME_OFFSET == 24 and abi.FUSE_NAME_OFFSET_DIRENTPLUS == 152
    assert abi.rec_align(13) == 16


def test_split_names() -> None:
    body = b"old\0new\0trailing"
    for form in (body, bytearray(body), memoryview(body)):
        names = abi.split_names(form, 2)
        assert names == [b"old", b"new"] and all(type(n) is bytes for n in names)
    assert abi.split_names(b"name\0value-bytes", 1) == [b"name"]
    assert abi.split_names(b"\0", 1) == [b""]
    with pytest.raises(ValueError):
        abi.split_names(b"old\0new", 2)


def test_split_timeout() -> None:
    assert abi.split_timeout(1.5) == (1, 500_000_000)
    assert abi.split_timeout(0) == (0, 0)
    assert abi.split_timeout(-3) == (0, 0)
    assert abi.split_timeout(2) == (2, 0)


NAMEDTUPLE_OF = {
    "IN_HEADER": abi.InHeader, "OUT_HEADER": abi.OutHeader, "ATTR": abi.Attr,
    "KSTATFS": abi.Kstatfs, "FILE_LOCK": abi.FileLock, "INIT_IN": abi.InitIn,
    "INIT_OUT": abi.InitOut, "FORGET_ONE": abi.ForgetOne, "GETATTR_IN": abi.GetattrIn,
    "SETATTR_IN": abi.SetattrIn, "MKNOD_IN": abi.MknodIn, "MKDIR_IN": abi.MkdirIn,
    "RENAME2_IN": abi.Rename2In, "OPEN_IN": abi.OpenIn, "CREATE_IN": abi.CreateIn,
    "OPEN_OUT": abi.OpenOut, "RELEASE_IN": abi.ReleaseIn, "FLUSH_IN": abi.FlushIn,
    "READ_IN": abi.ReadIn, "WRITE_IN": abi.WriteIn, "FSYNC_IN": abi.FsyncIn,
    "SETXATTR_IN": abi.SetxattrIn, "SETXATTR_IN_COMPAT": abi.SetxattrInCompat,
    "LK_IN": abi.LkIn, "BMAP_IN": abi.BmapIn, "IOCTL_IN": abi.IoctlIn,
    "POLL_IN": abi.PollIn, "FALLOCATE_IN": abi.FallocateIn, "LSEEK_IN": abi.LseekIn,
    "COPY_FILE_RANGE_IN": abi.CopyFileRangeIn, "STATX_IN": abi.StatxIn,
    "DIRENT": abi.Dirent, "NOTIFY_RETRIEVE_IN": abi.NotifyRetrieveIn,
    "EXT_HEADER": abi.ExtHeader,
}


@pytest.mark.parametrize("name", sorted(NAMEDTUPLE_OF))
def test_namedtuple_matches_struct(name: str) -> None:
    st: struct.Struct = getattr(abi, name)
    nt = NAMEDTUPLE_OF[name]
    fields = nt._fields
    assert len(st.unpack(bytes(st.size))) == len(fields)
    # Field names agree with the C member names used by the cross-check below.
    members = [m.rsplit(".", 1)[-1] for m in LAYOUTS[name][1]]
    assert list(fields) == members


def test_flags_are_single_bits_and_distinct() -> None:
    for cls in FLAG_PREFIX:
        values = [m.value for m in cls]  # canonical members only
        assert len(values) == len(set(values)), cls
        for v in values:
            assert v and v & (v - 1) == 0, (cls, v)
    assert abi.InitFlag.SECURITY_CTX == 1 << 32 and max(abi.InitFlag) < 1 << 64


# ------------------------------------------------------------------ kernel header cross-check

HEADER = Path("/usr/include/linux/fuse.h")

ATTR_M = ("ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid gid "
          "rdev blksize flags").split()
LOCK_M = "start end type pid".split()
SX_TIME_M = ["tv_sec", "tv_nsec"]
STATX_M = ("mask blksize attributes nlink uid gid mode ino size blocks attributes_mask".split()
           + [f"{t}.{f}" for t in ("atime", "btime", "ctime", "mtime") for f in SX_TIME_M]
           + "rdev_major rdev_minor dev_major dev_minor".split())
ENTRY_M = ("nodeid generation entry_valid attr_valid entry_valid_nsec attr_valid_nsec".split()
           + [f"attr.{m}" for m in ATTR_M])


def _m(s: str) -> List[str]:
    return s.split()


# abi Struct -> (C struct, C member of each non-padding field in order, C size expression)
LAYOUTS: Dict[str, Tuple[str, List[str], Optional[str]]] = {
    "IN_HEADER": ("fuse_in_header", _m("len opcode unique nodeid uid gid pid total_extlen"), None),
    "OUT_HEADER": ("fuse_out_header", _m("len error unique"), None),
    "ATTR": ("fuse_attr", ATTR_M, None),
    "KSTATFS": ("fuse_kstatfs", _m("blocks bfree bavail files ffree bsize namelen frsize"), None),
    "STATFS_OUT": ("fuse_statfs_out",
                   [f"st.{m}" for m in _m("blocks bfree bavail files ffree bsize namelen frsize")],
                   None),
    "FILE_LOCK": ("fuse_file_lock", LOCK_M, None),
    "ENTRY_OUT": ("fuse_entry_out", ENTRY_M, None),
    "ATTR_OUT": ("fuse_attr_out", ["attr_valid", "attr_valid_nsec"]
                 + [f"attr.{m}" for m in ATTR_M], None),
    "FORGET_IN": ("fuse_forget_in", ["nlookup"], None),
    "FORGET_ONE": ("fuse_forget_one", _m("nodeid nlookup"), None),
    "BATCH_FORGET_IN": ("fuse_batch_forget_in", ["count"], None),
    "GETATTR_IN": ("fuse_getattr_in", _m("getattr_flags fh"), None),
    "MKNOD_IN": ("fuse_mknod_in", _m("mode rdev umask"), None),
    "MKDIR_IN": ("fuse_mkdir_in", _m("mode umask"), None),
    "RENAME_IN": ("fuse_rename_in", ["newdir"], None),
    "RENAME2_IN": ("fuse_rename2_in", _m("newdir flags"), None),
    "LINK_IN": ("fuse_link_in", ["oldnodeid"], None),
    "SETATTR_IN": ("fuse_setattr_in", _m("valid fh size lock_owner atime mtime ctime atimensec "
                                         "mtimensec ctimensec mode uid gid"), None),
    "OPEN_IN": ("fuse_open_in", _m("flags open_flags"), None),
    "CREATE_IN": ("fuse_create_in", _m("flags mode umask open_flags"), None),
    "OPEN_OUT": ("fuse_open_out", _m("fh open_flags backing_id"), None),
    "RELEASE_IN": ("fuse_release_in", _m("fh flags release_flags lock_owner"), None),
    "FLUSH_IN": ("fuse_flush_in", _m("fh lock_owner"), None),
    "READ_IN": ("fuse_read_in", _m("fh offset size read_flags lock_owner flags"), None),
    "WRITE_IN": ("fuse_write_in", _m("fh offset size write_flags lock_owner flags"), None),
    "WRITE_OUT": ("fuse_write_out", ["size"], None),
    "FSYNC_IN": ("fuse_fsync_in", _m("fh fsync_flags"), None),
    "SETXATTR_IN": ("fuse_setxattr_in", _m("size flags setxattr_flags"), None),
    "SETXATTR_IN_COMPAT": ("fuse_setxattr_in", _m("size flags"), "FUSE_COMPAT_SETXATTR_IN_SIZE"),
    "GETXATTR_IN": ("fuse_getxattr_in", ["size"], None),
    "GETXATTR_OUT": ("fuse_getxattr_out", ["size"], None),
    "LK_IN": ("fuse_lk_in", _m("fh owner") + [f"lk.{m}" for m in LOCK_M] + ["lk_flags"], None),
    "LK_OUT": ("fuse_lk_out", [f"lk.{m}" for m in LOCK_M], None),
    "ACCESS_IN": ("fuse_access_in", ["mask"], None),
    "INIT_IN": ("fuse_init_in", _m("major minor max_readahead flags flags2"), None),
    "INIT_IN_COMPAT": ("fuse_init_in", _m("major minor max_readahead flags"),
                       "offsetof(struct fuse_init_in, flags2)"),
    "INIT_OUT": ("fuse_init_out", _m("major minor max_readahead flags max_background "
                                     "congestion_threshold max_write time_gran max_pages "
                                     "map_alignment flags2 max_stack_depth request_timeout"),
                 None),
    "CUSE_INIT_IN": ("cuse_init_in", _m("major minor flags"), None),
    "CUSE_INIT_OUT": ("cuse_init_out", _m("major minor flags max_read max_write dev_major "
                                          "dev_minor"), None),
    "INTERRUPT_IN": ("fuse_interrupt_in", ["unique"], None),
    "BMAP_IN": ("fuse_bmap_in", _m("block blocksize"), None),
    "BMAP_OUT": ("fuse_bmap_out", ["block"], None),
    "IOCTL_IN": ("fuse_ioctl_in", _m("fh flags cmd arg in_size out_size"), None),
    "IOCTL_IOVEC": ("fuse_ioctl_iovec", _m("base len"), None),
    "IOCTL_OUT": ("fuse_ioctl_out", _m("result flags in_iovs out_iovs"), None),
    "POLL_IN": ("fuse_poll_in", _m("fh kh flags events"), None),
    "POLL_OUT": ("fuse_poll_out", ["revents"], None),
    "NOTIFY_POLL_WAKEUP_OUT": ("fuse_notify_poll_wakeup_out", ["kh"], None),
    "FALLOCATE_IN": ("fuse_fallocate_in", _m("fh offset length mode"), None),
    "LSEEK_IN": ("fuse_lseek_in", _m("fh offset whence"), None),
    "LSEEK_OUT": ("fuse_lseek_out", ["offset"], None),
    "COPY_FILE_RANGE_IN": ("fuse_copy_file_range_in",
                           _m("fh_in off_in nodeid_out fh_out off_out len flags"), None),
    "COPY_FILE_RANGE_OUT": ("fuse_copy_file_range_out", ["bytes_copied"], None),
    "SETUPMAPPING_IN": ("fuse_setupmapping_in", _m("fh foffset len flags moffset"), None),
    "REMOVEMAPPING_IN": ("fuse_removemapping_in", ["count"], None),
    "REMOVEMAPPING_ONE": ("fuse_removemapping_one", _m("moffset len"), None),
    "SYNCFS_IN": ("fuse_syncfs_in", [], None),
    "STATX_IN": ("fuse_statx_in", _m("getattr_flags fh sx_flags sx_mask"), None),
    "SX_TIME": ("fuse_sx_time", SX_TIME_M, None),
    "STATX": ("fuse_statx", STATX_M, None),
    "STATX_OUT": ("fuse_statx_out", _m("attr_valid attr_valid_nsec flags")
                  + [f"stat.{m}" for m in STATX_M], None),
    "DIRENT": ("fuse_dirent", _m("ino off namelen type"), None),
    "DIRENTPLUS": ("fuse_direntplus", [f"entry_out.{m}" for m in ENTRY_M]
                   + [f"dirent.{m}" for m in _m("ino off namelen type")], None),
    "NOTIFY_INVAL_INODE_OUT": ("fuse_notify_inval_inode_out", _m("ino off len"), None),
    "NOTIFY_INVAL_ENTRY_OUT": ("fuse_notify_inval_entry_out", _m("parent namelen flags"), None),
    "NOTIFY_DELETE_OUT": ("fuse_notify_delete_out", _m("parent child namelen"), None),
    "NOTIFY_STORE_OUT": ("fuse_notify_store_out", _m("nodeid offset size"), None),
    "NOTIFY_RETRIEVE_OUT": ("fuse_notify_retrieve_out", _m("notify_unique nodeid offset size"),
                            None),
    "NOTIFY_RETRIEVE_IN": ("fuse_notify_retrieve_in", _m("offset size"), None),
    "NOTIFY_PRUNE_OUT": ("fuse_notify_prune_out", ["count"], None),
    "EXT_HEADER": ("fuse_ext_header", _m("size type"), None),
    "SECCTX_HEADER": ("fuse_secctx_header", _m("size nr_secctx"), None),
    "SECCTX": ("fuse_secctx", ["size"], None),
    "SUPP_GROUPS": ("fuse_supp_groups", ["nr_groups"], None),
    "BACKING_MAP": ("fuse_backing_map", _m("fd flags"), None),
}

# Things newer than some installed headers: each may be missing only from a header whose
# minor is below the given one. Anything else missing from the header fails the test.
NEWER_STRUCTS = {"fuse_statx_in": 39, "fuse_sx_time": 39, "fuse_statx": 39,
                 "fuse_statx_out": 39, "fuse_backing_map": 40, "fuse_notify_prune_out": 45,
                 "fuse_copy_file_range_out": 45, "fuse_supp_groups": 39}
NEWER_MEMBERS = {("fuse_init_out", "max_stack_depth"): 40,
                 ("fuse_init_out", "request_timeout"): 43,
                 ("fuse_open_out", "backing_id"): 40}
NEWER_NAMES = {"FUSE_CREATE_SUPP_GROUP": 39, "FUSE_DIRECT_IO_ALLOW_MMAP": 39,
               "FUSE_DIRECT_IO_RELAX": 39, "FUSE_PASSTHROUGH": 40, "FUSE_NO_EXPORT_SUPPORT": 40,
               "FUSE_HAS_RESEND": 40, "FUSE_ALLOW_IDMAP": 41, "FUSE_OVER_IO_URING": 42,
               "FUSE_REQUEST_TIMEOUT": 43, "FOPEN_PASSTHROUGH": 40, "FUSE_UNIQUE_RESEND": 40,
               "FUSE_INVALID_UIDGID": 41, "FUSE_DEV_IOC_BACKING_OPEN": 40,
               "FUSE_DEV_IOC_BACKING_CLOSE": 40, "FUSE_STATX": 39, "FUSE_COPY_FILE_RANGE_64": 45,
               "FUSE_NOTIFY_RESEND": 40, "FUSE_NOTIFY_INC_EPOCH": 44, "FUSE_NOTIFY_PRUNE": 45,
               "FUSE_EXT_GROUPS": 39}

FLAG_PREFIX = {
    abi.InitFlag: "FUSE_", abi.FopenFlag: "FOPEN_", abi.SetattrValid: "FATTR_",
    abi.GetattrFlag: "FUSE_GETATTR_", abi.LkFlag: "FUSE_LK_", abi.WriteFlag: "FUSE_WRITE_",
    abi.ReadFlag: "FUSE_READ_", abi.ReleaseFlag: "FUSE_RELEASE_",
    abi.FsyncFlag: "FUSE_FSYNC_", abi.IoctlFlag: "FUSE_IOCTL_", abi.PollFlag: "FUSE_POLL_",
    abi.AttrFlag: "FUSE_ATTR_", abi.OpenInFlag: "FUSE_OPEN_", abi.SetxattrFlag: "FUSE_SETXATTR_",
    abi.InvalEntryFlag: "FUSE_", abi.RenameFlag: "RENAME_", abi.CuseInitFlag: "CUSE_",
    abi.SetupmappingFlag: "FUSE_SETUPMAPPING_FLAG_",
}
C_NAME_OVERRIDE = {(abi.IoctlFlag, "BIT32"): "FUSE_IOCTL_32BIT"}
CONSTANTS = {
    "FUSE_KERNEL_VERSION": abi.KERNEL_VERSION, "FUSE_ROOT_ID": abi.ROOT_ID,
    "FUSE_MIN_READ_BUFFER": abi.FUSE_MIN_READ_BUFFER,
    "FUSE_COMPAT_INIT_OUT_SIZE": abi.FUSE_COMPAT_INIT_OUT_SIZE,
    "FUSE_COMPAT_22_INIT_OUT_SIZE": abi.FUSE_COMPAT_22_INIT_OUT_SIZE,
    "FUSE_COMPAT_ENTRY_OUT_SIZE": abi.FUSE_COMPAT_ENTRY_OUT_SIZE,
    "FUSE_COMPAT_ATTR_OUT_SIZE": abi.FUSE_COMPAT_ATTR_OUT_SIZE,
    "FUSE_COMPAT_MKNOD_IN_SIZE": abi.FUSE_COMPAT_MKNOD_IN_SIZE,
    "FUSE_COMPAT_WRITE_IN_SIZE": abi.FUSE_COMPAT_WRITE_IN_SIZE,
    "FUSE_COMPAT_STATFS_SIZE": abi.FUSE_COMPAT_STATFS_SIZE,
    "FUSE_COMPAT_SETXATTR_IN_SIZE": abi.FUSE_COMPAT_SETXATTR_IN_SIZE,
    "FUSE_DEV_IOC_MAGIC": abi.FUSE_DEV_IOC_MAGIC, "FUSE_DEV_IOC_CLONE": abi.FUSE_DEV_IOC_CLONE,
    "FUSE_DEV_IOC_BACKING_OPEN": abi.FUSE_DEV_IOC_BACKING_OPEN,
    "FUSE_DEV_IOC_BACKING_CLOSE": abi.FUSE_DEV_IOC_BACKING_CLOSE,
    "FUSE_IOCTL_MAX_IOV": abi.FUSE_IOCTL_MAX_IOV, "CUSE_INIT_INFO_MAX": abi.CUSE_INIT_INFO_MAX,
    "FUSE_NAME_OFFSET": abi.FUSE_NAME_OFFSET,
    "FUSE_NAME_OFFSET_DIRENTPLUS": abi.FUSE_NAME_OFFSET_DIRENTPLUS,
    "FUSE_UNIQUE_RESEND": abi.FUSE_UNIQUE_RESEND,
    "FUSE_INVALID_UIDGID": abi.FUSE_INVALID_UIDGID,
}
NAMELENS = (0, 1, 7, 8, 9, 255)


def flag_c_names() -> Dict[str, int]:
    out = {}
    for cls, prefix in FLAG_PREFIX.items():
        for name, member in cls.__members__.items():  # aliases included
            out[C_NAME_OVERRIDE.get((cls, name), prefix + name)] = int(member)
    return out


def enum_c_values() -> Dict[str, Tuple[str, int]]:
    """C enum entry -> (header enum, abi value) for every code abi defines."""
    out = {}
    for name, m in abi.Opcode.__members__.items():
        c = name if name.startswith("CUSE_") else "FUSE_" + name
        out[c] = ("fuse_opcode", int(m))
    for name, m in abi.NotifyCode.__members__.items():
        out["FUSE_NOTIFY_" + name] = ("fuse_notify_code", int(m))
    for name, m in abi.ExtType.__members__.items():
        out["FUSE_EXT_" + name] = ("fuse_ext_type", int(m))
    out["FUSE_MAX_NR_SECCTX"] = ("fuse_ext_type", abi.FUSE_MAX_NR_SECCTX)
    return out


def field_offsets(fmt: str) -> List[int]:
    """Offset of every non-padding item of a '<' struct format."""
    offsets, pos = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt.lstrip("<")):
        n = int(count) if count else 1
        if code == "x":
            pos += n
            continue
        size = struct.calcsize("<" + code)
        for _ in range(n):
            offsets.append(pos)
            pos += size
    return offsets


class Header:
    def __init__(self, text: str) -> None:
        self.text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        self.minor = int(re.search(r"#define\s+FUSE_KERNEL_MINOR_VERSION\s+(\d+)",
                                   self.text).group(1))
        self.structs = {m.group(1): m.group(2) for m in
                        re.finditer(r"struct\s+(\w+)\s*\{(.*?)\n\};", self.text, re.S)}
        self.enums: Dict[str, Dict[str, int]] = {}
        for m in re.finditer(r"enum\s+(\w+)\s*\{(.*?)\};", self.text, re.S):
            self.enums[m.group(1)] = {k: int(v) for k, v in
                                      re.findall(r"\b([A-Z][A-Z_0-9]+)\s*=\s*(\d+)", m.group(2))}

    def has_member(self, struct_name: str, member: str) -> bool:
        top = member.split(".", 1)[0]
        return re.search(r"\b%s\s*(\[[^]]*\])?\s*;" % re.escape(top),
                         self.structs[struct_name]) is not None


@pytest.fixture(scope="module")
def header() -> Header:
    if not HEADER.exists():
        pytest.skip("no /usr/include/linux/fuse.h")
    return Header(HEADER.read_text())


@pytest.fixture(scope="module")
def c_values(header: Header, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, int]:
    """Compile and run a C program that prints what the header says about every struct,
    member, constant, flag and code that abi defines (those this header has)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <sys/ioctl.h>",
             "#include <linux/fs.h>", "#include <linux/fuse.h>",
             '#define P(k, v) printf("%s %llu\\n", k, (unsigned long long)(v))',
             "int main(void) {",
             '  P("minor", FUSE_KERNEL_MINOR_VERSION);']
    for name, (cstruct, members, size_expr) in LAYOUTS.items():
        if cstruct not in header.structs:
            continue
        lines.append(f'  P("size:{name}", {size_expr or f"sizeof(struct {cstruct})"});')
        for member in members:
            if header.has_member(cstruct, member):
                lines.append(f'  P("off:{name}:{member}", offsetof(struct {cstruct}, {member}));')
    for cname in list(flag_c_names()) + list(CONSTANTS):
        lines += [f"#ifdef {cname}", f'  P("const:{cname}", {cname});', "#endif"]
    present = {k for entries in header.enums.values() for k in entries}
    for cname in enum_c_values():
        if cname in present:
            lines.append(f'  P("const:{cname}", {cname});')
    for n in NAMELENS:
        lines.append(f"  {{ struct fuse_dirent d; d.namelen = {n}; "
                     f'P("dirent:{n}", FUSE_DIRENT_SIZE(&d)); }}')
        lines.append(f"  {{ struct fuse_direntplus d; d.dirent.namelen = {n}; "
                     f'P("direntplus:{n}", FUSE_DIRENTPLUS_SIZE(&d)); }}')
    lines += ["  return 0;", "}"]
    tmp = tmp_path_factory.mktemp("abi")
    src, exe = tmp / "abi_check.c", tmp / "abi_check"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([gcc, "-Wall", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_header_struct_sizes_and_offsets(header: Header, c_values: Dict[str, int]) -> None:
    assert abi.KERNEL_MINOR_VERSION >= c_values["minor"] == header.minor
    abi_structs = {n for n in dir(abi) if isinstance(getattr(abi, n), struct.Struct)}
    assert abi_structs == set(LAYOUTS), "every abi struct needs a LAYOUTS entry"
    checked = 0
    for name, (cstruct, members, _) in LAYOUTS.items():
        st: struct.Struct = getattr(abi, name)
        if cstruct not in header.structs:
            assert header.minor < NEWER_STRUCTS.get(cstruct, 0), f"{cstruct} not in header"
            continue
        assert st.size == c_values[f"size:{name}"], f"sizeof {name}"
        offsets = field_offsets(st.format)
        assert len(offsets) == len(members), f"{name}: members list does not match format"
        for member, offset in zip(members, offsets):
            key = f"off:{name}:{member}"
            if key not in c_values:
                top = member.split(".", 1)[0]
                assert header.minor < NEWER_MEMBERS.get((cstruct, top), 0), key
                continue
            assert offset == c_values[key], f"offsetof {cstruct}.{member}"
        checked += 1
    assert checked >= 60


def test_header_constants_and_flags(header: Header, c_values: Dict[str, int]) -> None:
    expected = {**flag_c_names(), **CONSTANTS}
    expected.update({k: v for k, (_, v) in enum_c_values().items()})
    for cname, value in expected.items():
        key = f"const:{cname}"
        if key not in c_values:
            assert header.minor < NEWER_NAMES.get(cname, 0), f"{cname} missing from header"
            continue
        got = c_values[key]
        if value < 1 << 32:  # (1 << 31) is a negative int in C: compare as uint32
            got &= 0xFFFFFFFF
        assert got == value, cname


def test_header_record_sizes(c_values: Dict[str, int]) -> None:
    for n in NAMELENS:
        assert abi.dirent_size(n) == c_values[f"dirent:{n}"]
        assert abi.direntplus_size(n) == c_values[f"direntplus:{n}"]


def test_header_codes_all_known(header: Header) -> None:
    """Every entry of the header's opcode / notify-code enums exists in abi, same value."""
    opcodes = header.enums["fuse_opcode"]
    notify = header.enums["fuse_notify_code"]
    assert len(opcodes) > 40 and len(notify) >= 6
    known = enum_c_values()
    for enum_name in ("fuse_opcode", "fuse_notify_code", "fuse_ext_type"):
        for cname, value in header.enums.get(enum_name, {}).items():
            assert cname in known, f"{cname} missing from abi"
            assert known[cname] == (enum_name, value), cname


def test_header_flag_macros_all_known(header: Header) -> None:
    """Every single-bit macro of the header (flags of any kind) has an abi counterpart."""
    macros = dict(re.findall(r"#define\s+([A-Z][A-Z0-9_]+)\s+\(1(?:ULL|ull)?\s*<<\s*(\d+)\)",
                             header.text))
    assert len(macros) > 60
    ours = {**flag_c_names(), **CONSTANTS}
    for cname, bit in macros.items():
        assert ours.get(cname) == 1 << int(bit), cname
