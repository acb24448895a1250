"""benchmarks/list_cost.py: READDIR and READDIRPLUS of a listing from a trace."""
from benchmarks.list_cost import listing_requests, timeline

TRACE = """\
# tracer: nop
      ls-10 [000] ..... 100.000000: fuse_request_send: connection 45 req 2 opcode 27 (FUSE_OPENDIR) len 48
      xlfs-11 [001] ..... 100.000100: fuse_request_end: connection 45 req 2 len 32 error 0
      ls-10 [000] ..... 100.000200: fuse_request_send: connection 45 req 4 opcode 44 (FUSE_READDIRPLUS) len 80
      xlfs-11 [001] ..... 100.300200: fuse_request_end: connection 45 req 4 len 32656 error 0
      ls-10 [000] ..... 100.300300: fuse_request_send: connection 45 req 6 opcode 28 (FUSE_READDIR) len 80
      xlfs-11 [001] ..... 100.310300: fuse_request_end: connection 45 req 6 len 32784 error 0
      ls-10 [000] ..... 100.310400: fuse_request_send: connection 45 req 8 opcode 28 (FUSE_READDIR) len 80
      xlfs-11 [001] ..... 100.311400: fuse_request_end: connection 45 req 8 len 16 error 0
"""


def test_listing_requests_of_a_trace():
    r = listing_requests(TRACE)
    assert set(r) == {"READDIR", "READDIRPLUS"}          # the OPENDIR is not counted
    assert r["READDIRPLUS"] == {"count": 1, "entries": [204], "ms": [300.0]}
    assert r["READDIR"] == {"count": 2, "entries": [1024, 0], "ms": [10.0, 1.0]}


def test_timeline_of_a_trace():
    assert timeline(TRACE) == ("OPENDIR@0.0+0.1 READDIRPLUS@0.2+300.0 READDIR@300.3+10.0 "
                               "READDIR@310.4+1.0")
    assert timeline("# tracer: nop\n") == ""
