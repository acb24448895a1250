"""Tests for playground/rot-13, through xlfs's public harness (no mount needed).

Run them after installing the plugin (``pip install -e .``): the harness finds the type
the way a mount does, through the "xlfs" entry point.
"""
import pytest

from xlators import FopError, OptionError, default_registry
from xlators.testing import Harness, check_passthrough

from xlfs_rot13 import Rot13, rot13

VOLFILE = """
volume brick
    type storage/memory
    option size 1MB
end-volume

volume rot13
    type playground/rot-13
    subvolumes brick
end-volume
"""


def test_rot13_function():
    assert rot13(b"Hello, World!") == b"Uryyb, Jbeyq!"
    assert rot13(rot13(b"abcXYZ 123")) == b"abcXYZ 123"
    every_byte = bytes(range(256))
    changed = {b for b, r in zip(every_byte, rot13(every_byte)) if b != r}
    assert changed == set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def test_registered_through_the_entry_point():
    reg = default_registry()
    assert reg.get("playground/rot-13") is Rot13, "is the plugin installed (pip install -e .)?"
    assert reg.origin("playground/rot-13") == "rot13"   # the entry point's name


async def test_user_sees_plain_text_brick_holds_rot13():
    h = Harness.stack("playground/rot-13")
    fd = await h.create("/f")
    assert await h.write(fd, b"Hello, World!") == 13
    assert await h.read(fd, 100) == b"Hello, World!"
    # Below the translator, the brick holds the rotated text.
    brick = h.top.child
    assert await brick.readv(h.frame(), fd, 100, 0) == b"Uryyb, Jbeyq!"
    await h.close(fd)
    assert await h.read_file("/f") == b"Hello, World!"


async def test_offsets_and_partial_reads():
    h = Harness.stack("playground/rot-13")
    await h.write_file("/f", b"abcdefghij")
    fd = await h.open("/f")
    await h.write(fd, b"XY", 4)
    assert await h.read(fd, 3, 3) == b"dXY"
    await h.close(fd)


async def test_options_off():
    h = Harness.stack("playground/rot-13", options={
        "playground/rot-13": {"encrypt-write": "off", "decrypt-read": "no"}})
    fd = await h.create("/f")
    await h.write(fd, b"plain")
    assert await h.top.child.readv(h.frame(), fd, 10, 0) == b"plain"
    assert await h.read(fd, 10) == b"plain"


async def test_only_reads_rotated():
    h = Harness.stack("playground/rot-13", options={"playground/rot-13": {"encrypt-write": "off"}})
    fd = await h.create("/f")
    await h.write(fd, b"plain")
    assert await h.read(fd, 10) == b"cynva"


async def test_reconfigure_at_run_time():
    h = Harness.stack("playground/rot-13")
    fd = await h.create("/f")
    await h.write(fd, b"abc")
    h.top.reconfigure({"decrypt-read": "off"})
    assert await h.read(fd, 10) == b"nop"
    with pytest.raises(OptionError, match="'decrypt-read'.*'maybe'"):
        h.top.reconfigure({"decrypt-read": "maybe"})
    assert h.top.opts.decrypt_read is False       # a bad value changes nothing


async def test_errors_pass_through():
    h = Harness.stack("playground/rot-13")
    with pytest.raises(FopError) as info:
        await h.lookup("/missing")
    assert info.value.errno == 2


async def test_from_a_volfile():
    h = Harness.from_volfile(VOLFILE)
    try:
        assert type(h.top) is Rot13
        await h.write_file("/g", b"Graph")
        assert await h.read_file("/g") == b"Graph"
    finally:
        h.fini()


def test_needs_exactly_one_subvolume():
    with pytest.raises(ValueError, match="needs 1 subvolumes, has 0"):
        Rot13("rot13", [])


def test_bad_option_value_names_volume_option_and_value():
    leaf = Harness.stack().top
    with pytest.raises(OptionError, match=r"volume 'r': option 'encrypt-write': invalid value "
                                          r"'sometimes'"):
        Rot13("r", [leaf], {"encrypt-write": "sometimes"})


async def test_every_other_fop_passes_through():
    checked = await check_passthrough(Rot13)
    assert "readv" not in checked and "writev" not in checked
    assert "lookup" in checked and "create" in checked
