"""Graph switch (fuse_bridge.graph_switch) on a real Session over the fake kernel: what the
kernel holds (nodeids, open files, directory listings) keeps working on the new graph, a
graph that cannot serve leaves the old one in place, locks refuse the switch, and the old
graph is freed."""
from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import weakref
from pathlib import Path
from typing import Any

import pytest
import trio

from fuse_bridge import abi
from fuse_bridge.graph_switch import switch_graph
from fuse_bridge.mount_watch import READ_ONLY_VOLUME
from xlators.core.events import Event
from xlators.core.graph import Graph
from xlators.core.registry import Registry
from xlators.core.translator import Translator
from xlators.core.volfile import VolumeSpec, parse_volfile

from tests.protocol.kernel import O, Gate, serve

LOG = "xlfs.reload"


def stack(brick: Path, *layers: str) -> str:
    """posix on ``brick``, features/locks, then ``layers`` (types), bottom first."""
    text = (f"volume posix\n    type storage/posix\n    option directory {brick}\n"
            f"end-volume\n\nvolume locks\n    type features/locks\n    subvolumes posix\n"
            f"end-volume\n")
    below = "locks"
    for i, t in enumerate(layers):
        name = f"{t.split('/')[1]}{i}"
        text += f"\nvolume {name}\n    type {t}\n    subvolumes {below}\nend-volume\n"
        below = name
    return text


def mirror(brick: Path, brick2: Path) -> str:
    return (f"volume posix\n    type storage/posix\n    option directory {brick}\n"
            f"end-volume\n\nvolume posix2\n    type storage/posix\n    option directory "
            f"{brick2}\nend-volume\n\nvolume mirror\n    type cluster/replicate\n"
            f"    subvolumes posix posix2\nend-volume\n\nvolume locks\n"
            f"    type features/locks\n    subvolumes mirror\nend-volume\n")


def running(text: str, registry: Registry | None = None) -> Graph:
    g = Graph(parse_volfile(text), registry=registry)
    g.init()
    g.activate()
    return g


def volumes(text: str) -> list[VolumeSpec]:
    return parse_volfile(text, "new.vol")


async def create(k, parent: int, name: bytes, data: bytes = b""):
    entry, opened = (await k.create(parent, name)).create()
    if data:
        assert (await k.write(entry.nodeid, opened.fh, data)).u32() == len(data)
    return entry.nodeid, opened.fh


def setlk_body(fh: int, owner: int, type_: int, start: int = 0, end: int = 99) -> bytes:
    return abi.LK_IN.pack(fh, owner, start, end, type_, os.getpid(), 0)


@pytest.fixture
def brick(tmp_path: Path) -> Path:
    d = tmp_path / "brick"
    d.mkdir()
    return d


async def test_open_files_names_and_listings_carry_over(brick: Path, caplog) -> None:
    """Data written before the switch is read after it through the same handle; a
    nodeid looked up before answers after; a listing goes on at its offset; new names
    work; the session now runs the new graph."""
    caplog.set_level(logging.INFO, LOG)
    for i in range(40):
        (brick / f"e{i:02d}").write_text("x")
    async with serve(running(stack(brick))) as (k, s):
        old = s.graph
        d = (await k.mkdir(1, b"d")).entry().nodeid
        f, fh = await create(k, d, b"f", b"before")
        dh = (await k.opendir(1)).open().fh
        first = (await k.readdir(1, dh, 0, 400)).dirents()
        assert 3 < len(first) < 40
        assert await switch_graph(s, volumes(stack(brick, "performance/write-behind",
                                                       "debug/io-stats")), source="new.vol")
        assert s.graph is not old and s.client.top is s.graph.top and s.itable is s.graph.itable
        assert [v.type for v in s.graph.volumes][-2:] == ["performance/write-behind",
                                                          "debug/io-stats"]
        assert (await k.read(f, fh, 100)).ok().body == b"before"
        assert (await k.write(f, fh, b"after!", 6)).u32() == 6
        assert (await k.read(f, fh, 100)).ok().body == b"beforeafter!"
        assert (await k.getattr(d)).attr().attr.mode & 0o170000 == 0o040000
        rest, offset = [], first[-1].off
        while True:
            batch = (await k.readdir(1, dh, offset, 400)).dirents()
            if not batch:
                break
            rest += batch
            offset = batch[-1].off
        names = [e.name for e in first + rest]
        assert sorted(names) == sorted([b".", b"..", b"d"] + [f"e{i:02d}".encode()
                                                              for i in range(40)])
        g, gh = await create(k, d, b"g", b"new")
        assert (await k.read(g, gh, 10)).ok().body == b"new"
        assert (brick / "d" / "f").read_bytes() == b"beforeafter!"
        assert f not in (g,) and s.itable.get(f).nlookup == 1
    assert "graph switched to new.vol" in caplog.text
    assert "2 inodes found again" in caplog.text, caplog.text


