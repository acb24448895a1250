"""playground/rot-13: rot-13 the data of writes going down and of reads coming up.

GlusterFS's teaching translator (xlators/playground/rot-13), carried over: letters A-Z
and a-z rotate by 13, every other byte is left alone.  With both options on (the
default) the brick stores rot-13 text and users read plain text.  Not encryption.

    volume rot13
        type playground/rot-13
        option encrypt-write on
        option decrypt-read on
        subvolumes brick
    end-volume
"""
from __future__ import annotations

from xlators import Option, Translator

_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = b"abcdefghijklmnopqrstuvwxyz"
#: bytes.translate table: one C-speed pass over the buffer, no per-byte Python code.
_TABLE = bytes.maketrans(_UPPER + _LOWER,
                         _UPPER[13:] + _UPPER[:13] + _LOWER[13:] + _LOWER[:13])


def rot13(data: bytes) -> bytes:
    """rot-13 of the ASCII letters in ``data`` (it is its own inverse)."""
    return bytes(data).translate(_TABLE)


class Rot13(Translator):
    """rot-13 the data of writes going down and of reads coming up."""

    type = "playground/rot-13"
    summary = "rot-13 on file data: written data is rotated, read data is rotated back."
    children_range = (1, 1)   # GlusterFS: "rot13 should have exactly one child"
    options = (
        Option.bool("encrypt-write", default=True,
                    description="Apply rot-13 to the data of every write before it goes "
                                "to the subvolume."),
        Option.bool("decrypt-read", default=True,
                    description="Apply rot-13 to the data every read returns from the "
                                "subvolume."),
    )

    # Only the two data fops change; everything else (lookup, create, getattr, ...)
    # passes to the child through the base class's defaults.

    async def readv(self, frame, fd, size, offset, flags=None):
        data = await self.child.readv(frame, fd, size, offset, flags)
        if self.opts.decrypt_read:
            return rot13(data)
        return data

    async def writev(self, frame, fd, data, offset, flags=None):
        if self.opts.encrypt_write:
            data = rot13(data)
        return await self.child.writev(frame, fd, data, offset, flags)
