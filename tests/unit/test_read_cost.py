"""benchmarks/read_cost.py: READs, their sizes, in flight and latency from a trace."""
from benchmarks.read_cost import per_name, reads_of

TRACE = """\
# tracer: nop
      python-10 [000] ..... 100.000100: fuse_request_send: connection 45 req 2 opcode 15 (FUSE_READ) len 80
      python-10 [000] ..... 100.000150: fuse_request_send: connection 45 req 4 opcode 3 (FUSE_GETATTR) len 56
      python-10 [000] ..... 100.000200: fuse_request_send: connection 45 req 6 opcode 15 (FUSE_READ) len 80
      python-10 [000] ..... 100.000300: fuse_request_send: connection 45 req 8 opcode 15 (FUSE_READ) len 80
      xlfs-11   [001] ..... 100.000400: fuse_request_end: connection 45 req 2 len 131088 error 0
      xlfs-11   [001] ..... 100.000420: fuse_request_end: connection 45 req 4 len 120 error 0
      xlfs-11   [001] ..... 100.001200: fuse_request_end: connection 45 req 6 len 4112 error 0
      xlfs-11   [001] ..... 100.002300: fuse_request_end: connection 45 req 8 len 16 error 0
"""


def test_reads_of_a_trace():
    r = reads_of(TRACE)
    assert r["reads"] == 3                              # the GETATTR is not a READ
    assert r["sizes"] == {131072: 1, 4096: 1, 0: 1}
    assert r["in_flight_max"] == 3 and r["in_flight_mean"] == 2
    assert (r["us_p10"], r["us_p50"], r["us_p90"]) == (300, 1000, 1000)


def test_cpu_per_read_sums_threads_of_a_name():
    before = {"loop:1": 1.0, "python:2": 0.5, "python:3": 0.25}
    after = {"loop:1": 1.001, "python:2": 0.5005, "python:3": 0.2505, "glfs:4": 0.0}
    assert per_name(before, after, 10) == {"loop": 100, "python": 100}
