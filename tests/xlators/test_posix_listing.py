"""storage/posix's listing kept as columns: readdir answers with a DirBatch that reads as
the DirEntry list, every name (lengths 1..255) is listed once with its inode number and
type, across scandir's chunks and every batch boundary, the names go shortest first
after "." and "..", and the FUSE bridge packs such a batch as it packs the list."""
from __future__ import annotations

import os
import stat

import pytest
import trio

from fuse_bridge import abi
from fuse_bridge.dirent_pack import pack_readdir
from fuse_bridge.encode import Timeouts
from fuse_bridge.ops_dir import pack_plus_batch
from xlators import Fd
from xlators.core.dir_batch import DirBatch
from xlators.storage import posix_dir

from tests.xlators.test_posix import make_brick

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")


@pytest.fixture(params=["inline", "threads"])
def br(tmp_path, request):
    brick = make_brick(tmp_path, request.param)
    yield brick
    brick.h.fini()


async def opened(br):
    fd = Fd(br.h.root, os.O_RDONLY, is_dir=True)
    await br.xl.opendir(br.h.frame(), br.h.root, fd)
    return fd


def brick_view(path: bytes) -> dict:
    """name -> (DT_* type, st_ino) of every entry of ``path``, from lstat."""
    out = {}
    for name in os.listdir(path):
        st = os.lstat(path + b"/" + name)
        out[name] = (stat.S_IFMT(st.st_mode) >> 12, st.st_ino)
    return out


async def test_names_of_every_length_listed_in_batches_of_every_size(br):
    root = os.fsencode(br.a)
    for n in range(1, 256):
        open(root + b"/" + bytes([97 + n % 26]) * n, "w").close()
    os.mkdir(root + b"/" + b"D" * 9)
    os.symlink("x", root + b"/" + b"L" * 9)
    want = brick_view(root)
    fd = await opened(br)
    for size in (280, 700, 4096, 32768):         # (280: the longest record)
        off, listed = 0, []
        while True:
            batch = await br.xl.readdir(br.h.frame(), fd, off, size)
            if not batch:
                break
            assert isinstance(batch, DirBatch)
            data = pack_readdir(batch, size)
            assert data == abi.pack_dirents(list(batch), size) and 0 < len(data) <= size
            # the kernel resumes after the last record it got
            got = []
            pos = 0
            while pos < len(data):
                ino, cookie, namelen, type_ = abi.DIRENT.unpack_from(data, pos)
                got.append((data[pos + 24:pos + 24 + namelen], ino, type_, cookie))
                pos += (24 + namelen + 7) & ~7
            listed += got
            off = got[-1][3]
        assert [x[3] for x in listed] == list(range(1, len(listed) + 1))
        assert [x[0] for x in listed[:2]] == [b".", b".."]
        assert {x[0]: (x[2], x[1]) for x in listed[2:]} == want
        lens = [len(x[0]) for x in listed[2:]]
        assert lens == sorted(lens)                    # shortest first
    await br.xl.releasedir(br.h.frame(), fd)


async def test_types_across_scandir_chunks(br, monkeypatch):
    monkeypatch.setattr(posix_dir, "_CHUNK", 7)
    root = br.a
    for i in range(40):
        if i % 13 == 5:
            os.mkdir(f"{root}/d{i:03}")
        elif i % 17 == 3:
            os.symlink("nowhere", f"{root}/l{i:03}")
        elif i == 22:
            os.mkfifo(f"{root}/p{i:03}")
        else:
            open(f"{root}/f{i:03}", "w").close()
    fd = await opened(br)
    listed = list(await br.xl.readdir(br.h.frame(), fd, 0, 1 << 20))
    assert {e.name: (e.type, e.ino) for e in listed[2:]} == brick_view(os.fsencode(root))
    assert [e.off for e in listed] == list(range(1, 43))
    # readdirp gives each name its lookup, and the same cookies
    plus = await br.xl.readdirp(br.h.frame(), fd, 0, 1 << 20)
    assert [(e.name, e.off) for e in plus] == [(e.name, e.off) for e in listed]
    for e in plus[2:]:
        assert e.entry.attr.ino == e.ino == os.lstat(f"{root}/{e.name.decode()}").st_ino
    await br.xl.releasedir(br.h.frame(), fd)


