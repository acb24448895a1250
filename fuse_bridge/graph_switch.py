"""SIGHUP with a volfile of a new topology: switch the live mount to a new graph.

    kill -HUP $(cat /run/xlfs.pid)       # after editing the volfile

:func:`reload` is SIGHUP's entry point: an unchanged file does nothing, the same topology
is reconfigured in place (fuse_bridge.reload), a new one is switched to here:

1. *Build beside.*  The new graph is built from the file (``--xlator-option`` applied),
   with the volumes the command line added (``--read-only``'s translator) on top in the
   state they run in now, and checked as at start (bricks against the mountpoint, FUSE
   passthrough, what the kernel negotiated at mount: lock handling, ACLs).  ``init()``,
   PARENT_UP, then CHILD_UP is awaited (``UP_TIMEOUT``).  Its background tasks run in a
   nursery of its own, so they end with it.
2. *Quiesce.*  The readers stop taking requests from the kernel (``Session.switching``)
   and the requests in flight finish on the running graph (``DRAIN_TIMEOUT``).  No
   request ever runs on two graphs, and nothing changes the tables meanwhile.
3. *Locks.*  Granted or waiting POSIX/flock locks refuse the switch (see below).
4. *Drain, migrate, reopen.*  Acknowledged but unwritten data of the running graph lands
   (``Graph.drain``: write-behind); every nodeid the kernel holds is found again on the
   new graph and every open file and directory reopened there
   (xlators.core.graph_migration; what cannot be is logged and answers ESTALE/EBADF).
5. *Commit.*  In one step (no await): the session's graph, top translator, inode table,
   open handles and name records are the new graph's.  The readers resume; every
   request from now on runs on the new graph.
6. *Retire.*  The old graph's handles are released, its background tasks cancelled,
   ``fini()`` runs and it is dismantled: nothing references it (GlusterFS never frees
   an old graph).

Any failure before the commit (a bad volfile, an init error, a child never up, requests
that do not finish, locks held) leaves the running graph serving, untouched, and one log
line says why; the new graph is finished and freed.

FLUSH: opens are answered with FOPEN_NOFLUSH while no translator of the graph needs
FLUSH (``Graph.needs_flush``); the kernel keeps that answer for the life of the open
file, and the bridge records it with the handle (``Fd.noflush``, carried to the new
graph).  After a switch to a graph that needs FLUSH (or a reconfigure in place that
makes a translator need it: ``FuseClient.decide_flush``), new opens get FLUSH at every
close, and each file opened with NOFLUSH gets one flush at its RELEASE
(``FuseClient.flush_at_release``; the statedump's ``flush-at-release`` counts them):
their translators that need it see one flush per open file instead of one per close(2),
after the last close returned, so an error it reports reaches no caller.  The reverse
needs nothing: a flush the graph does not need passes through it.

Locks: a switch is refused while any lock is granted or waited for, rather than
re-acquiring them on the new graph.  Moving a lock is not atomic (between its release on
one graph and its grant on the other another owner may take it), a waiting SETLKW cannot
move at all, and for storages that hold locks in the bricks (storage/gfapi) the old
graph's own locks would conflict with their re-acquisition.  The log line names the
translators that hold them; release them (or wait) and send SIGHUP again.
"""
from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import trio

from xlators.core.events import Event
from xlators.core.graph import Graph, GraphError
from xlators.core.graph_migration import (locks_held, migrate_inodes, release_fds,
                                          reopen_fds)
from xlators.core.registry import PluginError, Registry, UnknownTypeError
from xlators.core.upcall import InvalidateEntry
from xlators.core.volfile import VolumeSpec, format_volfile

from . import abi, reload as reloading

log = logging.getLogger("xlfs.reload")

UP_TIMEOUT = 10.0       # seconds for the new graph's CHILD_UP
DRAIN_TIMEOUT = 5.0     # seconds for the requests in flight to finish
MOVE_TIMEOUT = 120.0    # seconds for draining, finding inodes again and reopening files


class SwitchRefused(Exception):
    """The switch cannot happen; str() says why (one line)."""


