"""``xlfs``: mount a volfile.

    xlfs -f volfiles/local.vol /mnt              # daemon; returns once the mount answers
    xlfs -N --debug -f stack.vol /mnt            # foreground, DEBUG log on stderr
    xlfs -N -L TRACE -f stack.vol /mnt           # ... every request and reply logged
    xlfs volfiles/local.vol /mnt -o ro,attribute-timeout=0     # mount helper form

Every failure is one line on stderr and a non-zero exit (2 for a wrong command line, 1 for
anything else).  SIGINT/SIGTERM unmount and exit (a busy mount is detached lazily and
served until its files close; a second signal ends at once), SIGHUP reopens the log file
and reloads the volfile (options reconfigured in place when the topology is the same, a
graph switch when it is not),
SIGUSR1 writes a statedump.  docs/operating.md has the details.
"""
from __future__ import annotations

import copy
import logging
import os
import signal
import sys
from typing import Any, Optional

import trio

from xlators.core.graph import Graph, GraphError, apply_overrides
from xlators.core.registry import PluginError, UnknownTypeError
from xlators.core.volfile import VolfileError, load_volfile

from . import mount as mnt
from . import passthrough, trace_log
from .cli_args import EXIT_FAILURE, EXIT_USAGE, Args, UsageError, help_text, parse_args
from .meta_host import add_meta, attach as attach_meta_host
from .daemon import (Failure, absolute_paths, check_bricks, check_own_files, log_start,
                     remove_pid, reopen_log, write_pid)
from .mount_watch import READ_ONLY_VOLUME, MountWatch, apply_flags
from .notify import Notifier
from .options import BridgeOptions, OptionValueError
from .options import from_values as options_from_values
from .session import Session

log = logging.getLogger("xlfs")
VERSION = "0.1.0"

_LEVELS = {"TRACE": trace_log.TRACE, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL,
           "NONE": logging.CRITICAL + 10}


def bridge_options(args: Args) -> BridgeOptions:
    """The bridge's options from the command line (each declared once, in
    fuse_bridge.options), plus the kernel options of ``-o``."""
    try:
        o = options_from_values(args.values)
    except OptionValueError as exc:
        raise UsageError(str(exc)) from None
    if args.kernel_opts:
        extra = [x for x in args.kernel_opts if x not in ("allow_other", "default_permissions")]
        o.fuse_mountopts = ",".join(filter(None, [o.fuse_mountopts] + extra))
    return o


def resolve(args: Args) -> tuple[str, Optional[str]]:
    """(volfile, mountpoint) from either command-line form."""
    pos = list(args.positionals)
    volfile = args.get("volfile")
    if volfile is None and len(pos) == 2:
        volfile = pos.pop(0)
    if volfile is None:
        raise UsageError("no volfile: use -f VOLFILE MOUNTPOINT or VOLFILE MOUNTPOINT")
    if len(pos) > 1:
        raise UsageError(f"too many arguments: {' '.join(pos)}")
    return volfile, (pos[0] if pos else None)


def build_graph(volfile: str, args: Args) -> Graph:
    try:
        volumes = load_volfile(volfile)
    except FileNotFoundError:
        raise Failure(f"{volfile}: volfile not found") from None
    except OSError as exc:
        raise Failure(f"{volfile}: {exc.strerror}") from None
    except VolfileError as exc:
        raise Failure(str(exc)) from None
    overrides = args.get("xlator_options", [])
    try:
        apply_overrides(copy.deepcopy(volumes), overrides)
    except GraphError as exc:            # malformed, or matching no volume
        raise UsageError(str(exc)) from None
    try:
        return Graph(volumes, overrides=overrides)
    except (GraphError, UnknownTypeError) as exc:
        if str(exc).startswith("--xlator-option"):   # a bad value given on the command line
            raise UsageError(str(exc)) from None
        raise Failure(str(exc)) from None
    except PluginError as exc:
        raise Failure(f"loading the translator plugins failed: {exc}") from None


def log_path(args: Args, mountpoint: str, foreground: bool) -> Optional[str]:
    """The log file the daemon writes (None: stderr)."""
    path = args.get("log_file")
    if args.get("debug") or (foreground and path is None):
        return None
    if path is None:
        base = "/var/log/xlfs" if os.geteuid() == 0 else os.path.expanduser(
            "~/.local/state/xlfs")
        name = os.path.abspath(mountpoint).strip("/").replace("/", "-") or "root"
        path = os.path.join(base, name + ".log")
    return path


