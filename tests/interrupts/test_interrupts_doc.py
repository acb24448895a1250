"""docs/interrupts.md covers the API, the states, both strategies and both flags, and its
table is the output of benchmarks/signal_to_exit.py."""
from __future__ import annotations

import re
from pathlib import Path

import fuse_bridge.interrupt as api

DOC = Path(__file__).resolve().parents[2] / "docs" / "interrupts.md"


def test_documents_the_api():
    text = DOC.read_text()
    for name in ["interrupt_record_new", "interrupt_record_insert", "interrupt_finish_fop",
                 "interrupt_finish_interrupt", "DataRef", "frame.on_interrupt",
                 "frame.cancel_scope", "abandon_on_cancel", "cancel_blocked"]:
        assert name in text, name
        assert name.split(".")[0] in dir(api) or "." in name or name in (
            "abandon_on_cancel", "cancel_blocked"), name
    for state in api.InterruptState:
        assert f"`{state.name}`" in text, state
    for flag in ["--fuse-flush-handle-interrupt[=BOOL]",
                 "--fuse-setlk-handle-interrupt[=BOOL]",
                 "-o fuse-flush-handle-interrupt=yes", "option.flush_handle_interrupt"]:
        assert flag in text, flag
    for line in ["interrupt handler triggered", "no handler found", "ENOSYS", "EAGAIN",
                 "N|1", "sync=False", "sync=True", "ENOENT"]:
        assert line in text, line
    assert len(re.findall(r"^\d\. ", text, re.M)) >= 7 + 4     # 7 race orders, 4 cases


def test_the_table_is_the_benchmarks_output():
    text = DOC.read_text()
    start = text.index("<!-- signal_to_exit output -->")
    end = text.index("<!-- end of signal_to_exit output -->")
    table = text[start:end]
    assert "python -m benchmarks.signal_to_exit" in table
    assert "| operation | flag | signal | without the flag | with the flag |" in table
    rows = [r for r in table.splitlines()
            if r.startswith("| ") and not r.startswith("| operation")]
    assert len(rows) == 16
    for op in ["close()", "fcntl(F_SETLKW)", "flock(LOCK_EX)", "write()"]:
        assert sum(op in r for r in rows) == 4, op
