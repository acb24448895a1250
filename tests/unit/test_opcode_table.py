"""The opcode table (fuse_bridge/opcodes.py): one row per opcode, and what is derived
from it cannot drift from it."""
import inspect
from pathlib import Path

from fuse_bridge import abi, opcodes, wire_text
from fuse_bridge.opcodes import NO_REPLY, TABLE

ROOT = Path(__file__).resolve().parents[2]
O = abi.Opcode


def test_one_row_per_opcode():
    reserved = {O.CUSE_INIT_BSWAP_RESERVED, O.INIT_BSWAP_RESERVED}
    assert set(TABLE) == {int(o) for o in O} - {int(o) for o in reserved}
    assert len(opcodes.ROWS) == len(TABLE)
    assert [r.opcode for r in opcodes.ROWS] == sorted(r.opcode for r in opcodes.ROWS)


def test_rows_carry_the_kernel_layouts():
    assert TABLE[O.READ].input is abi.READ_IN
    assert TABLE[O.LOOKUP].input is None and TABLE[O.LOOKUP].names == ("name",)
    assert TABLE[O.INIT].input.size == 16                  # the pre-7.36 form
    assert TABLE[O.SETXATTR].input.size == abi.FUSE_COMPAT_SETXATTR_IN_SIZE
    assert TABLE[O.CREATE].out == (abi.ENTRY_OUT, abi.OPEN_OUT)
    assert NO_REPLY == {int(O.FORGET), int(O.BATCH_FORGET), int(O.INTERRUPT),
                        int(O.NOTIFY_REPLY)}
    assert all(r.minor <= abi.KERNEL_MINOR_VERSION for r in opcodes.ROWS)
    assert TABLE[O.COPY_FILE_RANGE_64].minor == 45 and TABLE[O.READDIRPLUS].minor == 21


def test_handlers_are_typed_coroutines_of_client_request_body():
    for r in opcodes.ROWS:
        if r.handler is None:
            continue
        assert inspect.iscoroutinefunction(r.handler), r.opcode
        params = list(inspect.signature(r.handler).parameters)
        assert params == ["c", "req", "body"], (r.opcode, params)
        hints = r.handler.__annotations__
        assert {hints.get("c"), hints.get("req"), hints.get("body")} == \
            {"FuseClient", "Request", "memoryview"}, r.opcode


def test_unserved_rows_are_enosys_in_the_docs():
    table = opcodes.markdown()
    for r in opcodes.ROWS:
        line = next(x for x in table.splitlines() if x.startswith(f"| {r.opcode.name} |"))
        if r.handler is None:
            assert line.endswith("| ENOSYS |" if r.reply else "| ignored |")


def test_dump_decoding_uses_the_table():
    assert wire_text.request_layout(O.WRITE, False, 40) is TABLE[O.WRITE].input
    line = wire_text.describe_request(abi.IN_HEADER.pack(60, O.RENAME2, 2, 1, 0, 0, 1, 0)
                                      + abi.RENAME2_IN.pack(1, 0) + b"a\0b\0")
    assert "name='a'" in line and "newname='b'" in line


def test_architecture_md_table_is_generated():
    doc = (ROOT / opcodes.DOC).read_text(encoding="utf-8")
    assert doc.count(opcodes.BEGIN) == 1 and doc.count(opcodes.END) == 1
    assert opcodes.with_table(doc) == doc, (
        "docs/architecture.md's opcode table is out of date: run "
        "`python -m fuse_bridge.opcodes --write` and commit the result")