async def test_write_behind_data_lands_before_the_new_graph_reads(brick: Path) -> None:
    """Writes the old graph acknowledged and still holds (write-behind without trickling
    keeps small writes to merge them) are on the brick before the new graph reads."""
    held = stack(brick, "performance/write-behind").replace(
        "type performance/write-behind\n", "type performance/write-behind\n"
        "    option trickling-writes off\n")
    async with serve(running(held)) as (k, s):
        f, fh = await create(k, 1, b"f")
        for i in range(50):
            await k.write(f, fh, b"%04d" % i, 4 * i)
        assert (brick / "f").read_bytes() != b"".join(b"%04d" % i for i in range(50))
        Snoop.seen.clear()
        assert await switch_graph(s, volumes(stack(brick, "test/snoop")), registry=_xlators())
        assert Snoop.seen == [(brick / "f", 200)]       # when the new graph reopened it
        f2 = (await k.lookup(1, b"f")).entry().nodeid
        assert f2 == f
        data = b"".join(b"%04d" % i for i in range(50))
        assert (await k.read(f, fh, 4096)).ok().body == data
        assert (brick / "f").read_bytes() == data


async def test_writes_of_a_closed_and_forgotten_file_land_before_the_retirement(
        brick: Path) -> None:
    """A file closed (flush-behind: its flush and release finish in the background) and
    forgotten by the kernel: its queued writes land before the old graph is finished."""
    held = stack(brick, "debug/delay-gen", "performance/write-behind").replace(
        "type performance/write-behind\n", "type performance/write-behind\n"
        "    option trickling-writes off\n").replace(
        "type debug/delay-gen\n", "type debug/delay-gen\n    option delay-percentage 100\n"
        "    option delay-duration 300000\n    option enable writev\n")
    data = b"".join(b"%04d" % i for i in range(50))
    async with serve(running(held)) as (k, s):
        f, fh = await create(k, 1, b"f")
        for i in range(50):
            await k.write(f, fh, b"%04d" % i, 4 * i)
        (await k.flush(f, fh)).ok()
        (await k.release(f, fh)).ok()
        await k.forget(f, 1)
        assert await switch_graph(s, volumes(stack(brick)))
        assert (brick / "f").read_bytes() == data


async def test_the_retired_graph_is_drained_after_its_releases_before_fini(
        brick: Path) -> None:
    """Work a release left running (storage/gfapi's closes behind) is awaited after the
    old graph's files are released and before its fini, which must not block."""
    ClosesBehind.calls.clear()
    async with serve(running(stack(brick, "test/closes-behind"), _xlators())) as (k, s):
        await create(k, 1, b"f", b"data")
        assert await switch_graph(s, volumes(stack(brick)), registry=_xlators())
    assert ClosesBehind.calls[-3:] == ["release", "drain 1", "fini 0"], ClosesBehind.calls


