"""The pass-through defaults of Translator: a fop a translator does not override winds to
its first child without a coroutine of its own (the request path's cost), and behaves as
an awaited wind would; Attr.from_stat gives what the constructor gives."""
import errno
import os

import pytest

from xlators import Translator
from xlators.core.errors import FopError
from xlators.core.frame import Frame
from xlators.core.inode import Fd, Inode
from xlators.core.types import Attr


def step(coro):
    """Run a coroutine that never suspends; its value, or its exception raised."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("suspended")


class Leaf(Translator):
    type = "test/leaf"

    async def getattr(self, frame, inode, fd=None):
        return Attr(ino=inode.ino, size=7 if fd is None else 8)

    async def readv(self, frame, fd, size, offset, flags=None):
        raise FopError(errno.EIO)


class Middle(Translator):
    type = "test/middle"


def test_a_pass_through_fop_hands_back_the_childs_coroutine():
    leaf = Leaf("leaf")
    top = Middle("mid2", [Middle("mid1", [leaf])])
    inode = Inode(2, 42)
    coro = top.getattr(Frame(), inode)
    # no coroutine of the two middle translators in between: the leaf's own
    assert coro.cr_code is Leaf.getattr.__code__
    assert step(coro).size == 7
    assert step(top.getattr(Frame(), inode, fd=Fd(inode))).size == 8   # keywords pass too
    with pytest.raises(FopError) as err:
        step(top.readv(Frame(), Fd(inode), 4096, 0))
    assert err.value.errno == errno.EIO


def test_a_leaf_without_the_fop_fails_enosys_when_awaited_or_succeeds_for_callbacks():
    lone = Middle("lone")
    with pytest.raises(FopError) as err:
        step(lone.getattr(Frame(), Inode(2, 42)))
    assert err.value.errno == errno.ENOSYS
    assert step(lone.release(Frame(), Fd(Inode(2, 42)))) is None
    assert step(lone.forget(Frame(), Inode(2, 42))) is None


def test_attr_from_stat_is_the_constructor():
    st = os.stat(__file__)
    built = Attr(st.st_ino, st.st_size, st.st_blocks, st.st_atime_ns, st.st_mtime_ns,
                 st.st_ctime_ns, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
                 st.st_blksize)
    assert Attr.from_stat(st) == built
    assert Attr.from_stat(st, 99).ino == 99 and Attr.from_stat(st, 99).size == st.st_size


class RenameLeaf(Translator):
    """A child whose optional parameter has a default of its own (as dht's rename)."""
    type = "test/rename-leaf"

    async def rename(self, frame, oldloc, newloc, flags=0):
        return flags


def test_an_optional_parameter_not_given_keeps_the_childs_default():
    from xlators.debug.io_stats import IoStats
    for top in (Middle("mid", [RenameLeaf("leaf")]), IoStats("stats", [RenameLeaf("leaf")])):
        assert step(top.rename(Frame(), "a", "b")) == 0          # not None: not given
        assert step(top.rename(Frame(), "a", "b", None)) is None
        assert step(top.rename(Frame(), "a", "b", flags=1)) == 1
        with pytest.raises(TypeError):
            top.rename(Frame(), "a")                            # a missing argument


def test_generated_fops_have_the_tables_signature():
    import inspect
    from xlators.debug.io_stats import IoStats
    for cls in (Translator, IoStats):
        assert str(inspect.signature(cls.getattr)) == "(self, frame, inode, fd=None)"
        assert str(inspect.signature(cls.lookup)) == "(self, frame, loc)"
