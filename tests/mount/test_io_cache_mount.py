"""performance/io-cache on a real mount (volfiles/io-cache.vol): the case GlusterFS 10.3's
io-cache gets wrong here (stale short reads): appends through one fd read through
another, and truncates down and up, in the bridge's data modes."""
from __future__ import annotations

import os

import pytest

from tests.mountlib import VOLFILES, Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

MODES = {"cached": (), "direct-io": ("--direct-io-mode=yes",),
         "writeback": ("--kernel-writeback-cache",)}


@pytest.fixture(scope="module", params=sorted(MODES))
def mount(request, tmp_path_factory):
    with Mounted(VOLFILES / "io-cache.vol", tmp_path_factory.mktemp("ioc"),
                 *MODES[request.param]) as m:
        yield m


def read_at(fd: int, size: int, offset: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = os.pread(fd, size - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return out


def test_appends_through_one_fd_are_read_through_another(mount):
    path = mount.path("append")
    with open(path, "wb") as f:
        f.write(b"a" * 1000)
    reader = os.open(path, os.O_RDONLY)
    appender = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        expect = b"a" * 1000
        assert read_at(reader, 1 << 20, 0) == expect
        for i in range(40):
            piece = bytes([65 + i % 26]) * (37 + i * 1000)
            os.write(appender, piece)
            expect += piece
            assert os.fstat(reader).st_size == len(expect), i
            assert read_at(reader, 1 << 20, 0) == expect, i
            tail = len(expect) - 10
            assert read_at(reader, 100, tail) == expect[tail:], i
    finally:
        os.close(reader)
        os.close(appender)


def test_truncate_down_and_up_through_another_fd(mount):
    path = mount.path("trunc")
    data = bytes(range(256)) * 1200                      # 300 KiB: three cache pages
    with open(path, "wb") as f:
        f.write(data)
    reader = os.open(path, os.O_RDONLY)
    writer = os.open(path, os.O_RDWR)
    model = bytearray(data)
    try:
        assert read_at(reader, len(data), 0) == data
        for i, size in enumerate((200_000, 5, 140_000, 0, 270_000, 131_072, 131_073)):
            os.ftruncate(writer, size)
            del model[size:]                              # cut: gone
            model.extend(bytes(size - len(model)))        # grown: zeros
            assert read_at(reader, 1 << 20, 0) == bytes(model), size
            piece = bytes([97 + i]) * 3000
            os.pwrite(writer, piece, size // 2)           # and some data again
            model[size // 2:size // 2 + 3000] = piece
            assert read_at(reader, 1 << 20, 0) == bytes(model), size
    finally:
        os.close(reader)
        os.close(writer)
