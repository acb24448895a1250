"""Options of the FUSE bridge (GlusterFS's client flags), separate from the graph's.

``--xlator-option`` configures the graph; everything here configures the bridge.  Defaults
are GlusterFS's, except ``invalidate_limit``: GlusterFS's 0 means "unbounded", which grew a
queue to hundreds of gigabytes (GlusterFS issue #3553); xlfs bounds the notification queue
at 4096 by default and counts what it had to drop (see docs/deadlocks.md).

Each option is declared once, as a field of :class:`BridgeOptions`, and everything else
comes from that declaration: the command-line flag ``--FLAG[=VALUE]`` and its ``-o FLAG=``
key (fuse_bridge.cli_args), its help line, how its value is parsed and checked, and its
statedump line ``option.FIELD = VALUE``.  Adding an option is adding a field::

    congestion_threshold: int = option(
        48, "congestion-threshold", "kernel congestion threshold (default 48)",
        parse=parse_uint, metavar="N")

A field declared with ``option(default)`` alone (no flag) is set by the code only.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional, Union

from xlators.core.options import parse_bool, parse_time

DEFAULT_INVALIDATE_LIMIT = 4096

#: The kinds of a flag's value: "bool?" a value that is optional and given only with ``=``
#: (a bare ``--FLAG`` means yes and never takes the next word), "value" a required one.
KINDS = ("bool?", "value")


# -- value parsers (ValueError: the command line reports "invalid value") ------------------

def parse_uint(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def parse_secs(text: str) -> float:
    return parse_time(text)


def parse_direct_io(text: str) -> Any:
    if text.lower() in ("auto", "disable-auto"):
        return "auto"
    return parse_bool(text)


def parse_passthrough(text: str) -> str:
    t = text.lower()
    if t == "auto":
        return t
    return "yes" if parse_bool(t) else "no"


# -- the declaration ----------------------------------------------------------------------

@dataclass(frozen=True)
class CommandLine:
    """How an option is given: ``--FLAG[=VALUE]`` and ``-o FLAG=VALUE`` (or FLAG_NAME)."""
    flag: str
    help: str
    kind: str = "value"
    parse: Callable[[str], Any] = str
    metavar: str = "VALUE"
    hidden: bool = False              # accepted, not listed by --help
    minimum: Optional[int] = None     # "--FLAG must be at least N" below it


@dataclass(frozen=True)
class Declared:
    """One bridge option: its BridgeOptions field, default and command line (if any)."""
    name: str
    default: Any
    cli: Optional[CommandLine]

    @property
    def statedump_key(self) -> str:
        return f"option.{self.name}"


def option(default: Any, flag: str = "", help: str = "", *, kind: str = "value",
           parse: Callable[[str], Any] = str, metavar: str = "VALUE", hidden: bool = False,
           minimum: Optional[int] = None) -> Any:
    """A BridgeOptions field; with ``flag``, given on the command line as well."""
    if kind not in KINDS:
        raise ValueError(f"option {flag or default!r}: kind must be one of {KINDS}")
    meta = {"cli": CommandLine(flag, help, kind, parse, metavar, hidden, minimum)} if flag else {}
    return field(default=default, metadata=meta)


def boolean(default: Optional[bool], flag: str, help: str, *, hidden: bool = False) -> Any:
    """A yes/no option: ``--FLAG`` (yes), ``--FLAG=BOOL``, ``-o FLAG[=BOOL]``."""
    return option(default, flag, help, kind="bool?", parse=parse_bool, hidden=hidden)


@dataclass
class BridgeOptions:
    # The fields with a flag are listed by --help in this order.
    read_only: bool = boolean(False, "read-only", "mount read-only")
    attribute_timeout: float = option(
        1.0, "attribute-timeout", "kernel attribute cache timeout (default 1)",
        parse=parse_secs, metavar="SECONDS")
    entry_timeout: float = option(
        1.0, "entry-timeout", "kernel entry cache timeout (default 1)",
        parse=parse_secs, metavar="SECONDS")
    negative_timeout: float = option(
        0.0, "negative-timeout", "kernel negative entry cache timeout (default 0)",
        parse=parse_secs, metavar="SECONDS")
    # None/"auto": per file (translator hint)
    direct_io_mode: Union[bool, str, None] = option(
        None, "direct-io-mode",
        "bypass the page cache for every file (default auto: translators decide)",
        kind="bool?", parse=parse_direct_io, metavar="BOOL|auto")
    use_readdirp: bool = boolean(True, "use-readdirp", "use READDIRPLUS (default yes)")
    fopen_keep_cache: Optional[bool] = boolean(None, "fopen-keep-cache",
                                               "keep the page cache across opens")
    kernel_writeback_cache: bool = boolean(False, "kernel-writeback-cache",
                                           "let the kernel cache writes (default no)")
    fuse_passthrough: str = option(      # auto|yes|no (fuse_bridge.passthrough)
        "auto", "fuse-passthrough",
        "let the kernel read, write and mmap brick files itself when every translator "
        "passes file data through unchanged (auto, the default: when the kernel and the "
        "stack allow, and --kernel-writeback-cache is not asked for; yes: fail the mount "
        "otherwise, and turn the kernel writeback cache off; no: never)",
        parse=parse_passthrough, metavar="auto|yes|no")
    lru_limit: int = option(
        65536, "lru-limit",
        "inodes the kernel may keep cached before the least recently used are "
        "invalidated (default 65536, and at most 3/4 of the descriptor limit)",
        parse=parse_uint, metavar="N")
    invalidate_limit: int = option(
        DEFAULT_INVALIDATE_LIMIT, "invalidate-limit",
        "bound of the kernel notification queue (default 4096)", parse=parse_uint,
        metavar="N")
    background_qlen: int = option(64, "background-qlen",
                                  "kernel background requests (default 64)",
                                  parse=parse_uint, metavar="N")
    congestion_threshold: int = option(48, "congestion-threshold",
                                       "kernel congestion threshold (default 48)",
                                       parse=parse_uint, metavar="N")
    reader_thread_count: int = option(
        1, "reader-thread-count",
        "/dev/fuse channels (cloned descriptors) read in parallel (default 1)",
        parse=parse_uint, metavar="N", minimum=1)
    idle_poll: float = option(
        0.002, "fuse-idle-poll",
        "how long a reader waits for the next request blocked in poll() when nothing else "
        "is runnable, before it sleeps in the event loop (default 0.002; 0: never)",
        parse=parse_secs, metavar="SECONDS")
    dump_fuse: Optional[str] = option(
        None, "dump-fuse",
        "record every FUSE message to PATH (decode: xlfsctl dump-decode PATH)",
        metavar="PATH")
    fuse_mountopts: str = option("", "fuse-mountopts", "extra kernel mount options",
                                 metavar="OPTS", hidden=True)
    auto_invalidation: bool = boolean(
        True, "auto-invalidation",
        "let the kernel drop cached data when mtime changes (default yes)")
    flush_handle_interrupt: bool = boolean(
        False, "fuse-flush-handle-interrupt", "answer an interrupted FLUSH with EINTR at once",
        hidden=True)
    acl: bool = boolean(               # POSIX ACLs (GlusterFS's --acl / -o acl)
        False, "acl",
        "POSIX ACLs, checked by the kernel; a default ACL replaces the umask (default no, "
        "as GlusterFS: ACL xattrs are then refused with EOPNOTSUPP)")
    setlk_handle_interrupt: bool = boolean(
        False, "fuse-setlk-handle-interrupt",
        "withdraw an interrupted blocking lock and answer EINTR (default no)")
    fsname: str = option("xlfs", "fsname", "source name shown in mount tables", hidden=True)
    # Set by the code only (no flag).
    idle_readers: int = option(4)    # parked readers kept per channel; more exit
    default_permissions: bool = option(True)
    allow_other: bool = option(True)
    max_write: int = option(1 << 20)
    subtype: str = option("xlfs")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def dump(self) -> dict[str, Any]:
        """The statedump lines: ``option.FIELD -> value`` for every option."""
        return {d.statedump_key: getattr(self, d.name) for d in declared()}

    def mount_options(self) -> list[str]:
        opts = []
        if self.default_permissions:
            opts.append("default_permissions")
        if self.allow_other:
            opts.append("allow_other")
        opts += [o for o in self.fuse_mountopts.split(",") if o]
        if self.read_only:
            opts.append("ro")            # last: a later "rw" must not undo --read-only
        return opts


def declared() -> tuple[Declared, ...]:
    """Every bridge option, in declaration order."""
    return tuple(Declared(f.name, f.default, f.metadata.get("cli")) for f in fields(BridgeOptions))


def on_command_line() -> tuple[Declared, ...]:
    """The options that have a flag, in --help order."""
    return tuple(d for d in declared() if d.cli is not None)


class OptionValueError(ValueError):
    """A value out of range; str() is one line naming the flag."""


def from_values(values: dict[str, Any]) -> BridgeOptions:
    """BridgeOptions from parsed command-line values (keyed by field name), each checked
    against its declaration."""
    opts = BridgeOptions()
    for d in on_command_line():
        if d.name not in values:
            continue
        value = values[d.name]
        cli = d.cli
        assert cli is not None
        if cli.minimum is not None and value < cli.minimum:
            raise OptionValueError(f"--{cli.flag} must be at least {cli.minimum}")
        setattr(opts, d.name, value)
    return opts
