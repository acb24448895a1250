"""debug/trace, debug/error-gen and debug/delay-gen need FLUSH (``needs_flush``) exactly
when their options make flush matter to them: trace when it traces flush and its lines
go somewhere, error-gen when flush is among the fops it may fail, delay-gen when flush is
among the fops it may delay.  A reconfigure changes the answer; the graph's answer
(``Graph.needs_flush``, which the FUSE bridge asks) follows."""
from __future__ import annotations

from typing import Mapping

import pytest

from xlators.core.graph import Graph
from xlators.testing import Harness


def needs(type_: str, options: Mapping[str, str]) -> bool:
    return Harness.stack(type_, options={type_: dict(options)}).top.needs_flush


@pytest.mark.parametrize("options,expected", [
    ({}, True),                                           # every fop, to the log
    ({"include-ops": "flush"}, True),
    ({"include-ops": "create,lookup"}, False),
    ({"include": "write,FLUSH"}, True),                   # aliases and any case
    ({"exclude-ops": "flush"}, False),
    ({"exclude-ops": "lookup,writev"}, True),
    ({"log-file": "no"}, False),                          # nobody sees a line
    ({"log-file": "no", "log-history": "on"}, True),
    ({"log-file": "/dev/null", "include-ops": "flush"}, True),
])
def test_trace_needs_flush_when_it_traces_flush(options, expected):
    assert needs("debug/trace", options) is expected


@pytest.mark.parametrize("options,expected", [
    ({}, False),                                          # failure unset: never fails
    ({"failure": "0", "enable": "flush"}, False),
    ({"failure": "100"}, True),                           # enable unset: every fop
    ({"failure": "10%", "enable": "flush"}, True),
    ({"failure": "100", "enable": "writev,unlink"}, False),
    ({"failure": "100", "error-fops": "write,flush"}, True),
    ({"failure": "100", "enable": "nosuchfop"}, False),   # ignored: nothing enabled
])
def test_error_gen_needs_flush_when_it_may_fail_flush(options, expected):
    assert needs("debug/error-gen", options) is expected


@pytest.mark.parametrize("options,expected", [
    ({}, True),                                           # 10% of every fop
    ({"enable": "flush"}, True),
    ({"enable": "readv,writev"}, False),
    ({"delay-percentage": "0", "enable": "flush"}, False),
    ({"delay-percentage": "100%", "delay-duration": "0", "enable": "flush"}, True),
])
def test_delay_gen_needs_flush_when_it_may_delay_flush(options, expected):
    assert needs("debug/delay-gen", options) is expected


@pytest.mark.parametrize("type_,without,with_flush", [
    ("debug/trace", {"include-ops": "lookup"}, {"include-ops": "lookup,flush"}),
    ("debug/error-gen", {"failure": "100", "enable": "unlink"},
     {"failure": "100", "enable": "unlink,flush"}),
    ("debug/delay-gen", {"enable": "unlink"}, {"enable": "flush"}),
])
def test_reconfigure_changes_the_answer(type_, without, with_flush):
    h = Harness.stack(type_, options={type_: dict(without)})
    assert h.top.needs_flush is False
    h.top.reconfigure(with_flush)
    assert h.top.needs_flush is True
    h.top.reconfigure(without)
    assert h.top.needs_flush is False
    # the class still says it may need it (docs, xlfsctl xlators)
    assert type(h.top).needs_flush is True


def test_the_graph_asks_the_instances():
    text = ("volume mem\n type storage/memory\n option size 0\nend-volume\n"
            "volume errors\n type debug/error-gen\n option failure 100\n"
            " option enable unlink\n subvolumes mem\nend-volume\n"
            "volume trace\n type debug/trace\n option include-ops lookup\n"
            " subvolumes errors\nend-volume\n")
    g = Graph.from_text(text)
    assert g.needs_flush(locks=False) is False and g.flush_needed_by(locks=False) == []
    g["errors"].reconfigure({"failure": "100", "enable": "flush"})
    assert g.needs_flush(locks=False) is True
    assert g.flush_needed_by(locks=False) == [
        "volume 'errors' (debug/error-gen): needs flush"]