async def test_seekdir_into_the_middle_of_a_run(br):
    for i in range(100):
        open(f"{br.a}/n{i:03}", "w").close()
    fd = await opened(br)
    whole = list(await br.xl.readdir(br.h.frame(), fd, 0, 1 << 20))
    for off in (1, 2, 3, 50, 101, 102):
        rest = await br.xl.readdir(br.h.frame(), fd, off, 1 << 20)
        assert list(rest) == whole[off:]
        assert pack_readdir(rest, 1 << 20) == abi.pack_dirents(whole[off:], 1 << 20)
    await br.xl.releasedir(br.h.frame(), fd)


async def test_a_big_directory_gets_a_short_first_readdirp_batch(br, monkeypatch):
    """READDIRPLUS only where it pays: the kernel asks it at offset 0 only, so in a big
    directory the first batch holds "." and ".." alone (no lookup); later batches,
    plain listings and small directories are full."""
    monkeypatch.setattr(posix_dir, "_BIG_LISTING", 40)
    for i in range(60):
        open(f"{br.a}/f{i:03}", "w").close()
    fd = await opened(br)
    first = await br.xl.readdirp(br.h.frame(), fd, 0, 1 << 16)
    assert [(e.name, e.off, e.entry) for e in first] == [(b".", 1, None), (b"..", 2, None)]
    data, k = pack_plus_batch(first, Timeouts(1.0, 1.0, 0.0), 1 << 16)
    assert k == 0 and len(data) == 2 * ((152 + 1 + 7) & ~7)
    rest = await br.xl.readdirp(br.h.frame(), fd, 2, 1 << 16)
    assert [e.off for e in rest] == list(range(3, 63))
    assert all(e.entry is not None for e in rest)
    assert len(await br.xl.readdir(br.h.frame(), fd, 0, 1 << 16)) == 62
    monkeypatch.setattr(posix_dir, "_BIG_LISTING", 62)  # 62 entries: not big
    assert len(await br.xl.readdirp(br.h.frame(), fd, 0, 1 << 16)) == 62
    await br.xl.releasedir(br.h.frame(), fd)


async def read_all(br, fd, off, size=4096):
    """Every entry from cookie ``off`` on, batch after batch, as (name, cookie)."""
    out = []
    while True:
        batch = await br.xl.readdir(br.h.frame(), fd, off, size)
        if not batch:
            return out
        out += [(e.name, e.off) for e in batch]
        off = batch[-1].off


async def test_a_listing_reads_the_directory_as_its_batches_need_it(br, monkeypatch):
    """The snapshot grows a chunk at a time: a first batch of a big directory does not
    wait for the whole directory to be read, and every cookie handed out still names
    its entry once the rest was read (seekdir back into the first batch)."""
    monkeypatch.setattr(posix_dir, "_CHUNK", 16)
    for i in range(600):
        open(f"{br.a}/f{i:04}", "w").close()
    fd = await opened(br)
    first = await br.xl.readdir(br.h.frame(), fd, 0, 1024)
    listing = fd.ctx[br.xl].entries
    assert listing.it is not None and len(listing.cols) < 100      # not read to its end
    rest = await read_all(br, fd, first[-1].off)
    assert listing.it is None and len(listing.cols) == 602
    whole = [(e.name, e.off) for e in first] + rest
    assert [off for _, off in whole] == list(range(1, 603))
    assert sorted(n for n, _ in whole[2:]) == sorted(os.listdir(os.fsencode(br.a)))
    assert await read_all(br, fd, 5) == whole[5:]
    await br.xl.releasedir(br.h.frame(), fd)


