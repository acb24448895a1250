"""storage/posix's inline reads go through one buffer the translator keeps: what a
read returns is its own bytes, never what a later read put in that buffer."""
import os

import pytest
import trio

from xlators.storage import posix_io
from xlators.testing import Harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")


@pytest.fixture
def h(tmp_path):
    h = Harness.stack(leaf="storage/posix",
                      options={"storage/posix": {"directory": str(tmp_path), "reserve": "0"}})
    yield h
    h.fini()


async def test_reads_of_other_sizes_return_their_own_bytes(h):
    big = await h.create("/big")
    await h.write(big, b"B" * 10000)
    small = await h.create("/small")
    await h.write(small, b"s" * 10)
    assert await h.read(big, 8192) == b"B" * 8192
    assert await h.read(small, 4096) == b"s" * 10           # short: only what is there
    assert await h.read(big, 4096, 9000) == b"B" * 1000
    assert await h.read(small, 3, 2) == b"sss"
    assert bytes(await h.read(big, 8192)) == b"B" * 8192


async def test_a_read_that_waits_keeps_its_bytes(h, monkeypatch):
    """A read that gets part of its range from the page cache and waits for the rest in
    a thread: another read meanwhile reuses the buffer, the first one's bytes stay."""
    a = await h.create("/a")
    await h.write(a, b"a" * 8)
    b = await h.create("/b")
    await h.write(b, b"b" * 8)
    if not h.top._nowait:
        pytest.skip("no RWF_NOWAIT reads on this filesystem")
    real_preadv = os.preadv
    release = trio.Event()
    calls = []

    def preadv(fd, buffers, offset, flags=0):
        calls.append(fd)
        if len(calls) == 1:                 # the first read: half now, the rest later
            view = memoryview(buffers[0])
            return real_preadv(fd, [view[:4]], offset, flags)
        return real_preadv(fd, buffers, offset, flags)

    monkeypatch.setattr(posix_io.os, "preadv", preadv)
    real_thread = type(h.top)._thread

    async def thread(self, fn, *args):
        await release.wait()                # the second read runs meanwhile
        return await real_thread(self, fn, *args)

    monkeypatch.setattr(type(h.top), "_thread", thread)
    got = {}

    async def first():
        got["a"] = await h.read(a, 8)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        got["b"] = await h.read(b, 8)
        release.set()
    assert got == {"a": b"a" * 8, "b": b"b" * 8}