async def test_posix_to_a_mirror_finds_by_name(brick: Path, tmp_path: Path) -> None:
    """Another storage: nodeids are found again by name; the open file keeps working and
    what is written after the switch reaches both bricks."""
    brick2 = tmp_path / "brick2"
    brick2.mkdir()
    async with serve(running(stack(brick))) as (k, s):
        d = (await k.mkdir(1, b"d")).entry().nodeid
        f, fh = await create(k, d, b"f", b"one")
        assert await switch_graph(s, volumes(mirror(brick, brick2)))
        assert "cluster/replicate" in [v.type for v in s.graph.volumes]
        assert (await k.read(f, fh, 10)).ok().body == b"one"
        assert (await k.write(f, fh, b"two", 3)).u32() == 3
        (await k.flush(f, fh)).ok()
        assert (brick / "d" / "f").read_bytes() == b"onetwo"
        assert (brick2 / "d" / "f").read_bytes() == b"onetwo"


async def test_a_deep_tree_and_many_names_move_by_name(brick: Path, tmp_path: Path) -> None:
    """Parents are found before their children however deep the tree (no recursion),
    and no nodeid the kernel holds is handed out for another object meanwhile."""
    brick2 = tmp_path / "brick2"
    brick2.mkdir()
    async with serve(running(stack(brick))) as (k, s):
        chain = [1]
        for _ in range(400):
            chain.append((await k.mkdir(chain[-1], b"d")).entry().nodeid)
        files = [(await k.create(1, b"f%d" % i)).create()[0].nodeid for i in range(300)]
        assert await switch_graph(s, volumes(mirror(brick, brick2)))
        for n in chain[1:] + files:
            assert s.itable.get(n).ctx, n
        assert len({id(s.itable.get(n)) for n in chain + files}) == len(chain + files)
        g = (await k.create(chain[-1], b"new")).create()[0].nodeid
        assert g not in chain and g not in files
        assert (await k.lookup(chain[-2], b"d")).entry().nodeid == chain[-1]


async def test_a_nodeid_found_by_name_is_never_taken_for_an_export_key(
        brick: Path, tmp_path: Path) -> None:
    """brick -> brick2 (found by name) -> brick2 with write-behind (same storage: export
    keys are used, but not for nodeids that are brick's keys, which on the same
    filesystem would open brick's file)."""
    brick2 = tmp_path / "brick2"
    brick2.mkdir()
    (brick2 / "f").write_bytes(b"two")
    async with serve(running(stack(brick))) as (k, s):
        f, fh = await create(k, 1, b"f", b"one")
        (await k.release(f, fh)).ok()
        assert await switch_graph(s, volumes(stack(brick2)))
        assert await switch_graph(s, volumes(stack(brick2, "performance/write-behind")))
        fh = (await k.open(f, os.O_RDONLY)).open().fh
        assert (await k.read(f, fh, 10)).ok().body == b"two"


async def test_an_open_file_whose_name_is_gone_answers_ebadf(brick: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "xlfs.graph-switch")
    async with serve(running(stack(brick))) as (k, s):
        f, fh = await create(k, 1, b"f", b"data")
        (await k.unlink(1, b"f")).ok()
        assert (await k.read(f, fh, 10)).ok().body == b"data"     # open, unlinked
        assert await switch_graph(s, volumes(stack(brick, "performance/write-behind")))
        assert (await k.read(f, fh, 10)).errno == errno.EBADF
        assert (await k.getattr(f)).errno == errno.ESTALE
        assert f"fh {fh} (nodeid {f}" in caplog.text and "answers EBADF" in caplog.text
        (await k.release(f, fh)).ok()
        await k.forget(f, 1)
        await k.sync()
        assert s.itable.get(f) is None and not s.client.fds


