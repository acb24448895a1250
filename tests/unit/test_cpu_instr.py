"""benchmarks/cpu_instr: reading callgrind's dumps and callgrind_annotate's output, the
instructions per request (idle background and helper requests subtracted), the report,
and how a peer's command line is wrapped in valgrind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import cpu_instr, cpu_instr_report as R
from benchmarks.peers import BindfsPeer

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  python -m fuse_bridge.cli
part: 3

desc: Trigger: dump

positions: line
events: Ir Dr
summary: 999 5

fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 7

totals: 123456 789
"""

ANNOTATE = """--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
3,000,000 (300.0%)  /build/Python/ceval.c:_PyEval_EvalFrameDefault'2 [/usr/lib/libpython3.11.so.1.0]
1,000,000 (100.0%)  /build/Python/ceval.c:_PyEval_EvalFrameDefault [/usr/lib/libpython3.11.so.1.0]
  400,000 (40.00%)  /build/Include/object.h:_PyEval_EvalFrameDefault'2
  100,000 (10.00%)  /build/Modules/posixmodule.c:os_fstat [/usr/lib/libpython3.11.so.1.0]
   50,000 ( 5.00%)  /build/Objects/longobject.c:k_mul [/usr/lib/libpython3.11.so.1.0]
   20,000 ( 2.00%)  ???:0x0000000004936718 [???]
"""


def test_totals_reads_the_events_of_a_dump(tmp_path: Path):
    p = tmp_path / "cg.out.3"
    p.write_text(DUMP)
    assert R.totals(p) == {"Ir": 123456, "Dr": 789}            # totals: beats summary:
    p.write_text(DUMP.replace("totals: 123456 789\n", ""))
    assert R.totals(p) == {"Ir": 999, "Dr": 5}                  # summary: as the fallback
    p.write_text("not a dump\n")
    with pytest.raises(ValueError, match="not a callgrind dump"):
        R.totals(p)


CALLS_DUMP = """events: Ir
fn=(1) _PyEval_EvalFrameDefault
cfn=(2) _PyThreadState_PopFrame
calls=3 0x1
5 9
cfn=(3) readv
calls=1 0x2
5 4
fn=(4) _PyEval_EvalFrameDefault'2
cfn=(2)
calls=2 0x1
5 6
cfn=(5) _PyThreadState_PopFrame'2
calls=4 0x1
5 6
totals: 25
"""


def test_call_counts_follow_compressed_names_and_fold_recursion_levels(tmp_path: Path):
    p = tmp_path / "cg.out.1"
    p.write_text(CALLS_DUMP)
    assert R.call_counts(p, ["_PyThreadState_PopFrame", "readv", "write"]) == {
        "_PyThreadState_PopFrame": 3 + 2 + 4, "readv": 1, "write": 0}


def test_self_cost_sums_a_functions_rows_and_inclusive_skips_nested_levels():
    own = R.top_functions(ANNOTATE, 10, inclusive=False)
    assert own[0] == (3_400_000 + 1_000_000, "_PyEval_EvalFrameDefault [libpython3.11.so.1.0]")
    assert (100_000, "os_fstat [libpython3.11.so.1.0]") in own
    assert (20_000, "???:0x0000000004936718 [???]") in own
    assert not any("PROGRAM TOTALS" in name for _, name in own)
    inc = R.top_functions(ANNOTATE, 2, inclusive=True)
    # the outermost row (100%), not the recursion level's 300% nor a sum of the rows
    assert inc == [(1_000_000, "_PyEval_EvalFrameDefault [libpython3.11.so.1.0]"),
                   (100_000, "os_fstat [libpython3.11.so.1.0]")]


def _samples():
    return {"xlfs": {
        # 1000 GETATTRs: 60 M Ir, of which 2 s x 1 M Ir/s idle background
        "getattr": [R.InstrSample(1000, 62_000_000, 2.0, {"GETATTR": 1000},
                                  idle_ir=2_000_000)],
        # each stat: one LOOKUP plus half a GETATTR (at 60 k): 100 k Ir per LOOKUP
        "lookup": [R.InstrSample(1000, 130_000_000, 2.0, {"LOOKUP": 1000, "GETATTR": 500})],
        # counted, but the kernel sent no READ at all
        "read": [R.InstrSample(500, 1_000_000, 1.0, {"FLUSH": 1})],
    }}


def test_costs_are_per_request_with_idle_and_helper_requests_subtracted():
    costs = R.costs_of(_samples())["xlfs"]
    assert costs["getattr"].main_user == pytest.approx(60_000)
    assert costs["lookup"].user == pytest.approx(130_000)       # per call, in all
    assert costs["lookup"].main_user == pytest.approx(100_000)  # per LOOKUP
    assert costs["lookup"].derived


def test_spread_is_the_largest_relative_range_over_rounds():
    s = _samples()
    s["xlfs"]["getattr"].append(R.InstrSample(1000, 66_000_000, 2.0, {"GETATTR": 1000},
                                              idle_ir=2_000_000))      # 64 k against 60 k
    assert R.spread(s) == {"xlfs": (pytest.approx(4 / 62), "getattr")}


