"""What the daemon does around serving: absolute paths, the brick check, the start-up
log lines, the log reopened on SIGHUP, the pid file (docs/operating.md)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Sequence

from xlators.core.graph import Graph, bricks

from .cli_args import Args

log = logging.getLogger("xlfs")


class Failure(Exception):
    """Ends the program with one line on stderr."""


def absolute_paths(args: Args) -> None:
    """Make every path the daemon keeps absolute: it leaves its starting directory (so it
    blocks no unmount there), and logs and reloads name files unambiguously."""
    for dest in ("log_file", "pid_file", "dump_fuse"):
        if args.get(dest):
            args.values[dest] = os.path.abspath(args.values[dest])
    if os.environ.get("XLFS_DUMP_DIR"):
        os.environ["XLFS_DUMP_DIR"] = os.path.abspath(os.environ["XLFS_DUMP_DIR"])


def check_bricks(graph: Graph, mountpoint: str, resolved: bool = False) -> None:
    """Refuse a mountpoint inside a brick, or a brick inside the mountpoint: the daemon
    would call into its own mount to serve it (a request that waits for itself).
    ``resolved``: the mountpoint is a real path already (once mounted it must not be
    stat-ed: a graph switch passes the path resolved before mounting)."""
    mp = mountpoint if resolved else os.path.realpath(mountpoint)
    for spec in graph.volumes:
        xl = graph.xlators[spec.name]
        for key, path in bricks(xl):
            brick = os.path.realpath(path)
            where = (f"option '{key}' of volume '{spec.name}' ({spec.type}, "
                     f"{graph.where(spec, key)})")
            if mp == brick:
                raise Failure(f"{mountpoint}: the mountpoint is the brick {path} ({where}): "
                              f"the mount would serve itself; mount elsewhere")
            if _inside(mp, brick):
                raise Failure(f"{mountpoint}: the mountpoint is inside the brick {path} "
                              f"({where}): the mount would serve itself and hang; mount "
                              f"outside the brick")
            if _inside(brick, mp):
                raise Failure(f"{mountpoint}: the brick {path} ({where}) is inside the "
                              f"mountpoint: the mount would hide it and serve itself; mount "
                              f"elsewhere")
        for key, path in xl.own_files():
            real = os.path.realpath(path)
            if real == mp or _inside(real, mp):
                raise Failure(f"{path}: option '{key}' of volume '{spec.name}' ({spec.type}, "
                              f"{graph.where(spec, key)}) names a file inside the mountpoint "
                              f"{mountpoint}: writing it would wait for the mount itself; "
                              f"put it outside the mountpoint")


def check_own_files(mountpoint: str, files: Sequence[tuple[str, Optional[str]]]) -> None:
    """Refuse a file or directory the daemon itself uses (``files``: (what, path) pairs:
    the log file, the pid file, the --dump-fuse file, the statedump directory, the
    volfile) inside the mountpoint.  Once mounted, the path names a file of this very
    mount: opening it from the event loop makes a request that only the loop can answer
    (the start hangs for --dump-fuse, SIGHUP for the log file and the volfile, SIGUSR1 for
    the statedump directory), and a file written before the mount is hidden by it (the
    pid file).  Runs before the mount, when resolving these paths is still safe."""
    mp = os.path.realpath(mountpoint)
    for what, path in files:
        if not path:
            continue
        real = os.path.realpath(path)
        if real == mp or _inside(real, mp):
            raise Failure(f"{path}: {what} is inside the mountpoint {mountpoint}: the "
                          f"daemon would use its own mount (and hang, or hide it); put it "
                          f"outside the mountpoint")


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def reopen_log() -> None:
    """SIGHUP: reopen the log file by its name (after logrotate moved it away)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            try:
                stream = open(handler.baseFilename, "a", encoding=handler.encoding)
            except OSError as exc:
                log.error("SIGHUP: cannot reopen the log file %s: %s; still writing to "
                          "the old one", handler.baseFilename, exc.strerror or exc)
                continue
            old = handler.setStream(stream)
            if old is not None:
                old.close()
            log.info("SIGHUP: log file %s reopened", handler.baseFilename)


def log_start(graph: Graph, volfile: str, mountpoint: str, version: str,
              warnings: Sequence[str] = ()) -> None:
    """The start-up lines: version and command line, then the graph as it will run
    (overrides applied, translators the command line added included)."""
    from xlators.core.volfile import format_volfile
    log.info("xlfs %s (pid %d) started: %s", version, os.getpid(),
             " ".join([os.path.basename(sys.argv[0]) or "xlfs"] + sys.argv[1:]))
    lines = format_volfile(graph.volumes).rstrip("\n").splitlines()
    width = len(str(len(lines)))
    log.info("final graph of %s on %s:\n%s", volfile, mountpoint,
             "\n".join(f"{i:>{width}}: {line}" for i, line in enumerate(lines, 1)))
    for line in warnings:
        log.warning("%s", line)


def write_pid(args: Args) -> None:
    path = args.get("pid_file")
    if path:
        try:
            with open(path, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            raise Failure(f"{path}: cannot write the pid file: {exc.strerror or exc}") from None


def remove_pid(args: Args) -> None:
    """At exit: remove the pid file if it still names this process."""
    path = args.get("pid_file")
    if not path:
        return
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass
