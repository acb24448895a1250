"""benchmarks.syscalls: reading perf stat's and strace's counts of system calls."""
from __future__ import annotations

from benchmarks.syscalls import parse_perf, parse_summary, render

PERF = """# started on Sun Dec  6 23:00:00 2026

831001,,syscalls:sys_enter_readv,831001,100.00,,
0,,syscalls:sys_enter_ioctl,831001,100.00,,
<not counted>,,syscalls:sys_enter_poll,0,100.00,,
2000,,syscalls:sys_enter_write,831001,100.00,,
"""

STRACE = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.000400           0      2001        12 readv
 30.00    0.000300           0      2000           write
  0.00    0.000000           0         1         1 access
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           0      4002        13 total
"""


def test_perf_counts_by_name_without_zeros_or_uncounted():
    assert parse_perf(PERF) == {"readv": 831001, "write": 2000}


def test_strace_summary_counts_calls_with_their_errors_and_no_total():
    assert parse_summary(STRACE) == {"readv": 2001, "write": 2000, "access": 1}


def test_render_gives_calls_per_call_and_requests():
    text = render({"getattr": {"xlfs": ({"readv": 200, "write": 100}, {"GETATTR": 100},
                                        100)}}, top=5)
    assert "3.00 syscalls/call" in text
    assert "[GETATTR 1.00]" in text
    assert "readv 2.00  write 1.00" in text