def setup_logging(args: Args, mountpoint: str, foreground: bool) -> None:
    level = "DEBUG" if args.get("debug") else args.get("log_level", "INFO")
    path = log_path(args, mountpoint, foreground)
    if path is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        if args.get("log_file") is None:         # the default one's directory
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            handler = logging.FileHandler(path)
        except OSError as exc:
            raise Failure(f"{path}: cannot open the log file: "
                          f"{exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s.%(msecs)03d] %(levelname).1s [%(name)s] %(message)s",
        "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])


async def serve(graph: Graph, opts: BridgeOptions, mountpoint: str, volfile: str,
                args: Args, ready: Any = None) -> None:
    """Mount, serve until unmounted or signalled, unmount."""
    resolved = os.path.realpath(mountpoint)     # never stat-ed again once mounted
    # The source is the volfile as the command line (or fstab's first field) names it:
    # mount -a compares the two to know that a line is already mounted.
    source = args.get("mount_source", volfile)
    fd = mnt.mount(mountpoint, opts.fsname if opts.fsname != "xlfs" else source,
                   opts.subtype, opts.mount_options())
    guard = mnt.start_unmount_guard(mountpoint)
    session = Session(graph, fd, opts, mountpoint)
    attach_meta_host(session, version=VERSION, levels=_LEVELS, state=_bridge_state)
    session.notifier = Notifier(fd, opts.invalidate_limit, session=session)
    watch = session.mount_watch = MountWatch(
        resolved, lambda old, new: apply_flags(session, old, new))
    watch.start()
    watch.install(session)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                       signal.SIGUSR1) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run)
                if opts.reader_thread_count > 1:
                    session.clone_channels(opts.reader_thread_count)
                nursery.start_soon(_signals, signals, session, graph, volfile, args)
                if ready is not None:
                    nursery.start_soon(_report_ready, session, ready)
                await session.ended.wait()
                nursery.cancel_scope.cancel()
        pt = session.client.passthrough
        if pt is not None and pt.failure:
            raise Failure(pt.failure)
    finally:
        if (mnt.find_mount(resolved, resolved=True) is not None   # never stat our mount
                and session.end_reason != "aborted"):
            try:
                mnt.unmount(mountpoint, lazy=True)
            except OSError:
                pass
        mnt.stop_unmount_guard(guard)
        watch.close()
        os.close(fd)


async def _report_ready(session: Session, ready: Any) -> None:
    with trio.move_on_after(30):
        await session.init_done.wait()
    ready(session.init_done.is_set())


async def _signals(signals: Any, session: Session, graph: Graph, volfile: str,
                   args: Args) -> None:
    stopping = False
    async for signum in signals:
        if signum in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(signum).name
            if stopping:
                log.warning("%s again: aborting the connection", name)
                watch = session.mount_watch     # its path is resolved: no stat of our mount
                entry = (mnt.find_mount(watch.mountpoint, resolved=True)
                         if watch is not None else None)
                conn = entry["minor"] if entry and entry["fstype"].startswith("fuse") \
                    else None
                if conn is not None:
                    mnt.abort_connection(conn)
                session.end("aborted")
                return
            stopping = True
            log.info("%s: unmounting %s", name, session.mountpoint)
            try:
                await trio.to_thread.run_sync(mnt.unmount, session.mountpoint)
            except OSError as exc:
                log.warning("unmount: %s; detaching lazily, serving open files until "
                            "they close", exc)
                try:
                    mnt.unmount(session.mountpoint, lazy=True)
                except OSError as exc2:
                    log.error("lazy unmount failed: %s", exc2)
                    session.end("signal")
        elif signum == signal.SIGHUP:
            from .graph_switch import reload
            await trio.to_thread.run_sync(reopen_log)   # off the loop: opens a file
            await reload(session, volfile, args.get("xlator_options", []))
        elif signum == signal.SIGUSR1:
            from xlators.core.statedump import format_statedump, write_statedump_text
            try:    # formatted on the loop (it reads the graph), written off it
                await session.client.apply_forgets()    # exact inode counts
                text = format_statedump(session.graph, extra={"fuse": _bridge_state(session)})
                path = await trio.to_thread.run_sync(write_statedump_text, text)
                log.info("statedump written to %s", path)
            except OSError as exc:
                log.error("statedump failed: %s", exc)


def _bridge_state(session: Session) -> dict:
    state = session.opts.dump()
    flags = session.mount_watch.current() if session.mount_watch is not None else None
    if flags is not None:
        state["mount-flags"] = flags.words()
    state.update(session.dump_state())
    return state


