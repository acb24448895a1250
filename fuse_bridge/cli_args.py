"""The glusterfs-like command line: one table of flags (the daemon's own, then one per bridge
option declared in fuse_bridge.options), argp's rules.

- ``--name=VALUE`` always works; ``--name VALUE`` only for flags whose value is required.
- A flag with an optional value (``--use-readdirp[=BOOL]``) takes a value only with ``=``:
  a bare flag means yes and never swallows the next word (the mountpoint).
- Short flags: ``-N``, ``-f FILE`` / ``-fFILE``, ``-l FILE``, ``-L LEVEL``, ``-p FILE``,
  ``-o OPTS`` (the mount-helper form).
- Two forms: ``xlfs [OPTIONS] MOUNTPOINT`` (with ``-f``), and the helper form used by
  ``mount -t fuse.xlfs`` and fstab: ``xlfs VOLFILE MOUNTPOINT [-o opt,...]``.
- Booleans accept yes/no, on/off, true/false, enable/disable, 1/0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from xlators.core.options import parse_bool

from .mount import FUSE_SUPER_OPTS, VfsFlags
from .options import Declared, on_command_line

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NONE")


class UsageError(Exception):
    """A wrong command line; str() is one line for the user."""


def _level(text: str) -> str:
    t = text.upper()
    if t not in LOG_LEVELS:
        raise ValueError(f"not a log level ({', '.join(LOG_LEVELS)})")
    return t


@dataclass(frozen=True)
class Flag:
    long: str
    dest: str
    kind: str                     # "bool?" optional bool, "value" required, "none" no value
    parse: Callable[[str], Any] = str
    short: str = ""
    hidden: bool = False
    help: str = ""
    metavar: str = "VALUE"
    repeat: bool = False


#: The flags of the daemon itself (logging, the volfile, ...), listed first by --help.
DAEMON_FLAGS: tuple[Flag, ...] = (
    Flag("volfile", "volfile", "value", short="f", metavar="FILE",
         help="the volfile (GlusterFS grammar, or TOML when it ends in .toml)"),
    Flag("log-file", "log_file", "value", short="l", metavar="FILE",
         help="log to FILE (default: /var/log/xlfs/<mountpoint>.log, stderr with -N)"),
    Flag("log-level", "log_level", "value", _level, short="L", metavar="LEVEL",
         help="TRACE DEBUG INFO WARNING ERROR CRITICAL NONE (default INFO)"),
    Flag("no-daemon", "no_daemon", "none", short="N", help="stay in the foreground"),
    Flag("debug", "debug", "none", help="= -N, log level DEBUG, log to stderr"),
    Flag("pid-file", "pid_file", "value", short="p", metavar="FILE",
         help="write the daemon's pid to FILE"),
    Flag("xlator-option", "xlator_options", "value", metavar="VOL.KEY=VALUE", repeat=True,
         help="set a translator option (VOL may be a glob); repeatable"),
    Flag("volfile-check", "volfile_check", "bool?", parse_bool,
         help="validate the volfile and exit"),
)
#: Listed last by --help.
INFO_FLAGS: tuple[Flag, ...] = (
    Flag("help", "help", "none", short="h", help="show this help"),
    Flag("version", "version", "none", short="V", help="show the version"),
)


def bridge_flag(d: Declared) -> Flag:
    """The flag of a bridge option (fuse_bridge.options): its value goes to the
    BridgeOptions field of the same name."""
    cli = d.cli
    assert cli is not None, d.name
    return Flag(cli.flag, d.name, cli.kind, cli.parse, hidden=cli.hidden, help=cli.help,
                metavar=cli.metavar)


#: Every flag: the daemon's, then one per bridge option declared with a flag.
FLAGS: tuple[Flag, ...] = (DAEMON_FLAGS + tuple(bridge_flag(d) for d in on_command_line())
                           + INFO_FLAGS)
_BY_LONG = {f.long: f for f in FLAGS}
_BY_SHORT = {f.short: f for f in FLAGS if f.short}

# mount -o words that carry no meaning for us (mount.glusterfs / mount.fuse3 rules).
IGNORED_MOUNT_OPTS = {"defaults", "_netdev", "auto", "noauto", "user", "nouser", "users",
                      "nofail", "rw"}
# Generic options passed to the kernel (every VFS flag mount(8) knows, atime ones included).
KERNEL_MOUNT_OPTS = (VfsFlags.WORDS - {"rw"}) | {"allow_other", "default_permissions"}


@dataclass
class Args:
    values: dict[str, Any] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)
    kernel_opts: list[str] = field(default_factory=list)

    def get(self, dest: str, default: Any = None) -> Any:
        return self.values.get(dest, default)


def _set(args: Args, flag: Flag, text: Optional[str], origin: str) -> None:
    if text is None:
        value: Any = True
    else:
        try:
            value = flag.parse(text)
        except ValueError as exc:
            raise UsageError(f"{origin}: invalid value '{text}': {exc}") from None
    if flag.repeat:
        args.values.setdefault(flag.dest, []).append(value)
    else:
        args.values[flag.dest] = value


def _is_option_word(word: str) -> bool:
    """Whether ``word`` of a ``-o`` list stands for an option by itself."""
    key = word.partition("=")[0]
    return (not word or word in IGNORED_MOUNT_OPTS or word.startswith("x-")
            or word in KERNEL_MOUNT_OPTS or word in VfsFlags.WORDS or word == "remount"
            or key in FUSE_SUPER_OPTS or key.replace("_", "-") in _BY_LONG)


def split_mount_options(text: str) -> list[str]:
    """Split a ``-o`` list at commas, as mount(8) does, keeping the commas that belong to
    a value: inside double quotes (``xlator-option="io.include-ops=read,write"``, quotes
    removed), and, for ``xlator-option=``, every following word that is no option itself
    (``xlator-option=io.include-ops=read,write``)."""
    raw: list[str] = []
    word, quoted = "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            raw.append(word)
            word = ""
        else:
            word += ch
    if quoted:
        raise UsageError(f"-o {text}: unbalanced double quote")
    raw.append(word)
    words: list[str] = []
    for w in (x.strip() for x in raw):
        if (words and words[-1].replace("_", "-").startswith("xlator-option=")
                and not _is_option_word(w)):
            words[-1] += "," + w
        else:
            words.append(w)
    return words


def apply_mount_options(args: Args, text: str) -> None:
    """``-o a,b=c``: long flags by name (dashes or underscores), kernel options through.
    With ``remount`` among them, only the VFS flags count (see _remount_word)."""
    words = split_mount_options(text)
    if "remount" in words:
        args.values["remount"] = True
    for word in words:
        if args.values.get("remount"):
            _remount_word(args, word)
            continue
        if not word or word in IGNORED_MOUNT_OPTS or word.startswith("x-"):
            continue
        if word in KERNEL_MOUNT_OPTS:
            args.kernel_opts.append(word)
            if word == "ro":
                args.values["read_only"] = True
            continue
        key, eq, value = word.partition("=")
        flag = _BY_LONG.get(key.replace("_", "-"))
        if flag is None or flag.long in ("help", "version"):
            raise UsageError(f"-o {word}: Invalid option '{key}'")
        if flag.kind == "none":
            if eq:
                raise UsageError(f"-o {word}: '{key}' takes no value")
            _set(args, flag, None, f"-o {key}")
        elif flag.kind == "value" and not eq:
            raise UsageError(f"-o {word}: '{key}' needs a value ({key}=...)")
        else:
            _set(args, flag, value if eq else None, f"-o {key}")


def _remount_word(args: Args, word: str) -> None:
    """A remount changes the kernel's VFS flags of the live mount, nothing else: mount(8)
    repeats the mount's other options (from fstab and mountinfo), which are accepted and
    left as they are (the bridge's options are fixed for the life of the mount)."""
    if word in VfsFlags.WORDS:
        args.kernel_opts.append(word)
        return
    key = word.partition("=")[0]
    if (not word or word == "remount" or word in IGNORED_MOUNT_OPTS or word.startswith("x-")
            or key in FUSE_SUPER_OPTS):
        return
    flag = _BY_LONG.get(key.replace("_", "-"))
    if flag is None or flag.long in ("help", "version"):
        raise UsageError(f"-o {word}: Invalid option '{key}'")


def parse_args(argv: list[str]) -> Args:
    args = Args()
    i = 0
    only_positionals = False
    while i < len(argv):
        word = argv[i]
        i += 1
        if only_positionals or word == "-" or not word.startswith("-"):
            args.positionals.append(word)
            continue
        if word == "--":
            only_positionals = True
            continue
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            flag = _BY_LONG.get(name)
            if flag is None:
                raise UsageError(f"unrecognized option '--{name}' (see xlfs --help)")
            origin = f"--{name}"
            if flag.kind == "none":
                if eq:
                    raise UsageError(f"option '--{name}' doesn't allow an argument")
                _set(args, flag, None, origin)
            elif flag.kind == "bool?":
                _set(args, flag, value if eq else None, origin)
            else:
                if not eq:
                    if i >= len(argv):
                        raise UsageError(f"option '--{name}' requires an argument")
                    value = argv[i]
                    i += 1
                _set(args, flag, value, origin)
            continue
        # short options, possibly bundled (-Nf FILE)
        j = 1
        while j < len(word):
            ch = word[j]
            j += 1
            if ch == "o":
                text = word[j:] or (argv[i] if i < len(argv) else None)
                if text is None:
                    raise UsageError("option '-o' requires an argument")
                if not word[j:]:
                    i += 1
                apply_mount_options(args, text)
                break
            flag = _BY_SHORT.get(ch)
            if flag is None:
                raise UsageError(f"invalid option -- '{ch}' (see xlfs --help)")
            if flag.kind == "none":
                _set(args, flag, None, f"-{ch}")
                continue
            text = word[j:]
            if not text:
                if i >= len(argv):
                    raise UsageError(f"option '-{ch}' requires an argument")
                text = argv[i]
                i += 1
            _set(args, flag, text, f"-{ch}")
            break
    return args


EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_STATUS_TEXT = ("Exit status: 0 mounted (or checked); 1 the volfile, a plugin, the "
                    "mount or the daemon failed; 2 the command line is wrong (unknown flag "
                    "or -o option, bad value, --xlator-option that matches no volume).")


def help_text(prog: str = "xlfs") -> str:
    if prog == "xlfs":
        lines = ["Usage: xlfs [OPTIONS] -f VOLFILE MOUNTPOINT",
                 "       xlfs VOLFILE MOUNTPOINT [-o OPTION[,OPTION...]]", "",
                 "Mount a translator stack described by a volfile.", ""]
    else:
        lines = [f"Usage: {prog} VOLFILE MOUNTPOINT [-sfnv] [-o OPTION[,OPTION...]]",
                 "       mount -t xlfs VOLFILE MOUNTPOINT [-o OPTION[,OPTION...]]", "",
                 "Mount a translator stack described by a volfile (run by mount(8) for "
                 "fstab lines of type xlfs).",
                 "Every flag below is also an -o option: -o log-file=FILE,attribute-timeout=0."
                 " -f only checks the volfile.", ""]
    for f in FLAGS:
        if f.hidden:
            continue
        short = f"-{f.short}, " if f.short else "    "
        if f.kind == "value":
            name = f"--{f.long}={f.metavar}"
        elif f.kind == "bool?":
            name = f"--{f.long}[=BOOL]"
        else:
            name = f"--{f.long}"
        lines.append(f"  {short}{name:<38} {f.help}")
    lines += ["", "  -o OPTS   mount-helper form: long flags as key=value, plus kernel options "
              "(ro, noatime, ...)",
              "  -o remount,OPTS   change the kernel options of the live mount on MOUNTPOINT "
              "(same daemon)", "",
              "  -o xlator-option=VOL.KEY=A,B   a value with commas: what follows up to the "
              "next option is part of it (or quote it: xlator-option=\"VOL.KEY=A,B\")", "",
              "Signals: SIGINT/SIGTERM unmount and exit, SIGHUP reloads the volfile and "
              "reopens the log, SIGUSR1 writes a statedump.", EXIT_STATUS_TEXT]
    return "\n".join(lines)