class _Host:
    """The nursery a graph's background tasks (``Translator.spawn``) run in, a task of
    the session's nursery: cancelled when the graph retires.  When the session ends it
    finishes the graph it hosts (fini is idempotent)."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self, graph: Graph, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                try:
                    async with trio.open_nursery() as nursery:
                        graph.nursery = nursery
                        task_status.started()
                        await trio.sleep_forever()
                except Exception:      # noqa: BLE001 - a graph's task must not end the mount
                    log.exception("a background task of the graph failed")
        finally:
            graph.nursery = None
            graph.fini()
            self.done.set()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.done.wait()


_HOSTS: "weakref.WeakKeyDictionary[Graph, _Host]" = weakref.WeakKeyDictionary()


async def reload(session: Any, path: str, overrides: Sequence[str] = ()) -> str:
    """SIGHUP: apply ``path`` to the live mount.  Returns what happened: "unchanged",
    "reconfigured", "switched" or "failed" (each logged)."""
    # Read from a worker thread: the volfile may be slow, or (a symlink) inside this
    # mount, whose requests the event loop must stay free to serve.
    plan = await trio.to_thread.run_sync(reloading.plan_reload, session.graph, path,
                                         overrides)
    if plan.kind == reloading.UNCHANGED:
        log.info("SIGHUP: %s unchanged; nothing to do", path)
        return "unchanged"
    if plan.kind == reloading.FAILED:
        log.error("SIGHUP: %s; the running graph serves on", plan.error)
        return "failed"
    if plan.kind == reloading.RECONFIGURE:
        why = reloading.reconfigure_in_place(session.graph, plan)
        # Even a failed reconfigure may have changed a translator's needs_flush.
        _flush_reconsidered(session.client)
        if why:
            log.error("SIGHUP: %s", why)
            return "failed"
        log.info("SIGHUP: %s reconfigured in place", path)
        return "reconfigured"
    ok = await switch_graph(session, plan.volumes, source=path, digest=plan.digest)
    return "switched" if ok else "failed"


async def switch_graph(session: Any, volumes: Sequence[VolumeSpec], *, source: str = "",
                       digest: str = "", registry: Optional[Registry] = None,
                       up_timeout: float = UP_TIMEOUT,
                       drain_timeout: float = DRAIN_TIMEOUT,
                       move_timeout: float = MOVE_TIMEOUT) -> bool:
    """Replace ``session``'s graph with one built from ``volumes`` (the module docstring);
    True when the mount now runs on it."""
    old = session.graph
    where = source or "the new volfile"
    try:
        held = locks_held(old)
        if held:
            raise SwitchRefused(_locks_text(held))
        new = _build(session, volumes, registry)
        await _check_bricks(session, new)
    except SwitchRefused as exc:
        log.error("SIGHUP: graph switch to %s refused: %s; the running graph serves on",
                  where, exc)
        return False
    try:
        new.init()
    except GraphError as exc:
        log.error("SIGHUP: graph switch to %s failed: %s; the running graph serves on",
                  where, exc)
        new.dismantle()
        return False
    host = _Host()
    await session.nursery.start(host.run, new)
    _HOSTS[new] = host
    committed = False
    try:
        new.activate()
        await _wait_up(new, up_timeout)
        migration, failed, old_fds, held_ms = await _move(session, old, new, drain_timeout,
                                                          move_timeout)
        committed = True
    except SwitchRefused as exc:
        log.error("SIGHUP: graph switch to %s refused: %s; the running graph serves on",
                  where, exc)
        return False
    except Exception:          # noqa: BLE001 - a bug: the running graph must serve on
        log.exception("SIGHUP: graph switch to %s failed; the running graph serves on",
                      where)
        return False
    finally:
        if not committed:
            _HOSTS.pop(new, None)
            await host.stop()
            new.dismantle()
    new.volfile_digest = digest
    reopened = len(old_fds) - len(failed)
    try:
        await _retire(old, old_fds)
    except Exception:          # noqa: BLE001 - the new graph serves already
        log.exception("SIGHUP: retiring the old graph failed")
    del old
    lines = format_volfile(new.volumes).rstrip("\n").splitlines()
    width = len(str(len(lines)))
    pending = session.client.flush_at_release()
    if pending:
        log.info("SIGHUP: the new graph needs FLUSH; %d files opened without it get one at "
                 "their release", pending)
    log.info("SIGHUP: graph switched to %s: %s; %d open files and directories reopened%s; "
             "requests held %.0f ms; the old graph drained, finished and freed; the graph "
             "now:\n%s", where, migration.summary(), reopened,
             f" ({len(failed)} could not be: they answer EBADF)" if failed else "", held_ms,
             "\n".join(f"{i:>{width}}: {line}" for i, line in enumerate(lines, 1)))
    return True


def _flush_reconsidered(client: Any) -> None:
    """After a reconfigure in place: FOPEN_NOFLUSH for the opens from now on as the
    translators' options now say (``FuseClient.decide_flush``); a change is logged."""
    was = client.fopen_noflush
    client.decide_flush()
    if client.fopen_noflush and not was:
        log.info("SIGHUP: no translator needs FLUSH any more; files opened from now on "
                 "get none at close")
    elif was and not client.fopen_noflush:
        log.info("SIGHUP: FLUSH is needed now (%s); files opened from now on get it at "
                 "every close, the %d open already get one at their release",
                 "; ".join(client.graph.flush_needed_by(locks=client.handles_locks)),
                 client.flush_at_release())