async def test_a_name_that_changed_kind_is_stale_and_looked_up_again(
        brick: Path, tmp_path: Path) -> None:
    brick2 = tmp_path / "brick2"
    brick2.mkdir()
    async with serve(running(stack(brick))) as (k, s):
        f = (await (k.create(1, b"x"))).create()[0].nodeid
        os.unlink(brick / "x")
        os.mkdir(brick / "x")          # behind the graph's back: now a directory
        assert await switch_graph(s, volumes(mirror(brick, brick2)))
        assert (await k.getattr(f)).errno == errno.ESTALE
        assert (await k.lookup(1, b"x")).entry().nodeid != f


async def test_the_old_graph_is_freed_and_keeps_no_descriptor(brick: Path) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with serve(running(stack(brick))) as (k, s):
        f, fh = await create(k, 1, b"f", b"data")
        d = (await k.mkdir(1, b"d")).entry().nodeid
        dh = (await k.opendir(d)).open().fh
        texts = [stack(brick, "performance/write-behind"), stack(brick)]
        assert await switch_graph(s, volumes(texts[0]))
        assert await switch_graph(s, volumes(texts[1]))
        gc.collect()
        before = fds()
        refs = []
        for i in range(10):
            refs.append(weakref.ref(s.graph))
            refs += [weakref.ref(xl) for xl in s.graph.xlators.values()]
            refs.append(weakref.ref(s.itable))
            assert await switch_graph(s, volumes(texts[i % 2]))
        gc.collect()
        assert [r for r in refs if r() is not None] == []
        assert fds() == before
        assert (await k.read(f, fh, 10)).ok().body == b"data"
        assert (await k.readdir(d, dh, 0, 4096)).dirents()


class NeverUp(Translator):
    """A translator whose child never comes up (swallows CHILD_UP)."""
    type = "test/never-up"

    def notify(self, event: Any, data: Any = None, source: Any = None) -> None:
        if event is Event.CHILD_UP:
            return
        super().notify(event, data, source)


class Snoop(Translator):
    """Records the size of each file it opens, as the brick has it at that moment."""
    type = "test/snoop"
    seen: list = []

    async def open(self, frame, inode, flags, fd):
        await self.child.open(frame, inode, flags, fd)
        path = Path(self.children[0].children[0]._directory) / "f"
        Snoop.seen.append((path, path.stat().st_size))


class ClosesBehind(Translator):
    """A release answered before its work is done (as storage/gfapi's closes behind);
    records the order in which the retirement calls it."""
    type = "test/closes-behind"
    calls: list = []

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pending = 0

    async def release(self, frame, fd):
        await self.child.release(frame, fd)
        self.pending += 1
        ClosesBehind.calls.append("release")

    async def drain(self) -> None:
        await trio.sleep(0)
        ClosesBehind.calls.append(f"drain {self.pending}")
        self.pending = 0

    def fini(self) -> None:
        ClosesBehind.calls.append(f"fini {self.pending}")
        super().fini()


class FailsInit(Translator):
    type = "test/fails-init"

    def init(self) -> None:
        raise RuntimeError("no such backend")


def _xlators() -> Registry:
    """The built-in translators and this file's."""
    r = Registry()
    for cls in (NeverUp, FailsInit, Gate, Snoop, ClosesBehind):
        r.register(cls, "tests.protocol.test_graph_switch")
    return r


@pytest.mark.parametrize("case", ["syntax", "unknown type", "init", "never up",
                                  "brick is the mountpoint"])
