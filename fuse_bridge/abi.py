"""The Linux FUSE wire protocol (7.12 .. 7.45), as data.

This module is the only place in xlfs that knows the kernel's numbers: protocol versions,
opcodes, notification codes, flag bits and the byte layout of every message. Every other
module (session, bridge ops, notify, mount) imports what it needs from here and never writes
a struct format, an opcode number or a flag value of its own. When the kernel grows a new
field, this is the one file to change, and ``tests/unit/test_abi.py`` checks the result
against ``<linux/fuse.h>`` with a C compiler.

Conventions:

* Every layout is a little-endian ``struct.Struct`` named after the kernel struct in upper
  case without its ``fuse_`` prefix (``READ_IN`` is ``struct fuse_read_in``). Padding and
  unused fields are ``x`` bytes, so ``unpack_from`` yields only the meaningful fields.
* Nested structs are flattened: ``ENTRY_OUT`` is the entry header followed by the 16 fields
  of ``ATTR``; ``LK_IN`` carries the four ``FILE_LOCK`` fields inline.
* A ``NamedTuple`` of the same name in CamelCase (``ReadIn``) names the fields of a request
  struct, in order: ``ReadIn._make(READ_IN.unpack_from(body))``.
* Comments give the protocol minor that added or changed a thing ("7.23"). What each opcode
  carries (its fixed argument, names, reply) and who serves it is the opcode table's,
  ``fuse_bridge.opcodes``, which refers to the layouts here. Nothing here does
  I/O; the helpers at the end are small and allocation-light because they sit on the hot path.

Requests read from /dev/fuse are an ``IN_HEADER`` (whose ``len`` covers everything), the
opcode's fixed argument (``fuse_bridge.opcodes``), then NUL-terminated names or data, then, since
7.38, ``total_extlen * 8`` bytes of extensions, each starting with an ``EXT_HEADER``.
Replies are an ``OUT_HEADER`` and the reply struct; notifications are an ``OUT_HEADER`` with
``unique`` 0 and the ``NotifyCode`` in ``error``.
"""

from __future__ import annotations

import enum
import struct
import types
from typing import List, NamedTuple, Sequence, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview]

# --------------------------------------------------------------------------- versions

KERNEL_VERSION = 7
KERNEL_MINOR_VERSION = 45  # the highest minor this module describes and the bridge answers
# Lowest minor we accept from the kernel. 7.12 brought umask in CREATE/MKNOD/MKDIR and the
# inode/entry invalidation notifications, which the bridge relies on; every layout it reads
# has had its current size since then, except INIT (see INIT_IN_COMPAT, init_out_size) and
# SETXATTR (extended form only when SETXATTR_EXT is negotiated).
MIN_MINOR = 12

ROOT_ID = 1
FUSE_MIN_READ_BUFFER = 8192
PAGE_SIZE = 4096
MAX_PAGES_DEFAULT = 32  # pages per request when MAX_PAGES is not negotiated
MAX_PAGES_LIMIT = 256  # default of /proc/sys/fs/fuse/max_pages_limit
BUFFER_HEADER_SIZE = 4096  # read buffer = max(FUSE_MIN_READ_BUFFER, max_write + this)
FUSE_IOCTL_MAX_IOV = 256
FUSE_MAX_NR_SECCTX = 31  # extension types 0..31 are security-context counts
CUSE_INIT_INFO_MAX = 4096
FUSE_UNIQUE_RESEND = 1 << 63  # 7.40: set in in_header.unique of a resent request
FUSE_INVALID_UIDGID = 0xFFFFFFFF  # 7.41: in_header uid/gid not representable (idmap)
NAME_MAX_WIRE = 4096  # no single name or symlink target on the wire exceeds this, NUL incl.
# Linux's xattr limits (<linux/limits.h>): the VFS refuses bigger names, values and lists
# before a request reaches us, so a kernel never asks for more.
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_LIST_MAX = 65536

# ioctls on the /dev/fuse fd: _IOR(229, 0, u32), _IOW(229, 1, 16-byte map), _IOW(229, 2, u32)
FUSE_DEV_IOC_MAGIC = 229
FUSE_DEV_IOC_CLONE = 0x8004E500
FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501  # 7.40
FUSE_DEV_IOC_BACKING_CLOSE = 0x4004E502  # 7.40