async def test_names_made_and_removed_during_a_listing(br, monkeypatch):
    """POSIX readdir: a name neither made nor removed while the listing runs is listed
    exactly once; made or removed ones at most once."""
    monkeypatch.setattr(posix_dir, "_CHUNK", 16)
    for i in range(400):
        open(f"{br.a}/old{i:04}", "w").close()
    fd = await opened(br)
    first = await br.xl.readdir(br.h.frame(), fd, 0, 2048)
    for i in range(0, 400, 3):
        os.unlink(f"{br.a}/old{i:04}")
    for i in range(300):
        open(f"{br.a}/new{i:04}", "w").close()
    whole = [e.name for e in first] + [n for n, _ in await read_all(br, fd, first[-1].off)]
    assert len(whole) == len(set(whole))
    kept = {b"old%04d" % i for i in range(400) if i % 3}
    assert kept <= set(whole)
    assert set(whole) - kept <= {b".", b".."} | {b"old%04d" % i for i in range(0, 400, 3)} \
        | {b"new%04d" % i for i in range(300)}
    await br.xl.releasedir(br.h.frame(), fd)


async def test_a_rewind_in_the_middle_of_a_listing_starts_it_again(br, monkeypatch):
    """Offset 0 takes a new snapshot, also while the old one was not read to its end
    (the two read through one descriptor's offset: the old one is closed first)."""
    monkeypatch.setattr(posix_dir, "_CHUNK", 16)
    for i in range(300):
        open(f"{br.a}/f{i:04}", "w").close()
    fd = await opened(br)
    for size in (512, 4096):
        await br.xl.readdir(br.h.frame(), fd, 0, size)
        again = await read_all(br, fd, 0, size)
        assert [off for _, off in again] == list(range(1, 303))
        assert {n for n, _ in again[2:]} == set(os.listdir(os.fsencode(br.a)))
    await br.xl.releasedir(br.h.frame(), fd)


async def test_rewinds_while_other_batches_read_the_directory(br, monkeypatch):
    """With io-threads on, chunks are read in worker threads; a rewind waits for a
    chunk being read (the two snapshots would share the descriptor's offset), and
    batches asked meanwhile raise nothing (what they hold is pinned by
    test_a_batch_waiting_behind_a_rewind_comes_from_the_new_snapshot).  A listing
    afterwards is whole."""
    monkeypatch.setattr(posix_dir, "_CHUNK", 8)
    for i in range(200):
        open(f"{br.a}/f{i:04}", "w").close()
    names = set(os.listdir(os.fsencode(br.a)))
    fd = await opened(br)
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(read_all, br, fd, 0, 256)
            nursery.start_soon(br.xl.readdirp, br.h.frame(), fd, 0, 1024)
    whole = await read_all(br, fd, 0, 700)
    assert [off for _, off in whole] == list(range(1, 203))
    assert {n for n, _ in whole[2:]} == names
    await br.xl.releasedir(br.h.frame(), fd)
    assert fd.ctx.get(br.xl) is None


@pytest.mark.parametrize("fop", ["readdir", "readdirp"])
async def test_a_batch_waiting_behind_a_rewind_comes_from_the_new_snapshot(br, monkeypatch,
                                                                           fop):
    """With io-threads on, a batch that waits for a chunk being read in a thread while
    another request rewinds the listing finds the old snapshot closed: it must go on in
    the new one, not take the old one's end for the directory's (an empty READDIR reply
    is the end of the listing)."""
    if br.xl._inline:
        pytest.skip("chunks are read in a thread only with io-threads on")
    monkeypatch.setattr(posix_dir, "_CHUNK", 16)
    for i in range(300):
        open(f"{br.a}/f{i:04}", "w").close()
    fd = await opened(br)
    await br.xl.readdir(br.h.frame(), fd, 0, 512)
    got = {}

    async def far():
        got["far"] = await getattr(br.xl, fop)(br.h.frame(), fd, 200, 4096)

    async def rewind():
        await trio.sleep(0)
        await br.xl.readdir(br.h.frame(), fd, 0, 512)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(far)
        nursery.start_soon(rewind)
    assert len(got["far"]) > 0
    whole = await read_all(br, fd, 0, 700)
    assert len(whole) == 302
