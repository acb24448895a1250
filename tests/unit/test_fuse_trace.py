"""benchmarks/fuse_trace.py: the send and end events of a trace, and replies matched to
their requests."""
from benchmarks.fuse_trace import Reply, TraceEvent, events, replies

TRACE = """\
# tracer: nop
# entries-in-buffer/entries-written: 5/5   #P:2
      ls-10 [000] ..... 100.000000: fuse_request_send: connection 45 req 2 opcode 27 (FUSE_OPENDIR) len 48
      ls-10 [000] ..... 100.000100: fuse_request_send: connection 45 req 4 opcode 1 (FUSE_LOOKUP) len 45
      xlfs-11 [001] d.... 100.000300: fuse_request_end: connection 45 req 4 len 16 error -2
      xlfs-11 [001] ..... 100.000400: fuse_request_end: connection 45 req 2 len 32 error 0
      xlfs-11 [001] ..... 100.000500: fuse_request_end: connection 45 req 8 len 16 error 0
"""


def test_events_of_a_trace():
    assert list(events(TRACE)) == [
        TraceEvent("send", 2, 27, 100.0, 48), TraceEvent("send", 4, 1, 100.0001, 45),
        TraceEvent("end", 4, None, 100.0003, 16), TraceEvent("end", 2, None, 100.0004, 32),
        TraceEvent("end", 8, None, 100.0005, 16)]


def test_replies_pair_by_unique_in_reply_order():
    # the reply to req 8, whose request is not in the trace, is left out
    assert list(replies(TRACE)) == [Reply(1, 100.0001, 100.0003, 16),
                                    Reply(27, 100.0, 100.0004, 32)]


def test_a_request_without_a_reply_is_left_out():
    text = TRACE.splitlines()[2]
    assert [e.kind for e in events(text)] == ["send"] and list(replies(text)) == []