async def test_a_new_graph_that_cannot_serve_leaves_the_old_one(
        brick: Path, case: str, caplog) -> None:
    caplog.set_level(logging.INFO, LOG)
    reg = _xlators()
    async with serve(running(stack(brick), reg)) as (k, s):
        s.mountpoint = str(brick / "mnt") if case == "brick is the mountpoint" else ""
        old = s.graph
        f, fh = await create(k, 1, b"f", b"kept")
        base = stack(brick)
        if case == "syntax":
            vols = None
        elif case == "unknown type":
            vols = volumes(base + "\nvolume x\n    type no/such\n    subvolumes locks\n"
                           "end-volume\n")
        elif case == "init":
            vols = volumes(base + "\nvolume x\n    type test/fails-init\n"
                           "    subvolumes locks\nend-volume\n")
        elif case == "never up":
            vols = volumes(base + "\nvolume x\n    type test/never-up\n"
                           "    subvolumes locks\nend-volume\n")
        else:
            os.mkdir(brick / "mnt")
            vols = volumes(stack(brick / "mnt", "performance/write-behind"))
        if vols is None:
            from fuse_bridge.graph_switch import reload
            bad = brick.parent / "bad.vol"
            bad.write_text("volume x\n type\nend-volume\n")
            assert await reload(s, str(bad)) == "failed"
        else:
            assert not await switch_graph(s, vols, registry=reg, up_timeout=0.3)
        assert s.graph is old and s.client.top is old.top and s.itable is old.itable
        assert (await k.read(f, fh, 10)).ok().body == b"kept"
        assert (await k.lookup(1, b"f")).entry().nodeid == f
        assert s.switching is None
    want = {"syntax": "cannot reload", "unknown type": "no/such",
            "init": "no such backend", "never up": "not up within 0.3 s",
            "brick is the mountpoint": "the mountpoint is the brick"}[case]
    line = next(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert want in line and "the running graph serves on" in line, line


async def test_a_new_graph_that_hangs_while_moving_is_given_up(brick: Path, tmp_path: Path,
                                                               caplog) -> None:
    """A lookup that never returns on the new graph (a hung brick) while the inodes are
    found again: the switch is refused after the bound and requests flow again."""
    caplog.set_level(logging.INFO, LOG)
    reg = _xlators()
    async with serve(running(stack(brick), reg)) as (k, s):
        old = s.graph
        d = (await k.mkdir(1, b"slow")).entry().nodeid
        f, fh = await create(k, d, b"f", b"data")
        (tmp_path / "brick2").mkdir()
        new = volumes(mirror(brick, tmp_path / "brick2") + "\nvolume gate\n    type test/gate"
                      "\n    subvolumes locks\nend-volume\n")  # LOOKUP of b"slow" waits
        assert not await switch_graph(s, new, registry=reg, move_timeout=0.3)
        assert "took more than 0.3 s" in caplog.text
        assert s.graph is old and s.switching is None
        assert (await k.read(f, fh, 10)).ok().body == b"data"
        assert (await k.lookup(d, b"f")).entry().nodeid == f


async def test_locks_refuse_the_switch_until_released(brick: Path, caplog) -> None:
    caplog.set_level(logging.INFO, LOG)
    async with serve(running(stack(brick))) as (k, s):
        old = s.graph
        f, fh = await create(k, 1, b"f", b"x")
        (await k.call(O.SETLK, setlk_body(fh, 7, fcntl.F_WRLCK), f)).ok()
        assert not await switch_graph(s, volumes(stack(brick, "performance/write-behind")))
        assert s.graph is old
        assert "locks are held" in caplog.text and "'locks' (features/locks)" in caplog.text
        (await k.call(O.SETLK, setlk_body(fh, 7, fcntl.F_UNLCK), f)).ok()
        assert await switch_graph(s, volumes(stack(brick, "performance/write-behind")))
        (await k.call(O.SETLK, setlk_body(fh, 7, fcntl.F_WRLCK), f)).ok()


async def test_requests_in_flight_finish_on_the_old_graph_first(brick: Path, caplog) -> None:
    """A request that does not finish within the bound refuses the switch; one that
    finishes lets it go on; a request sent during the switch waits and runs on the new
    graph."""
    caplog.set_level(logging.INFO, LOG)
    reg = _xlators()
    async with serve(running(stack(brick, "test/gate"), reg)) as (k, s):
        old = s.graph
        gate = old.top
        slow = await k.send(O.LOOKUP, b"slow\0", 1)
        while not gate.waiting:
            await trio.sleep(0.01)
        new = volumes(stack(brick, "test/gate", "performance/write-behind"))
        assert not await switch_graph(s, new, registry=reg, drain_timeout=0.2)
        assert "1 request(s) still in flight" in caplog.text and "LOOKUP" in caplog.text
        assert s.graph is old
        result: list = []
        async with trio.open_nursery() as n:
            async def go():
                result.append(await switch_graph(s, new, registry=reg, drain_timeout=5))
            n.start_soon(go)
            while s.switching is None:
                await trio.sleep(0.01)
            other = await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1)
            assert await k.silence(0.3)            # the getattr waits; the lookup holds
            assert s.graph is old
            gate.gate_open.set()
            replies = {(await k.recv()).unique for _ in range(2)}
            assert replies == {slow, other}
        assert result == [True] and s.graph is not old