def run(args: Args) -> int:
    if args.get("help"):
        print(help_text(args.get("prog", "xlfs")))
        return 0
    if args.get("version"):
        print(f"xlfs {VERSION}")
        return 0
    if args.get("remount"):
        return _remount(args)
    volfile, mountpoint = resolve(args)
    args.values.setdefault("mount_source", volfile)   # as given: fstab's first field
    volfile = os.path.abspath(volfile)
    if mountpoint is not None:
        mountpoint = os.path.abspath(mountpoint)
    absolute_paths(args)
    opts = bridge_options(args)
    graph = build_graph(volfile, args)
    if opts.read_only:
        graph = _read_only(graph)
    graph = add_meta(graph)              # .meta at the root (fuse_bridge.meta_host)
    warnings = graph.warnings(args.get("xlator_options", []))
    for line in warnings:
        print(f"{args.get('prog', 'xlfs')}: {line}", file=sys.stderr)
    try:
        passthrough.graph_check(opts.fuse_passthrough, graph)
    except passthrough.PassthroughUnavailable as exc:
        raise Failure(str(exc)) from None
    if args.get("volfile_check"):
        print(f"{args.get('mount_source')}: ok")
        return 0
    if mountpoint is None:
        raise UsageError("no mountpoint given")
    try:
        mnt.check_mountpoint(mountpoint)
    except mnt.MountError as exc:
        raise Failure(str(exc)) from None
    check_bricks(graph, mountpoint)
    foreground = bool(args.get("no_daemon") or args.get("debug"))
    from xlators.core.statedump import dump_directory
    check_own_files(mountpoint, [
        ("the log file (-l)", log_path(args, mountpoint, foreground)),
        ("the pid file (-p)", args.get("pid_file")),
        ("the --dump-fuse file", args.get("dump_fuse")),
        ("the statedump directory", dump_directory()),
        ("the volfile", volfile)])
    args.values["graph_warnings"] = warnings       # logged with the start-up lines
    os.chdir("/")        # every path is absolute now; keep no directory busy
    if foreground:
        setup_logging(args, mountpoint, True)
        write_pid(args)
        return _run_mounted(graph, opts, mountpoint, volfile, args, None)
    return _daemonize(graph, opts, mountpoint, volfile, args)


def _remount(args: Args) -> int:
    """``-o remount,...`` (``mount -o remount,ro MNT`` through mount.xlfs or mount.fuse3):
    change the live mount's VFS flags; no second daemon.  The daemon notices by itself
    (fuse_bridge.mount_watch)."""
    pos = args.positionals
    if not 1 <= len(pos) <= 2:
        raise UsageError("remount: give the mountpoint: xlfs [VOLFILE] MOUNTPOINT "
                         "-o remount,OPTIONS")
    if args.get("volfile_check"):           # mount -f: nothing to try
        return 0
    try:
        mnt.remount(pos[-1], args.kernel_opts)
    except mnt.MountError as exc:
        raise Failure(str(exc)) from None
    return 0


def _read_only(graph: Graph) -> Graph:
    """--read-only: put features/read-only on top of the graph."""
    from xlators.core.volfile import VolumeSpec
    volumes = list(graph.volumes) + [VolumeSpec(READ_ONLY_VOLUME, "features/read-only", {},
                                                [graph.volumes[-1].name])]
    ro = Graph(volumes)
    ro.added_volumes = (READ_ONLY_VOLUME,)    # not in the volfile: SIGHUP ignores it
    return ro


def _run_mounted(graph: Graph, opts: BridgeOptions, mountpoint: str, volfile: str,
                 args: Args, ready: Any) -> int:
    try:
        graph.init()
    except GraphError as exc:
        remove_pid(args)
        raise Failure(str(exc)) from None
    try:
        log_start(graph, volfile, mountpoint, VERSION, args.get("graph_warnings", ()))
        graph.activate()
        trio.run(serve, graph, opts, mountpoint, volfile, args, ready)
    except mnt.MountError as exc:
        raise Failure(str(exc)) from None
    finally:
        graph.fini()
        remove_pid(args)
    return 0


def _daemonize(graph: Graph, opts: BridgeOptions, mountpoint: str, volfile: str,
               args: Args) -> int:
    """Fork; the parent returns once the child's mount answers (or reports why not)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as status:
            msg = status.read()
        if msg == b"ok":
            return 0
        os.waitpid(pid, 0)
        raise Failure(msg.decode(errors="replace").strip() or "the daemon died at start")
    os.close(r)
    os.setsid()
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(devnull, fd)
        setup_logging(args, mountpoint, False)
        os.dup2(devnull, 2)
        write_pid(args)

        def ready(ok: bool) -> None:
            os.write(w, b"ok" if ok else b"the kernel never sent INIT")
            os.close(w)

        code = _run_mounted(graph, opts, mountpoint, volfile, args, ready)
    except (Failure, UsageError) as exc:
        _try_write(w, str(exc))
    except BaseException as exc:  # the parent must hear something (it adds "xlfs: ")
        log.exception("daemon failed")
        _try_write(w, f"the daemon failed: {type(exc).__name__}: {exc}")
    finally:
        os._exit(code)


def _try_write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
        os.close(fd)
    except OSError:
        pass


def main(argv: Optional[list[str]] = None, prog: str = "xlfs") -> int:
    """Exit status (cli_args.EXIT_STATUS_TEXT): 0, 1 a failure, 2 a wrong command line."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        args.values["prog"] = prog
        return run(args)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:      # e.g. `xlfs --help | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