# -- 1. build beside -------------------------------------------------------------------
def _build(session: Any, volumes: Sequence[VolumeSpec], registry: Optional[Registry]
           ) -> Graph:
    running = session.graph
    specs = [VolumeSpec(v.name, v.type, dict(v.options), list(v.subvolumes), v.line,
                        dict(v.option_lines), v.filename) for v in volumes]
    added = tuple(getattr(running, "added_volumes", ()))
    for name in added:               # --read-only's translator, as it runs now
        spec = next(v for v in running.volumes if v.name == name)
        specs.append(VolumeSpec(name, spec.type, dict(running.xlators[name].given_options),
                                [specs[-1].name], spec.line, {}, spec.filename))
    try:
        new = Graph(specs, registry=registry)
    except (GraphError, UnknownTypeError, ValueError) as exc:
        raise SwitchRefused(str(exc)) from None
    except PluginError as exc:
        raise SwitchRefused(f"loading the translator plugins failed: {exc}") from None
    new.added_volumes = added
    new.itable.share_numbering(running.itable)
    for line in new.warnings():
        log.warning("SIGHUP: %s", line)
    problems = _compatibility(session, new)
    if problems:
        raise SwitchRefused("; ".join(problems))
    return new


async def _check_bricks(session: Any, new: Graph) -> None:
    """daemon.check_bricks for the new graph, in a worker thread: resolving a brick path
    that lies inside the mount (the very mistake it looks for) makes requests to this
    mount, which the event loop must stay free to serve."""
    from .daemon import Failure, check_bricks
    watch = session.mount_watch
    mountpoint = watch.mountpoint if watch is not None else session.mountpoint
    if not mountpoint:
        return
    try:
        await trio.to_thread.run_sync(check_bricks, new, mountpoint, watch is not None)
    except Failure as exc:
        raise SwitchRefused(str(exc)) from None


def _compatibility(session: Any, new: Graph) -> list[str]:
    """What the new graph cannot do that this mount relies on (checked as at start, or
    negotiated with the kernel at INIT and fixed until unmount)."""
    from .ops import _flag_names, _storage_flags
    from .passthrough import PassthroughUnavailable, graph_check
    problems = []
    try:
        graph_check(session.opts.fuse_passthrough, new.top)
    except PassthroughUnavailable as exc:
        problems.append(str(exc))
    pt = session.client.passthrough
    if pt is not None and pt.enabled and pt.dump().get("open_backings"):
        blocker = new.top.passthrough_blocker()
        if blocker:
            problems.append(f"open files bypass the graph through FUSE passthrough and the "
                            f"new graph must see their data ({blocker})")
    handles = new.handles_locks()
    if session.client.handles_locks and not handles:
        problems.append("the kernel sends POSIX and flock locks to the graph (negotiated at "
                        "mount) and no translator of the new graph handles locks")
    elif handles and not session.client.handles_locks:
        log.warning("SIGHUP: the new graph handles locks, but this mount left them to the "
                    "kernel at mount time: they stay with the kernel until a remount")
    wanted = session.client.flags & (abi.InitFlag.POSIX_ACL | abi.InitFlag.HANDLE_KILLPRIV_V2)
    missing = wanted & ~_storage_flags(SimpleNamespace(graph=new, opts=session.opts))
    if missing:
        problems.append(f"the mount negotiated {_flag_names(missing)} with the kernel and "
                        f"the new graph's storages cannot provide it")
    return problems


