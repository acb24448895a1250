"""benchmarks/cpu_report: a row the kernel sent no request for is flagged, never "met"."""
from __future__ import annotations

from benchmarks import cpu, cpu_cases as K, cpu_report


def _costs(read_counts):
    """xlfs with GETATTR counted and met, and 4 KiB READ at 0.0 µs with ``read_counts``."""
    calls = 1000
    return cpu.costs_of({"xlfs": {
        "getattr": [K.Sample(calls, 5e-6 * calls, 2e-6 * calls, 0.01, {"GETATTR": calls})],
        "read": [K.Sample(calls, 0.0, 0.0, 0.01, read_counts)],
    }})


def test_a_read_row_the_kernel_sent_no_read_for_is_not_met():
    costs = _costs({})                            # counted: the daemon saw nothing
    assert costs["xlfs"]["read"].main_user == 0.0
    assert cpu_report.unsent("read", costs["xlfs"]["read"]) == ["READ"]
    got = cpu_report.targets(costs)
    (read,) = [line for line in got if line.startswith("- READ 4 KiB")]
    assert "met" not in read.replace("not measured", "")
    assert read == ("- READ 4 KiB user CPU <= 10 µs: **not measured**: the kernel sent no "
                    "READ request (0.0 µs is no measurement).")
    assert "- GETATTR user CPU <= 8 µs: 5.0 µs, **met**." in got
    text = cpu_report.render({"peers": ["xlfs"], "rounds": "1"}, costs, {})
    assert "| READ 4 KiB | none sent | - |" in text
    assert "**xlfs, read: the kernel sent no READ request**" in text
    assert "| read | none |" in text                # the per-call table's request mix


def test_other_requests_alone_do_not_count_as_the_rows_own():
    costs = _costs({"GETATTR": 3, "FLUSH": 1})   # a few others, still no READ
    assert cpu_report.unsent("read", costs["xlfs"]["read"]) == ["READ"]
    assert not any("**met**" in line for line in cpu_report.targets(costs)
                   if line.startswith("- READ"))


def test_a_counted_read_and_an_uncounted_run_are_judged_as_before():
    costs = _costs({"READ": 1000})
    assert cpu_report.unsent("read", costs["xlfs"]["read"]) == []
    assert "- READ 4 KiB user CPU <= 10 µs: 0.0 µs, **met**." in cpu_report.targets(costs)
    costs = _costs(None)                          # not counted: per call it is
    assert cpu_report.unsent("read", costs["xlfs"]["read"]) == []


def test_a_median_of_none_is_none():
    """Three rounds, READs in one of them: the median per call is 0, so none."""
    rounds = [K.Sample(1000, 0.0, 0.0, 0.01, counts) for counts in ({"READ": 5}, {}, {})]
    costs = cpu.costs_of({"xlfs": {"read": rounds}})
    assert costs["xlfs"]["read"].per_call == {"READ": 0.0}
    assert cpu_report.unsent("read", costs["xlfs"]["read"]) == ["READ"]


def test_a_pair_row_needs_both_requests():
    c = K.Cost(30.0, 10.0, 50.0, {"MKDIR": 1.0, "LOOKUP": 1.0}, counted=True)
    assert cpu_report.unsent("mkdir-rmdir", c) == ["RMDIR"]