# Sizes of the shorter forms that older minors (or un-negotiated features) use.
FUSE_COMPAT_INIT_OUT_SIZE = 8  # < 7.5
FUSE_COMPAT_22_INIT_OUT_SIZE = 24  # < 7.23
FUSE_COMPAT_ENTRY_OUT_SIZE = 120  # < 7.9
FUSE_COMPAT_ATTR_OUT_SIZE = 96  # < 7.9
FUSE_COMPAT_MKNOD_IN_SIZE = 8  # < 7.12
FUSE_COMPAT_WRITE_IN_SIZE = 24  # < 7.9
FUSE_COMPAT_STATFS_SIZE = 48  # < 7.4
FUSE_COMPAT_SETXATTR_IN_SIZE = 8  # without SETXATTR_EXT


# --------------------------------------------------------------------------- codes

class Opcode(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2  # never answered
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31  # 7.7
    SETLK = 32
    SETLKW = 33
    ACCESS = 34  # 7.3
    CREATE = 35  # 7.3
    INTERRUPT = 36  # 7.7, never answered
    BMAP = 37  # 7.8
    DESTROY = 38  # 7.8
    IOCTL = 39  # 7.11
    POLL = 40  # 7.11
    NOTIFY_REPLY = 41  # 7.15, the kernel's answer to NotifyCode.RETRIEVE; never answered
    BATCH_FORGET = 42  # 7.16, never answered
    FALLOCATE = 43  # 7.19
    READDIRPLUS = 44  # 7.21
    RENAME2 = 45  # 7.23
    LSEEK = 46  # 7.24
    COPY_FILE_RANGE = 47  # 7.28
    SETUPMAPPING = 48  # 7.31 (virtio-fs DAX)
    REMOVEMAPPING = 49  # 7.31
    SYNCFS = 50  # 7.34
    TMPFILE = 51  # 7.37
    STATX = 52  # 7.39
    COPY_FILE_RANGE_64 = 53  # 7.45
    CUSE_INIT = 4096
    # Never sent; they exist so that a byte-swapped INIT is recognisable.
    CUSE_INIT_BSWAP_RESERVED = 1048576
    INIT_BSWAP_RESERVED = 436207616


def opcode_name(opcode: int) -> str:
    """``LOOKUP`` for 1; ``OPCODE_9999`` for a number no opcode has."""
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"OPCODE_{opcode}"


class NotifyCode(enum.IntEnum):
    POLL = 1  # 7.11
    INVAL_INODE = 2  # 7.12
    INVAL_ENTRY = 3  # 7.12
    STORE = 4  # 7.15
    RETRIEVE = 5  # 7.15
    DELETE = 6  # 7.18
    RESEND = 7  # 7.40
    INC_EPOCH = 8  # 7.44, no payload
    PRUNE = 9  # 7.45


class ExtType(enum.IntEnum):
    """``EXT_HEADER.type`` of a request extension (values <= 31 are SECCTX counts)."""
    GROUPS = 32  # 7.38: SUPP_GROUPS follows


# --------------------------------------------------------------------------- flags

class InitFlag(enum.IntFlag):
    """INIT flags as one 64-bit set; bits 32..63 travel in ``flags2`` (needs INIT_EXT)."""
    ASYNC_READ = 1 << 0  # 7.6
    POSIX_LOCKS = 1 << 1  # 7.7
    FILE_OPS = 1 << 2  # 7.9, never implemented by the kernel
    ATOMIC_O_TRUNC = 1 << 3  # 7.9
    EXPORT_SUPPORT = 1 << 4  # 7.10
    BIG_WRITES = 1 << 5  # 7.9
    DONT_MASK = 1 << 6  # 7.12
    SPLICE_WRITE = 1 << 7  # 7.14
    SPLICE_MOVE = 1 << 8  # 7.14
    SPLICE_READ = 1 << 9  # 7.14
    FLOCK_LOCKS = 1 << 10  # 7.17
    HAS_IOCTL_DIR = 1 << 11  # 7.18
    AUTO_INVAL_DATA = 1 << 12  # 7.20
    DO_READDIRPLUS = 1 << 13  # 7.21
    READDIRPLUS_AUTO = 1 << 14  # 7.21
    ASYNC_DIO = 1 << 15  # 7.22
    WRITEBACK_CACHE = 1 << 16  # 7.23
    NO_OPEN_SUPPORT = 1 << 17  # 7.23
    PARALLEL_DIROPS = 1 << 18  # 7.25
    HANDLE_KILLPRIV = 1 << 19  # 7.26
    POSIX_ACL = 1 << 20  # 7.26
    ABORT_ERROR = 1 << 21  # 7.27
    MAX_PAGES = 1 << 22  # 7.28
    CACHE_SYMLINKS = 1 << 23  # 7.28
    NO_OPENDIR_SUPPORT = 1 << 24  # 7.29
    EXPLICIT_INVAL_DATA = 1 << 25  # 7.30
    MAP_ALIGNMENT = 1 << 26  # 7.31
    SUBMOUNTS = 1 << 27  # 7.32
    HANDLE_KILLPRIV_V2 = 1 << 28  # 7.33
    SETXATTR_EXT = 1 << 29  # 7.33
    INIT_EXT = 1 << 30  # 7.36
    INIT_RESERVED = 1 << 31  # 7.36, must not be used
    SECURITY_CTX = 1 << 32  # 7.36
    HAS_INODE_DAX = 1 << 33  # 7.36
    CREATE_SUPP_GROUP = 1 << 34  # 7.38
    HAS_EXPIRE_ONLY = 1 << 35  # 7.38
    DIRECT_IO_ALLOW_MMAP = 1 << 36  # 7.39
    DIRECT_IO_RELAX = DIRECT_IO_ALLOW_MMAP  # older name of the same bit
    PASSTHROUGH = 1 << 37  # 7.40
    NO_EXPORT_SUPPORT = 1 << 38  # 7.40
    HAS_RESEND = 1 << 39  # 7.40
    ALLOW_IDMAP = 1 << 40  # 7.41
    OVER_IO_URING = 1 << 41  # 7.42
    REQUEST_TIMEOUT = 1 << 42  # 7.43


class FopenFlag(enum.IntFlag):
    """``OPEN_OUT.open_flags``."""
    DIRECT_IO = 1 << 0  # 7.2
    KEEP_CACHE = 1 << 1  # 7.2
    NONSEEKABLE = 1 << 2  # 7.10
    CACHE_DIR = 1 << 3  # 7.28
    STREAM = 1 << 4
    NOFLUSH = 1 << 5  # 7.35
    PARALLEL_DIRECT_WRITES = 1 << 6  # 7.38
    PASSTHROUGH = 1 << 7  # 7.40


class SetattrValid(enum.IntFlag):
    """``SETATTR_IN.valid``: which fields of the request are meaningful."""
    MODE = 1 << 0
    UID = 1 << 1
    GID = 1 << 2
    SIZE = 1 << 3
    ATIME = 1 << 4
    MTIME = 1 << 5
    FH = 1 << 6  # 7.3
    ATIME_NOW = 1 << 7  # 7.9
    MTIME_NOW = 1 << 8  # 7.9
    LOCKOWNER = 1 << 9  # 7.9
    CTIME = 1 << 10  # 7.23
    KILL_SUIDGID = 1 << 11  # 7.33


class GetattrFlag(enum.IntFlag):
    FH = 1 << 0  # 7.9: GETATTR_IN.fh is valid


class LkFlag(enum.IntFlag):
    FLOCK = 1 << 0  # 7.17: a flock(2) lock, not a POSIX one


class WriteFlag(enum.IntFlag):
    """``WRITE_IN.write_flags``."""
    CACHE = 1 << 0  # page-cache writeback; fh is a guess
    LOCKOWNER = 1 << 1  # 7.9: lock_owner is valid
    KILL_SUIDGID = 1 << 2  # 7.31 (as KILL_PRIV), 7.33
    KILL_PRIV = KILL_SUIDGID


class ReadFlag(enum.IntFlag):
    LOCKOWNER = 1 << 1  # 7.9: READ_IN.lock_owner is valid


class ReleaseFlag(enum.IntFlag):
    FLUSH = 1 << 0  # 7.8
    FLOCK_UNLOCK = 1 << 1  # 7.17


class FsyncFlag(enum.IntFlag):
    FDATASYNC = 1 << 0


class IoctlFlag(enum.IntFlag):
    COMPAT = 1 << 0
    UNRESTRICTED = 1 << 1
    RETRY = 1 << 2
    BIT32 = 1 << 3  # FUSE_IOCTL_32BIT, 7.16
    DIR = 1 << 4  # 7.18
    COMPAT_X32 = 1 << 5  # 7.30


class PollFlag(enum.IntFlag):
    SCHEDULE_NOTIFY = 1 << 0


class AttrFlag(enum.IntFlag):
    """``ATTR.flags``."""
    SUBMOUNT = 1 << 0  # 7.32
    DAX = 1 << 1  # 7.36


class OpenInFlag(enum.IntFlag):
    """``OPEN_IN.open_flags`` and ``CREATE_IN.open_flags``."""
    KILL_SUIDGID = 1 << 0  # 7.33


CreateInFlag = OpenInFlag


class SetxattrFlag(enum.IntFlag):
    """``SETXATTR_IN.setxattr_flags``."""
    ACL_KILL_SGID = 1 << 0  # 7.33


class InvalEntryFlag(enum.IntFlag):
    """``NOTIFY_INVAL_ENTRY_OUT.flags``."""
    EXPIRE_ONLY = 1 << 0  # 7.38, needs InitFlag.HAS_EXPIRE_ONLY


class RenameFlag(enum.IntFlag):
    """``RENAME2_IN.flags``: Linux's renameat2() flags, passed through."""
    NOREPLACE = 1 << 0
    EXCHANGE = 1 << 1
    WHITEOUT = 1 << 2


class CuseInitFlag(enum.IntFlag):
    UNRESTRICTED_IOCTL = 1 << 0


class SetupmappingFlag(enum.IntFlag):
    WRITE = 1 << 0
    READ = 1 << 1


# --------------------------------------------------------------------------- layouts

_ATTR = "QQQQQQIIIIIIIIII"
_ENTRY = "QQQQII" + _ATTR
_LOCK = "QQII"
_SX_TIME = "qI4x"
_STATX = "IIQIIIH2xQQQQ" + _SX_TIME * 4 + "IIII112x"

IN_HEADER = struct.Struct("<IIQQIIIH2x")  # 40; total_extlen is 7.38
OUT_HEADER = struct.Struct("<IiQ")  # 16
ATTR = struct.Struct("<" + _ATTR)  # 88; flags was padding before 7.32
KSTATFS = struct.Struct("<QQQQQIII4x24x")  # 80
STATFS_OUT = KSTATFS
FILE_LOCK = struct.Struct("<" + _LOCK)  # 24
ENTRY_OUT = struct.Struct("<" + _ENTRY)  # 128
ATTR_OUT = struct.Struct("<QI4x" + _ATTR)  # 104
FORGET_IN = struct.Struct("<Q")
FORGET_ONE = struct.Struct("<QQ")  # 7.16, repeated after BATCH_FORGET_IN
BATCH_FORGET_IN = struct.Struct("<I4x")  # 7.16
GETATTR_IN = struct.Struct("<I4xQ")  # 7.9
MKNOD_IN = struct.Struct("<III4x")  # 16 since 7.12 (umask)
MKDIR_IN = struct.Struct("<II")
RENAME_IN = struct.Struct("<Q")
RENAME2_IN = struct.Struct("<QI4x")  # 7.23
LINK_IN = struct.Struct("<Q")
SETATTR_IN = struct.Struct("<I4xQQQQQQIIII4xII4x")  # 88; ctime is 7.23
OPEN_IN = struct.Struct("<II")  # open_flags since 7.33
CREATE_IN = struct.Struct("<IIII")  # open_flags since 7.33
OPEN_OUT = struct.Struct("<QIi")  # backing_id since 7.40
RELEASE_IN = struct.Struct("<QIIQ")  # 24
FLUSH_IN = struct.Struct("<Q8xQ")  # 24
READ_IN = struct.Struct("<QQIIQI4x")  # 40 since 7.9
WRITE_IN = struct.Struct("<QQIIQI4x")  # 40 since 7.9
WRITE_OUT = struct.Struct("<I4x")
FSYNC_IN = struct.Struct("<QI4x")
SETXATTR_IN = struct.Struct("<III4x")  # 7.33, only with InitFlag.SETXATTR_EXT
SETXATTR_IN_COMPAT = struct.Struct("<II")
GETXATTR_IN = struct.Struct("<I4x")  # also LISTXATTR
GETXATTR_OUT = struct.Struct("<I4x")
LK_IN = struct.Struct("<QQ" + _LOCK + "I4x")  # 48
LK_OUT = struct.Struct("<" + _LOCK)
ACCESS_IN = struct.Struct("<I4x")
INIT_IN = struct.Struct("<IIIII44x")  # 64 since 7.36 (flags2)
INIT_IN_COMPAT = struct.Struct("<IIII")  # 16: what kernels before 7.36 send
INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")  # 64; max_stack_depth 7.40, request_timeout 7.43
CUSE_INIT_IN = struct.Struct("<II4xI")
CUSE_INIT_OUT = struct.Struct("<II4xIIIII40x")  # 72
INTERRUPT_IN = struct.Struct("<Q")
BMAP_IN = struct.Struct("<QI4x")
BMAP_OUT = struct.Struct("<Q")
IOCTL_IN = struct.Struct("<QIIQII")  # 32
IOCTL_IOVEC = struct.Struct("<QQ")
IOCTL_OUT = struct.Struct("<iIII")
POLL_IN = struct.Struct("<QQII")  # events since 7.21
POLL_OUT = struct.Struct("<I4x")
NOTIFY_POLL_WAKEUP_OUT = struct.Struct("<Q")
FALLOCATE_IN = struct.Struct("<QQQI4x")  # 7.19
LSEEK_IN = struct.Struct("<QQI4x")  # 7.24
LSEEK_OUT = struct.Struct("<Q")
COPY_FILE_RANGE_IN = struct.Struct("<QQQQQQQ")  # 7.28
COPY_FILE_RANGE_OUT = struct.Struct("<Q")  # 7.45, reply of COPY_FILE_RANGE_64
SETUPMAPPING_IN = struct.Struct("<QQQQQ")  # 7.31
REMOVEMAPPING_IN = struct.Struct("<I")  # 4 bytes, followed by REMOVEMAPPING_ONE records
REMOVEMAPPING_ONE = struct.Struct("<QQ")
SYNCFS_IN = struct.Struct("<8x")  # 7.34
STATX_IN = struct.Struct("<I4xQII")  # 7.39
SX_TIME = struct.Struct("<" + _SX_TIME)  # 7.39
STATX = struct.Struct("<" + _STATX)  # 256, the statx(2) layout
STATX_OUT = struct.Struct("<QII16x" + _STATX)  # 288
DIRENT = struct.Struct("<QQII")  # 24, then the name, padded to 8
DIRENTPLUS = struct.Struct("<" + _ENTRY + "QQII")  # 152, then the name, padded to 8
NOTIFY_INVAL_INODE_OUT = struct.Struct("<Qqq")
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("<QII")  # then name + NUL; flags since 7.38
NOTIFY_DELETE_OUT = struct.Struct("<QQI4x")  # then name + NUL
NOTIFY_STORE_OUT = struct.Struct("<QQI4x")  # then the data
NOTIFY_RETRIEVE_OUT = struct.Struct("<QQQI4x")
NOTIFY_RETRIEVE_IN = struct.Struct("<8xQI4x16x")  # 40, body of Opcode.NOTIFY_REPLY
NOTIFY_PRUNE_OUT = struct.Struct("<I4x8x")  # 7.45, then count u64 nodeids
EXT_HEADER = struct.Struct("<II")  # 7.38
SECCTX_HEADER = struct.Struct("<II")  # 7.36
SECCTX = struct.Struct("<I4x")  # then name + NUL, then the context
SUPP_GROUPS = struct.Struct("<I")  # 7.38, then nr_groups u32 gids
BACKING_MAP = struct.Struct("<iI8x")  # 7.40, argument of FUSE_DEV_IOC_BACKING_OPEN

FUSE_NAME_OFFSET = DIRENT.size
FUSE_NAME_OFFSET_DIRENTPLUS = DIRENTPLUS.size

# --------------------------------------------------------------------------- decoded forms
# Single-field structs need none: ``RENAME_IN.unpack_from(body)[0]``.

class InHeader(NamedTuple):
    len: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    total_extlen: int  # in 8-byte units


class OutHeader(NamedTuple):
    len: int
    error: int
    unique: int


class Attr(NamedTuple):
    ino: int
    size: int
    blocks: int
    atime: int
    mtime: int
    ctime: int
    atimensec: int
    mtimensec: int
    ctimensec: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    blksize: int
    flags: int


class Kstatfs(NamedTuple):
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    bsize: int
    namelen: int
    frsize: int


class FileLock(NamedTuple):
    start: int
    end: int
    type: int
    pid: int


class InitIn(NamedTuple):
    major: int
    minor: int
    max_readahead: int
    flags: int
    flags2: int


class InitOut(NamedTuple):
    major: int
    minor: int
    max_readahead: int
    flags: int
    max_background: int
    congestion_threshold: int
    max_write: int
    time_gran: int
    max_pages: int
    map_alignment: int
    flags2: int
    max_stack_depth: int
    request_timeout: int


class ForgetOne(NamedTuple):
    nodeid: int
    nlookup: int


class GetattrIn(NamedTuple):
    getattr_flags: int
    fh: int


class SetattrIn(NamedTuple):
    valid: int
    fh: int
    size: int
    lock_owner: int
    atime: int
    mtime: int
    ctime: int
    atimensec: int
    mtimensec: int
    ctimensec: int
    mode: int
    uid: int
    gid: int


class MknodIn(NamedTuple):
    mode: int
    rdev: int
    umask: int


class MkdirIn(NamedTuple):
    mode: int
    umask: int


class Rename2In(NamedTuple):
    newdir: int
    flags: int


class OpenIn(NamedTuple):
    flags: int
    open_flags: int


class CreateIn(NamedTuple):
    flags: int
    mode: int
    umask: int
    open_flags: int


class OpenOut(NamedTuple):
    fh: int
    open_flags: int
    backing_id: int


class ReleaseIn(NamedTuple):
    fh: int
    flags: int
    release_flags: int
    lock_owner: int


class FlushIn(NamedTuple):
    fh: int
    lock_owner: int


class ReadIn(NamedTuple):
    fh: int
    offset: int
    size: int
    read_flags: int
    lock_owner: int
    flags: int


class WriteIn(NamedTuple):
    fh: int
    offset: int
    size: int
    write_flags: int
    lock_owner: int
    flags: int


class FsyncIn(NamedTuple):
    fh: int
    fsync_flags: int


class SetxattrIn(NamedTuple):
    size: int
    flags: int
    setxattr_flags: int


class SetxattrInCompat(NamedTuple):
    size: int
    flags: int


class LkIn(NamedTuple):
    fh: int
    owner: int
    start: int
    end: int
    type: int
    pid: int
    lk_flags: int


class BmapIn(NamedTuple):
    block: int
    blocksize: int


class IoctlIn(NamedTuple):
    fh: int
    flags: int
    cmd: int
    arg: int
    in_size: int
    out_size: int


class PollIn(NamedTuple):
    fh: int
    kh: int
    flags: int
    events: int


class FallocateIn(NamedTuple):
    fh: int
    offset: int
    length: int
    mode: int


class LseekIn(NamedTuple):
    fh: int
    offset: int
    whence: int


class CopyFileRangeIn(NamedTuple):
    fh_in: int
    off_in: int
    nodeid_out: int
    fh_out: int
    off_out: int
    len: int
    flags: int


class StatxIn(NamedTuple):
    getattr_flags: int
    fh: int
    sx_flags: int
    sx_mask: int


class Dirent(NamedTuple):
    ino: int
    off: int
    namelen: int
    type: int


class NotifyRetrieveIn(NamedTuple):
    offset: int
    size: int


class ExtHeader(NamedTuple):
    size: int  # bytes, this header included
    type: int


# --------------------------------------------------------------------------- helpers

_OUT_HEADER_PACK = OUT_HEADER.pack
_DIRENT_PACK_INTO = DIRENT.pack_into
_DIRENTPLUS_PACK_INTO = DIRENTPLUS.pack_into
_ZEROS = memoryview(bytes(8))


def rec_align(n: int) -> int:
    """Round up to the 8-byte record alignment of dirents and extensions."""
    return (n + 7) & ~7


def dirent_size(namelen: int) -> int:
    """Bytes one READDIR record with a name of ``namelen`` bytes takes."""
    return (24 + namelen + 7) & ~7


def direntplus_size(namelen: int) -> int:
    """Bytes one READDIRPLUS record with a name of ``namelen`` bytes takes."""
    return (152 + namelen + 7) & ~7


def pack_dirent(buf: Union[bytearray, memoryview], offset: int, ino: int, off: int,
                type: int, name: bytes) -> int:
    """Write one READDIR record at ``offset``; return the offset after it, or -1 if the
    record does not fit in ``buf`` (nothing is written then). ``type`` is the S_IFMT
    bits >> 12 (DT_*), ``off`` the cookie of the entry after this one."""
    namelen = len(name)
    start = offset + 24
    end = (start + namelen + 7) & ~7
    if end > len(buf):
        return -1
    _DIRENT_PACK_INTO(buf, offset, ino, off, namelen, type)
    name_end = start + namelen
    buf[start:name_end] = name
    if name_end != end:
        buf[name_end:end] = _ZEROS[:end - name_end]
    return end


def pack_direntplus(buf: Union[bytearray, memoryview], offset: int, nodeid: int,
                    generation: int, entry_valid: int, attr_valid: int,
                    entry_valid_nsec: int, attr_valid_nsec: int, attr: Sequence[int],
                    off: int, type: int, name: bytes) -> int:
    """Write one READDIRPLUS record (an ENTRY_OUT, then a dirent whose ino is
    ``attr[0]``); return the offset after it, or -1 if it does not fit. ``attr`` holds the
    16 ATTR values in order. A ``nodeid`` of 0 tells the kernel not to count a lookup."""
    namelen = len(name)
    start = offset + 152
    end = (start + namelen + 7) & ~7
    if end > len(buf):
        return -1
    _DIRENTPLUS_PACK_INTO(buf, offset, nodeid, generation, entry_valid, attr_valid,
                          entry_valid_nsec, attr_valid_nsec, *attr, attr[0], off,
                          namelen, type)
    name_end = start + namelen
    buf[start:name_end] = name
    if name_end != end:
        buf[name_end:end] = _ZEROS[:end - name_end]
    return end


_RECORD_NAME_MAX = 255    # names up to this length get a precompiled record layout


def _record_packs(head: str) -> list:
    """One ``pack`` per name length: the fixed part ``head``, then the name padded with
    zeros to the 8-byte record alignment (struct's ``s`` pads), in a single call."""
    return [struct.Struct(f"<{head}{(n + 7) & ~7}s").pack
            for n in range(_RECORD_NAME_MAX + 1)]


_DIRENT_RECORDS = _record_packs("QQII")
_DIRENTPLUS_RECORDS = _record_packs(_ENTRY + "QQII")


def _record_pack(packs: list, head: str, namelen: int):
    if namelen <= _RECORD_NAME_MAX:
        return packs[namelen]
    return struct.Struct(f"<{head}{(namelen + 7) & ~7}s").pack


def _fitting(records: list, size: int) -> bytes:
    """The leading records that fit in ``size`` bytes, joined."""
    data = b"".join(records)
    if len(data) <= size:
        return data
    total = 0
    for k, r in enumerate(records):
        total += len(r)
        if total > size:
            return b"".join(records[:k])
    return data


def pack_dirents(entries: Sequence[Tuple], size: int) -> bytes:
    """A READDIR reply: one record per DirEntry (name, ino, type, off, entry), in order, as many
    as fit in ``size`` bytes (the same bytes as pack_dirent one by one, in one join)."""
    packs = _DIRENT_RECORDS
    records = []
    append = records.append
    for name, ino, type, off, _ in entries:
        n = len(name)
        if n > _RECORD_NAME_MAX:
            append(_record_pack(packs, "QQII", n)(ino, off, n, type, name))
        else:
            append(packs[n](ino, off, n, type, name))
    return _fitting(records, size)


def direntplus_packer(namelen: int):
    """``pack`` of one whole READDIRPLUS record with a name of ``namelen`` bytes: its
    arguments are DIRENTPLUS's fields (the ENTRY_OUT's, then ino, off, namelen, type),
    then the name; the padding is included."""
    return _record_pack(_DIRENTPLUS_RECORDS, _ENTRY + "QQII", namelen)


def split_names(body: Buffer, count: int) -> List[bytes]:
    """The first ``count`` NUL-terminated names of ``body``, without their NULs.

    Whatever follows them (a SETXATTR value) starts at ``sum(len(n) + 1 for n in names)``.
    Raises ValueError when a terminator is missing."""
    if isinstance(body, memoryview):
        data: Union[bytes, bytearray] = body[:count * NAME_MAX_WIRE].tobytes()
    else:
        data = body
    names = []
    pos = 0
    for _ in range(count):
        nul = data.find(b"\0", pos)
        if nul < 0:
            raise ValueError("name is not NUL-terminated")
        names.append(bytes(data[pos:nul]))
        pos = nul + 1
    return names


def unpack_u32s(buf: Buffer, offset: int, count: int) -> Tuple[int, ...]:
    """``count`` u32s at ``offset`` (SUPP_GROUPS' gids)."""
    return struct.unpack_from(f"<{count}I", buf, offset)


def unpack_u64s(buf: Buffer, offset: int, count: int) -> Tuple[int, ...]:
    """``count`` u64s at ``offset`` (NOTIFY_PRUNE's nodeids)."""
    return struct.unpack_from(f"<{count}Q", buf, offset)


def pack_u32(value: int) -> bytes:
    """A bare u32 argument: FUSE_DEV_IOC_CLONE's descriptor, FUSE_DEV_IOC_BACKING_CLOSE's
    backing id (7.40)."""
    return value.to_bytes(4, "little")


def message_length(first4: Buffer) -> int:
    """The first field of every message, request or reply: its length in bytes."""
    return int.from_bytes(first4[:4], "little")


def pack_out_header(len: int, error: int, unique: int) -> bytes:
    """Header of a reply: total length, 0 or -errno, the request's unique."""
    return _OUT_HEADER_PACK(len, error, unique)


def pack_notify_header(len: int, code: int) -> bytes:
    """Header of a notification: unique 0, the NotifyCode in the error field."""
    return _OUT_HEADER_PACK(len, code, 0)


def split_timeout(seconds: float) -> Tuple[int, int]:
    """A cache timeout in seconds as the (seconds, nanoseconds) pair the kernel reads."""
    if seconds <= 0:
        return 0, 0
    sec = int(seconds)
    return sec, min(int((seconds - sec) * 1e9), 999_999_999)


def init_flags_join(flags: int, flags2: int) -> int:
    """The 64-bit INIT flag set from INIT_IN's two words (flags2 counts only with INIT_EXT)."""
    if flags & InitFlag.INIT_EXT:
        return flags | (flags2 << 32)
    return flags


def init_flags_split(flags: int) -> Tuple[int, int]:
    """(flags, flags2) words of a 64-bit INIT flag set, for INIT_OUT."""
    return flags & 0xFFFFFFFF, (flags >> 32) & 0xFFFFFFFF


def decode_init_in(body: Buffer) -> InitIn:
    """INIT's argument from a body of 16 (before 7.36) or 64 bytes; flags2 is 0 unless the
    body carries it and INIT_EXT is set."""
    major, minor, max_readahead, flags = INIT_IN_COMPAT.unpack_from(body)
    flags2 = 0
    if flags & InitFlag.INIT_EXT and len(body) >= INIT_IN.size:
        flags2 = INIT_IN.unpack_from(body)[4]
    return InitIn(major, minor, max_readahead, flags, flags2)


def init_out_size(minor: int) -> int:
    """Bytes of INIT_OUT to send to a kernel speaking ``minor``."""
    if minor < 5:
        return FUSE_COMPAT_INIT_OUT_SIZE
    if minor < 23:
        return FUSE_COMPAT_22_INIT_OUT_SIZE
    return INIT_OUT.size


def int_flags(cls: type) -> "types.SimpleNamespace":
    """The members of an IntFlag class as plain ints: arithmetic on IntFlag members makes a
    new member per operation, too slow for the request path."""
    return types.SimpleNamespace(**{name: int(m) for name, m in cls.__members__.items()})