async def test_read_only_translator_stays_on_top_in_its_state(brick: Path) -> None:
    g = Graph(parse_volfile(stack(brick)) + [VolumeSpec(READ_ONLY_VOLUME,
                                                        "features/read-only", {}, ["locks"])])
    g.added_volumes = (READ_ONLY_VOLUME,)
    g.init()
    g.activate()
    async with serve(g) as (k, s):
        assert (await k.create(1, b"f")).errno == errno.EROFS
        assert await switch_graph(s, volumes(stack(brick, "performance/write-behind")))
        assert s.graph.top.name == READ_ONLY_VOLUME
        assert s.graph.added_volumes == (READ_ONLY_VOLUME,)
        assert (await k.create(1, b"f")).errno == errno.EROFS
        s.graph.xlators[READ_ONLY_VOLUME].reconfigure({"read-only": "off"})   # remount,rw
        assert await switch_graph(s, volumes(stack(brick)))
        f, fh = await create(k, 1, b"f", b"rw now")
        assert (brick / "f").read_bytes() == b"rw now"


async def test_forget_after_a_switch_empties_the_new_table(brick: Path) -> None:
    async with serve(running(stack(brick))) as (k, s):
        f = (await k.create(1, b"f")).create()
        nodeid, fh = f[0].nodeid, f[1].fh
        (await k.release(nodeid, fh)).ok()
        assert await switch_graph(s, volumes(stack(brick, "performance/write-behind")))
        assert s.itable.get(nodeid).nlookup == 1
        await k.forget(nodeid, 1)
        await k.sync()
        assert s.itable.get(nodeid) is None and len(s.itable) == 1


async def test_forgets_waiting_at_a_switch_are_applied_on_the_old_graph_first(
        brick: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge defers forgets (fuse_bridge.forget_backlog); a switch applies them
    before it looks for the inodes the kernel holds: none moves to the new graph."""
    from fuse_bridge import forget_backlog
    monkeypatch.setattr(forget_backlog, "QUIET", 600.0)     # never idle long enough
    async with serve(running(stack(brick))) as (k, s):
        nodeids = []
        for name in (b"a", b"b"):
            e, o = (await k.create(1, name)).create()
            (await k.release(e.nodeid, o.fh)).ok()
            nodeids.append(e.nodeid)
        body = abi.BATCH_FORGET_IN.pack(2) + b"".join(abi.FORGET_ONE.pack(n, 1)
                                                      for n in nodeids)
        getattr_ = k.message(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1)
        for msg in (k.message(O.BATCH_FORGET, body), getattr_):   # back to back
            assert k.ksock.send(msg) == len(msg)
        (await k.recv()).ok()
        assert s.client.forgets_pending == 2          # still waiting
        assert await switch_graph(s, volumes(stack(brick, "performance/write-behind")))
        assert s.client.forgets_pending == 0
        assert all(s.itable.get(n) is None for n in nodeids) and len(s.itable) == 1
