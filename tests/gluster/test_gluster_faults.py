"""An xlfs mount over storage/gfapi whose bricks stop answering: every brick frozen with
SIGSTOP, so the connections stay open and nothing answers (a killed brick closes its
connections, which the client notices at once: test_gfapi_xlator's
test_volume_down_is_enotconn_and_child_down).

- ENOTCONN within the protocol's bound.  protocol/client gives up on a brick
  ``ping-timeout`` seconds after the first request it sent that was not answered
  (GlusterFS's ping timer: rpc-clnt-ping.c).  On a volume of one brick a request so
  fails after ``ping-timeout``.  On a replica, replicate sends a read (and the stat or
  lookup behind a lookup, create or write) to one brick at a time, the next one when
  one fails, and each brick tried costs ``ping-timeout``; a brick lost earlier
  reconnects every RECONNECT seconds (a frozen brick's port still accepts the
  connection) and can be tried once more.  So on replica-N a request fails after
  ``ping-timeout`` at least and ``(2N - 1) x ping-timeout`` at most (measured: 1, 2 or
  3 rounds on replica-2), plus ``MARGIN`` for GlusterFS's timer thread and the
  machine's load; never before ``ping-timeout / 2``.  The bound holds with the ping
  timer idle when the volume froze (no request answered in the last ping-timeout):
  with it running, a brick can take up to twice as long, so the test lets it go idle
  first; and it starts the request early in a wall-clock second (the timer compares
  whole seconds of the last send: two sends on both sides of a second boundary add one
  ping-timeout).  The translator logs the volume unreachable with CHILD_DOWN once,
  naming the volume and the failed call; after SIGCONT the mount works again and the
  log says CHILD_UP.  A read through a file opened before the freeze fails with
  ENOTCONN too (libgfapi says EBADFD: the open file's connection was lost).
- A signal frees a caller stuck on the frozen bricks (with a ping-timeout far longer
  than the test waits), with the interrupt flags on: a lookup, close(2) of a written
  file its process locked (FLUSH: storage/gfapi closes the lock owner's descriptor,
  whose FLUSH the bricks must answer; ``--fuse-flush-handle-interrupt``; a write(2)
  itself cannot be the one stuck there: the kernel asks for the file's
  security.capability xattr before each write, and that GETXATTR is what waits), fcntl
  F_SETLKW (SETLKW; ``--fuse-setlk-handle-interrupt``: storage/gfapi's
  ``cancel_blocked`` gives up the lock try stuck on the bricks) and F_SETLK (SETLK;
  always interruptible).  The process gets EINTR at once; after SIGCONT the mount works,
  the abandoned calls finish (no busy worker, no interrupt record, no request in
  flight), the written data is there and the closed file's lock gone, and a lock the
  bricks granted to a given-up try after SIGCONT is unlocked again: another process
  takes it while the interrupted one still has the file open. A lock wait on a lock
  another owner holds (the bricks answering) is withdrawn the same way, at once, leaving
  nothing.

Every brick is continued (SIGCONT) and killed by pid on every path (Bricks.frozen, the
Bricks context), every mount unmounted (Mounted).
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import statistics
import time

import pytest

from tests.gluster.bricks import Bricks
from tests.gluster.conftest import mount_gfapi
from tests.interrupts.intrlib import Victim, log_since, statedump, third_gets_it
from tests.mountlib import can_mount, wait_until

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

PING = 2              # s: protocol/client's ping-timeout of the ENOTCONN tests
MARGIN = 1.5          # s past (2N - 1) x PING: GlusterFS's timer thread, the load
RECONNECT = 3         # s: protocol/client reconnects a lost brick this often
STUCK_PING = 60       # s: the ping-timeout of the signal tests (never reached)
FREED = 5.0           # s: a signalled caller returns within this ("at once", loaded VM)

TIMES: dict[str, list[float]] = {}      # ENOTCONN after, by volume shape (printed)


def _mounted(tmp_path_factory, name: str, bricks: Bricks, *flags: str):
    why = can_mount()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp(name)
    dumps = work / "dumps"
    dumps.mkdir()
    m = mount_gfapi(work / "xlfs", bricks.client_volfile, "--entry-timeout=0",
                    "--negative-timeout=0", *flags, limit=900.0)
    m.env = {"XLFS_DUMP_DIR": str(dumps)}
    return m, dumps


# -- ENOTCONN within the ping-timeout ------------------------------------------------------

@pytest.fixture(scope="module", params=[1, 2], ids=["1-brick", "replica-2"])
def frozen_volume(request, tmp_path_factory):
    count = request.param
    base = tmp_path_factory.mktemp(f"enotconn-{count}")
    with Bricks(base / "bricks", count, f"fz{count}", ping_timeout=PING) as bricks:
        m, _ = _mounted(tmp_path_factory, f"enotconn-m{count}", bricks,
                        "--attribute-timeout=0", "--direct-io-mode=yes")
        with m:
            with open(m.path("f"), "wb") as f:
                f.write(b"data")
            yield bricks, m
            log = m.read_log()
            assert "Traceback" not in log, log[-3000:]
    times = TIMES.get(f"{count}")
    if times:
        print(f"\n{count} brick(s), ping-timeout {PING}: ENOTCONN after "
              f"{', '.join(f'{t:.2f}' for t in times)} s (median "
              f"{statistics.median(times):.2f})")


def _idle_ping_timer() -> None:
    """No request was answered in the last ping-timeout: a brick lost earlier reconnects
    within RECONNECT seconds, and then its ping timer runs out after PING more (two
    rounds of it at most)."""
    time.sleep(RECONNECT + 2 * PING + 0.5)
    # early in a wall-clock second (GlusterFS's ping timer compares whole seconds)
    time.sleep((1.05 - time.time() % 1.0) % 1.0)


def _answers(m) -> bool:
    try:
        os.stat(m.path("f"))
        return True
    except OSError as exc:
        assert exc.errno == errno.ENOTCONN, exc
        return False


def _lookup(m, fd, n):
    os.stat(m.path("f"))


def _read(m, fd, n):
    os.pread(fd, 4, 0)


def _write(m, fd, n):
    os.pwrite(fd, b"DATA", 0)


def _create(m, fd, n):
    os.close(os.open(m.path(f"new{n}"), os.O_CREAT | os.O_WRONLY, 0o644))


OPS = {"lookup": _lookup, "read": _read, "write": _write, "create": _create}
CHILD_DOWN = (r"gv: GlusterFS volume {volume} \(client volfile \S+\) is unreachable "
              r"\(\w+: Transport endpoint is not connected.*\): CHILD_DOWN; requests "
              r"fail with ENOTCONN until it answers again")
CHILD_UP = r"gv: GlusterFS volume {volume} \(client volfile \S+\) answers again: CHILD_UP"


@pytest.mark.parametrize("op", list(OPS))
def test_frozen_volume_is_enotconn_within_ping_timeout(frozen_volume, op):
    bricks, m = frozen_volume
    count = len(bricks.bricks)
    wait_until(lambda: _answers(m), 30, "the volume to answer", detail=m.read_log)
    fd = os.open(m.path("f"), os.O_RDWR)
    try:
        _idle_ping_timer()
        offset = len(m.read_log())
        with bricks.frozen():
            t0 = time.monotonic()
            with pytest.raises(OSError) as ei:
                OPS[op](m, fd, len(TIMES.get(f"{count}", ())))
            took = time.monotonic() - t0
            assert all(b.stopped() for b in bricks.bricks)    # still frozen
        TIMES.setdefault(f"{count}", []).append(took)
        print(f"{op} on {count} frozen brick(s): {errno.errorcode[ei.value.errno]} "
              f"after {took:.2f} s")
        assert ei.value.errno == errno.ENOTCONN, ei.value
        assert PING / 2 <= took <= (2 * count - 1) * PING + MARGIN, \
            f"ENOTCONN after {took:.2f} s (ping-timeout {PING} s, {count} brick(s))"
        down = re.findall(CHILD_DOWN.format(volume=bricks.volume), log_since(m, offset))
        assert len(down) == 1, log_since(m, offset)[-3000:]
        wait_until(lambda: _answers(m), 30, "the volume to answer again",
                   detail=m.read_log)
        assert re.search(CHILD_UP.format(volume=bricks.volume), log_since(m, offset))
        assert os.pread(fd, 4, 0) in (b"data", b"DATA")
    finally:
        os.close(fd)
    assert m.proc.poll() is None, m.read_log()[-3000:]


# -- a signal frees a caller stuck on frozen bricks -------------------------------------

@pytest.fixture(scope="module")
def stuck_volume(tmp_path_factory):
    base = tmp_path_factory.mktemp("stuck")
    with Bricks(base / "bricks", 2, "stuck", ping_timeout=STUCK_PING) as bricks:
        m, dumps = _mounted(tmp_path_factory, "stuck-m", bricks,
                            "--fuse-flush-handle-interrupt=yes",
                            "--fuse-setlk-handle-interrupt=yes")
        with m:
            yield bricks, m, dumps
            log = m.read_log()
            assert "Traceback" not in log, log[-3000:]


ACTIONS = {"lookup": "LOOKUP", "close": "FLUSH", "fcntl": "SETLKW", "setlk": "SETLK"}


def _settled(state: dict) -> bool:
    return (state.get("records") == "0" and state.get("in-flight") == "0"
            and state.get("threads-busy") == "0")


@pytest.mark.parametrize("action", list(ACTIONS), ids=list(ACTIONS.values()))
def test_signal_frees_a_caller_stuck_on_frozen_bricks(stuck_volume, action):
    bricks, m, dumps = stuck_volume
    path = m.path(f"stuck-{action}")
    undone = int(statedump(m, dumps).get("locks-undone-after-interrupt", 0))
    offset = len(m.read_log())
    with Victim(action, path, "handled", "--gate", "--lock") as v:
        v.wait_opened()
        with bricks.frozen():
            v.go()
            v.wait_blocked(settle=1.0)          # stuck, not just slow
            assert v.wait_returned(0) is None, "the call did not wait for the bricks"
            v.signal(signal.SIGINT)
            result = v.wait_returned(FREED)
            assert result is not None, \
                f"SIGINT did not free the caller of {ACTIONS[action]} on frozen bricks"
            print(f"{ACTIONS[action]} on frozen bricks: EINTR {v.returned_after:.3f} s "
                  "after SIGINT")
            assert v.returned_after < FREED
            assert (result["rc"], result["errno"]) == (-1, "EINTR"), result
            assert all(b.stopped() for b in bricks.bricks)     # still frozen
        wait_until(lambda: _answers_at(m, path if action != "lookup" else None), 30,
                   "the mount to answer after SIGCONT", detail=m.read_log)
        if action in ("fcntl", "setlk"):
            # the victim still has the file open: a lock granted to its given-up try
            # after SIGCONT must have been let go
            wait_until(lambda: third_gets_it(path, "fcntl"), 30,
                       "the lock to be free", detail=lambda: log_since(m, offset))
            v.release()
        v.wait_exit(10)
    if action == "close":
        assert open(path, "rb").read() == b"written before close\n"
        wait_until(lambda: third_gets_it(path, "fcntl"), 30,
                   "the closed file's lock to go", detail=lambda: log_since(m, offset))
    state = wait_until(lambda: (lambda s: s if _settled(s) else None)(
        statedump(m, dumps)), 30, "every call to finish", detail=lambda: str(
        statedump(m, dumps)))
    if action in ("fcntl", "setlk"):
        assert int(state["locks-undone-after-interrupt"]) == undone + 1, state
    log = log_since(m, offset)
    if action == "close":
        assert re.search(r"FLUSH unique \d+: interrupt handler triggered", log), log
    if action == "fcntl":
        assert "blocked lock withdrawn" in log, log[-3000:]
    assert m.proc.poll() is None, m.read_log()[-3000:]


def _answers_at(m, path) -> bool:
    try:
        os.stat(path or m.mountpoint)
        return True
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["fcntl", "flock"])
def test_signal_withdraws_a_lock_wait_on_a_held_lock(stuck_volume, kind):
    """The bricks answer, another owner holds the lock: storage/gfapi's wait (F_SETLK
    tries from the event loop) is withdrawn at once by cancel_blocked, and the
    interrupted process holds nothing once the holder lets go."""
    _, m, _ = stuck_volume
    path = m.path(f"held-{kind}")
    lock = fcntl.flock if kind == "flock" else fcntl.lockf
    offset = len(m.read_log())
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        lock(fd, fcntl.LOCK_EX)
        with Victim(kind, path) as v:
            v.wait_blocked(settle=0.3)
            v.signal(signal.SIGINT)
            result = v.wait_returned(FREED)
            assert result is not None and (result["rc"], result["errno"]) == (-1, "EINTR")
            lock(fd, fcntl.LOCK_UN)
            assert third_gets_it(path, kind)        # the victim still has the file open
            v.release()
            v.wait_exit(10)
    finally:
        os.close(fd)
    assert "blocked lock withdrawn" in log_since(m, offset)