def test_the_report_shows_kir_per_request_and_flags_a_request_never_sent(tmp_path: Path):
    costs = R.costs_of(_samples())
    top = {"xlfs": {"inclusive": [(6_000_000, "os_fstat [libpython3.11.so.1.0]")],
                    "self": [(3_000_000, "k_mul [libpython3.11.so.1.0]")]}}
    text = R.render({"peers": ["xlfs", "bindfs"], "idle": {"xlfs": 1e6}}, costs,
                    {"bindfs": "no bindfs"}, top, {"xlfs": 1000})
    assert "| getattr | GETATTR | 60.0 |" in text
    assert "| lookup | LOOKUP | 100.0* |" in text
    assert "| read | READ 4 KiB | none sent |" in text
    assert "- bindfs: n/a: no bindfs" in text
    assert "xlfs 1000.0 kIr/s" in text
    assert "| lookup | 1 LOOKUP + 0.5 GETATTR | 130.0 |" in text
    assert "| 6.0 | `os_fstat [libpython3.11.so.1.0]` | 3.0 | `k_mul [libpython3.11.so.1.0]` |" \
        in text
    docs = tmp_path / "b.md"
    docs.write_text(f"# B\n\nbefore\n\n{R.BEGIN}\nold\n{R.END}\n\nafter\n")
    R.write_docs(docs, "new table")
    assert docs.read_text() == f"# B\n\nbefore\n\n{R.BEGIN}\nnew table\n{R.END}\n\nafter\n"


def test_a_peer_runs_under_callgrind_uninstrumented_with_a_fixed_hash_seed(tmp_path: Path):
    inner = BindfsPeer()
    peer = cpu_instr.Callgrind(inner, tmp_path / "cg")
    argv = peer.argv(tmp_path / "b", tmp_path / "m", tmp_path / "l", (0, 0, 0), tmp_path)
    n = argv.index("bindfs")
    assert argv[:n] == ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={tmp_path / 'cg'}"]
    assert argv[n:] == inner.argv(tmp_path / "b", tmp_path / "m", tmp_path / "l",
                                  (0, 0, 0), tmp_path)
    assert peer.env()["PYTHONHASHSEED"] == "0"
    assert peer.name == "bindfs" and peer.ready_timeout > BindfsPeer.ready_timeout


def test_measure_enters_around_just_around_the_loop(tmp_path: Path):
    from contextlib import contextmanager

    from benchmarks import cpu_cases as K
    done, seen = [], []

    @contextmanager
    def around():
        seen.append(len(done))
        yield
        seen.append(len(done))

    w = K.Workload("calls", "GETATTR", "attr0", lambda ctx, i: done.append(i),
                   K.WORKLOADS["lookup-missing"].setup, repeatable=True)
    s = K.measure(w, str(tmp_path), 1, None, calls=30, settle=False, around=around)
    assert s.calls == 30
    assert seen == [30, 60]          # after the 30 warm-up calls, before clean-up


def test_a_paced_workload_pauses_then_makes_the_same_call(monkeypatch):
    from benchmarks import cpu_cases as K
    events = []
    monkeypatch.setattr(cpu_instr.time, "sleep", lambda s: events.append(("sleep", s)))
    w = K.Workload("calls", "GETATTR", "attr0", lambda ctx, i: events.append(("call", i)))
    assert cpu_instr.paced(w, 0) is w
    p = cpu_instr.paced(w, 0.005)
    p.call(None, 7)
    assert events == [("sleep", 0.005), ("call", 7)]
    assert (p.name, p.opcode, p.profile, p.setup) == (w.name, w.opcode, w.profile, w.setup)


def _fake_vgdb(tmp_path: Path, monkeypatch, status: int = 0) -> Path:
    log = tmp_path / "vgdb.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "vgdb"
    script.write_text(f'#!/bin/sh\necho "ppid=$PPID $*" >> {log}\nexit {status}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def test_vgdb_runs_from_the_shell_started_with_the_control(tmp_path: Path, monkeypatch):
    # A vgdb forked by the benchmark mid-workload would inherit the workload's open
    # files on the mount and close them at exec: one FLUSH to the daemon per file.
    log = _fake_vgdb(tmp_path, monkeypatch)
    with cpu_instr.Control(4242, tmp_path / "cg") as control:
        shell = control._shell.pid
        control.command("instrumentation on", "zero")
        control.command("dump")
    assert log.read_text().splitlines() == [
        f"ppid={shell} --pid=4242 -c instrumentation on -c zero",
        f"ppid={shell} --pid=4242 -c dump"]
    assert shell != os.getpid()


def test_a_failed_vgdb_command_is_an_error_naming_it(tmp_path: Path, monkeypatch):
    _fake_vgdb(tmp_path, monkeypatch, status=3)
    with cpu_instr.Control(4242, tmp_path / "cg") as control:
        with pytest.raises(RuntimeError, match="vgdb dump: vgdb-status: 3"):
            control.command("dump")
