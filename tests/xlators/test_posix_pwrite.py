"""storage/posix's _pwrite: the whole buffer in one pwrite when the disk takes it, the
rest after a short write, what got there when a later write fails, the error when
nothing did."""
import errno
import os

import pytest

from xlators.storage import posix_io


class Disk:
    """A fake pwrite: takes at most ``takes[i]`` bytes at call i (or raises it)."""

    def __init__(self, *takes):
        self.takes = list(takes)
        self.calls = []

    def pwrite(self, fd, data, offset):
        data = bytes(data)
        self.calls.append((data, offset))
        take = self.takes.pop(0)
        if isinstance(take, OSError):
            raise take
        return min(take, len(data))


@pytest.fixture
def disk(monkeypatch):
    def make(*takes):
        d = Disk(*takes)
        monkeypatch.setattr(posix_io.os, "pwrite", d.pwrite)
        return d
    return make


def test_the_whole_buffer_in_one_write(disk):
    d = disk(1 << 20)
    assert posix_io._pwrite(3, b"abcdef", 10) == 6
    assert d.calls == [(b"abcdef", 10)]


def test_a_short_write_is_completed(disk):
    d = disk(2, 3, 10)
    assert posix_io._pwrite(3, b"abcdef", 10) == 6
    assert d.calls == [(b"abcdef", 10), (b"cdef", 12), (b"f", 15)]


def test_an_error_after_a_short_write_returns_what_got_there(disk):
    d = disk(4, OSError(errno.ENOSPC, "full"))
    assert posix_io._pwrite(3, b"abcdef", 0) == 4
    assert d.calls == [(b"abcdef", 0), (b"ef", 4)]


def test_an_error_before_anything_raises(disk):
    disk(OSError(errno.ENOSPC, "full"))
    with pytest.raises(OSError) as info:
        posix_io._pwrite(3, b"abcdef", 0)
    assert info.value.errno == errno.ENOSPC


def test_a_write_that_takes_nothing_stops(disk):
    d = disk(0)
    assert posix_io._pwrite(3, b"abcdef", 0) == 0
    assert len(d.calls) == 1


def test_nothing_to_write_is_no_system_call(disk):
    d = disk()
    assert posix_io._pwrite(3, b"", 0) == 0
    assert d.calls == []


def test_a_real_file(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        assert posix_io._pwrite(fd, memoryview(b"0123456789")[2:], 5) == 8
        assert os.pread(fd, 20, 0) == b"\0" * 5 + b"23456789"
    finally:
        os.close(fd)
