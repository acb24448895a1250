"""cluster/replicate against a single storage/memory, driven by hypothesis.

The same random file operations go to a replica of three storage/memory children and to
one plain storage/memory; children fail (error-gen, every fop ENOTCONN; at most two at a
time, and never every child that holds good copies) and come back at random; heals run
at random.  Every visible result -- contents,
sizes, types, permission bits, listings, and the errno of every failure -- must be the
same on both.  Now and then every child is brought back and healed, and then each
child's storage must hold exactly the reference tree.
"""
from __future__ import annotations

import os
import stat

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from xlators.core.errors import FopError
from xlators.testing import Harness

from tests.xlators.afr_util import brick_tree, fail, recover, replica, tree

N = 3
DIRS = ("", "/d1", "/d2", "/d1/e")
NAMES = ("a", "b", "c")
paths = st.builds(lambda d, n: f"{d}/{n}", st.sampled_from(DIRS), st.sampled_from(NAMES))
dirpaths = st.sampled_from(DIRS)


def outcome(fn):
    async def run():
        try:
            return ("ok", await fn())
        except FopError as exc:
            return ("err", exc.errno)
    return trio.run(run)


class ReplicaVersusOne(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = replica(N, self_heal_daemon="off", read_policy="first-up")
        self.ref = Harness.stack(options={"storage/memory": {"size": "0"}})
        self.down: set[int] = set()
        self.stale: set[int] = set()     # down at some point since the last full heal

    def both(self, make):
        got = outcome(lambda: make(self.h))
        want = outcome(lambda: make(self.ref))
        assert got == want, f"replicate {got} != single {want} (down: {sorted(self.down)})"
        return got

    # -- file operations ---------------------------------------------------------------
    @rule(path=paths)
    def create(self, path):
        async def op(h):
            fd = await h.create(path, 0o644, os.O_RDWR | os.O_CREAT)
            await h.close(fd)
        self.both(op)

    @rule(path=paths, offset=st.integers(0, 70000), data=st.binary(min_size=1, max_size=3000))
    def write(self, path, offset, data):
        async def op(h):
            fd = await h.open(path, os.O_RDWR)
            try:
                return await h.write(fd, data, offset)
            finally:
                await h.close(fd)
        self.both(op)

    @rule(path=paths, size=st.integers(0, 80000))
    def truncate(self, path, size):
        async def op(h):
            return (await h.setattr(path, size=size)).size
        self.both(op)

    @rule(path=paths, mode=st.sampled_from([0o600, 0o644, 0o755]))
    def chmod(self, path, mode):
        async def op(h):
            a = await h.setattr(path, mode=mode)
            return stat.S_IMODE(a.mode)
        self.both(op)

    @rule(path=paths)
    def read(self, path):
        self.both(lambda h: h.read_file(path))

    @rule(path=st.one_of(paths, dirpaths))
    def stat(self, path):
        async def op(h):
            a = await h.stat(path)
            return (a.size if stat.S_ISREG(a.mode) else None, a.mode)
        self.both(op)

    @rule(path=paths)
    def unlink(self, path):
        self.both(lambda h: h.unlink(path))

    @rule(path=st.sampled_from(DIRS[1:]))
    def mkdir(self, path):
        async def op(h):
            await h.mkdir(path)
        self.both(op)

    @rule(path=st.sampled_from(DIRS[1:]))
    def rmdir(self, path):
        self.both(lambda h: h.rmdir(path))

    @rule(src=paths, dst=paths)
    def rename(self, src, dst):
        self.both(lambda h: h.rename(src, dst))

    @rule(path=dirpaths)
    def listdir(self, path):
        async def op(h):
            return sorted(e.name for e in await h.listdir(path or "/"))
        self.both(op)

    # -- failures and heals ---------------------------------------------------------------
    def _may_fail(self, i):
        """At most N-1 children down, and never every good copy: a child that was down
        since the last complete heal may miss changes (with quorum-type none a write to
        it alone would then make a split brain, as in GlusterFS: tested on its own)."""
        after = self.down | {i}
        return len(after) < N and any(c not in after and c not in self.stale
                                      for c in range(N))

    @rule(i=st.integers(0, N - 1))
    def fail_child(self, i):
        if not self._may_fail(i):
            return
        fail(self.h, i)
        self.down.add(i)
        self.stale.add(i)

    @precondition(lambda self: self.down)
    @rule(data=st.data())
    def recover_child(self, data):
        i = data.draw(st.sampled_from(sorted(self.down)))
        recover(self.h, i)
        self.down.discard(i)
        trio.run(self.h.graph["r"].probe_now)

    @rule()
    def heal(self):
        left = trio.run(self.h.graph["r"].heal_pass)
        if not left and not self.down:
            self.stale.clear()

    @rule()
    def recover_all_and_compare_bricks(self):
        for i in sorted(self.down):
            recover(self.h, i)
        self.down.clear()
        r = self.h.graph["r"]
        trio.run(r.probe_now)
        assert trio.run(r.heal_pass) == 0, r.dump()
        self.stale.clear()
        want = trio.run(tree, self.ref)
        for i in range(N):
            assert trio.run(brick_tree, self.h, i) == want, f"child {i} after heal"

    @invariant()
    def no_split_brain(self):
        assert self.h.graph["r"].split_brain_count == 0


ReplicaVersusOne.TestCase.settings = settings(
    max_examples=int(os.environ.get("XLFS_AFR_EXAMPLES", "60")), stateful_step_count=40,
    deadline=None, suppress_health_check=[HealthCheck.too_slow])
test_replicate_matches_a_single_brick = ReplicaVersusOne.TestCase
