"""benchmarks.xlator_cost: every workload runs over the stub, alone and under a
translator, and the table reports each one."""
from __future__ import annotations

from benchmarks import xlator_cost


def test_every_workload_runs_alone_and_under_md_cache():
    args = xlator_cost.parse_args(["--calls", "20"])
    table = xlator_cost.measure(args)
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == list(xlator_cost.WORKLOADS)


def test_an_unknown_workload_is_named():
    args = xlator_cost.parse_args(["--calls", "5", "--workloads", "getattr,nope"])
    try:
        xlator_cost.measure(args)
    except SystemExit as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("an unknown workload was accepted")