async def _wait_up(new: Graph, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while new.state is not Event.CHILD_UP:
            await trio.sleep(0.01)
        return
    state = new.state.value if new.state is not None else "no event"
    raise SwitchRefused(f"the new graph was not up within {timeout:g} s (top volume "
                        f"'{new.top.name}': {state})")


# -- 2-5. quiesce, check locks, drain, migrate, commit ------------------------------------
async def _move(session: Any, old: Graph, new: Graph, drain_timeout: float,
                move_timeout: float):
    gate = session.switching = trio.Event()
    start = trio.current_time()
    try:
        await _drain_requests(session, drain_timeout)
        await session.client.apply_forgets()    # the kernel's exact references
        held = locks_held(old)
        if held:
            raise SwitchRefused(_locks_text(held))
        nodeids = {i.nodeid for i in old.itable if i.nlookup > 0}
        nodeids.update(fd.inode.nodeid for fd in session.client.fds.values())
        with trio.move_on_after(move_timeout):      # a hung brick must not hang the mount
            await old.drain()
            names = {n: (parent.nodeid, name)
                     for n, (parent, name) in session.client.lru.items()}
            migration = await migrate_inodes(old, new, nodeids, names)
            old_fds = dict(session.client.fds)
            new_fds, failed = await reopen_fds(old_fds, new)
            _commit(session, old, new, new_fds, names, migration)
        if session.graph is not new:
            raise SwitchRefused(f"draining the old graph, finding {len(nodeids)} inodes and "
                                f"reopening {len(session.client.fds)} files on the new one took "
                                f"more than {move_timeout:g} s")
    finally:
        session.switching = None
        gate.set()
    return migration, failed, old_fds, (trio.current_time() - start) * 1000


async def _drain_requests(session: Any, timeout: float) -> None:
    pending = session.interrupts.pending
    with trio.move_on_after(timeout):
        while pending:
            await trio.sleep(0.005)
        return
    busy = ", ".join(f"{abi.opcode_name(r.opcode)} unique {r.unique} pid "
                     f"{r.frame.pid if r.frame is not None else 0}"
                     for r in list(pending.values())[:5])
    raise SwitchRefused(f"{len(pending)} request(s) still in flight after {timeout:g} s "
                        f"({busy})")


def _commit(session: Any, old: Graph, new: Graph, fds: dict, names: dict,
            migration: Any) -> None:
    """The switch itself: no await from the first line to the last."""
    from .client import effective_lru_limit
    client = session.client
    new.listeners.extend(old.listeners)
    old.listeners.clear()
    session.set_graph(new)
    client.fds.clear()
    client.fds.update(fds)
    moved = migration.moved
    lru = OrderedDict()
    for n, (parent_id, name) in names.items():
        parent = new.itable.root if parent_id == 1 else moved.get(parent_id)
        if n in moved and parent is not None:
            lru[n] = (parent, name)
        elif parent is not None and session.notifier is not None:
            session.notifier.send(InvalidateEntry(parent, name))   # look the name up again
    client.lru.clear()
    client.lru.update(lru)
    leaves = sum(1 for xl in new.xlators.values() if not xl.children)
    client.lru_limit = effective_lru_limit(session.opts.lru_limit, leaves)


# -- 6. retire ------------------------------------------------------------------------
async def _retire(old: Graph, fds: dict) -> None:
    """Release the old graph's handles (with no nursery: write-behind works in place),
    let what the releases left running land (Graph.drain: storage/gfapi's closes run
    behind, which ``fini`` would wait for blocking the loop), cancel its background
    tasks, finish and dismantle it."""
    old.nursery = None
    await release_fds(old, fds)
    fds.clear()
    await old.drain()
    host = _HOSTS.pop(old, None)
    if host is not None:
        await host.stop()
    old.dismantle()


def _locks_text(held: list[str]) -> str:
    return ("locks are held (" + "; ".join(held) + "): a switch waits until no POSIX or "
            "flock lock is held or waited for; send SIGHUP again then")
