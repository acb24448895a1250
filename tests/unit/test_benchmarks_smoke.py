"""The benchmark harness must not rot: import every module, run each case on a plain
temporary directory (the raw peer) with tiny sizes, and render the report.  No timing is
asserted: this only proves the code runs."""
import importlib.util
import os

import pytest

from benchmarks import cases as C
from benchmarks import peers, perf_report, report, run


def test_every_case_runs_on_a_plain_directory(tmp_path):
    peer = peers.RawPeer()
    assert peer.unavailable() is None
    result = report.PeerResult("raw")
    with peer.session(tmp_path, C.PROFILES["cached"], limit=60) as mount:
        for case in C.all_cases(C.TINY):
            metrics = case.fn(mount.directory, C.TINY, mount.env)
            assert [m.case for m in metrics] == list(case.metrics)
            for m in metrics:
                assert m.value > 0 and m.unit
                result.metrics[m.case] = m
        # cases delete their scratch directories; only the shared data files stay
        assert set(os.listdir(mount.directory)) <= {C.SEQ_NAME, C.RANDOM_NAME, "getattr.dat"}
    rows = [row for c in C.all_cases(C.TINY) for row in c.metrics]
    units = {r: result.metrics[r].unit for r in rows}
    lower = {r: not result.metrics[r].higher_is_better for r in rows}
    missing = report.PeerResult("glusterfs", na="not installed")
    measured = report.Run(rows, units, lower, [result, missing],
                          dict(report.machine_info(), mode="tiny"))
    text = report.markdown(measured)
    assert "| small-file create |" in text and "n/a: not installed" in text
    saved = tmp_path / "run.json"
    run.save_run(saved, measured)
    assert report.markdown(run.load_run(saved)) == text  # --render gives the same report

    issue10 = perf_report.markdown(measured)
    assert "Targets (issue 10)" in issue10 and "xlfs-fast-pt: not run" in issue10

    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nprose\n")
    report.write_docs(doc, text)
    report.write_docs(doc, text)  # rewriting replaces the block, never appends a second
    written = doc.read_text()
    assert written.count(report.END) == 1 and written.startswith("# Benchmarks\n\nprose")
    perf_report.write_docs(doc, issue10)
    perf_report.write_docs(doc, issue10)       # its own block, next to the runner's
    written = doc.read_text()
    assert written.count(perf_report.END) == 1 and written.count(report.END) == 1


def test_runner_rejects_unknown_names_without_mounting(capsys):
    assert run.main(["--peers", "nosuchpeer"]) == 2
    assert run.main(["--cases", "nosuchcase"]) == 2


def test_unavailable_peers_say_why():
    for name, cls in run.PEERS.items():
        why = cls().unavailable()
        assert why is None or isinstance(why, str) and why


def test_passthrough_module_imports():
    if importlib.util.find_spec("pyfuse3") is None:
        pytest.skip("pyfuse3 not installed (the bench extra)")
    from benchmarks import pyfuse3_passthrough
    assert pyfuse3_passthrough.parse_args(["a", "b"]).attr_timeout == 1.0


def test_a_peer_past_its_hard_limit_is_an_error_not_the_end_of_the_run():
    """A session that raises TimeoutError when it ends (its watchdog aborted the mount)
    marks that peer's rows as errors; the run and the other peers' results go on."""
    from contextlib import contextmanager

    @contextmanager
    def session():
        yield "m"
        raise TimeoutError("x: hard limit of 1 s reached; connection aborted")

    out = run.Collector(["x"])
    with run._reported("x", session(), out, ["row"]) as m:
        assert m == "m"
    assert "hard limit" in out.results["x"].errors["row"]


def test_cpu_workloads_run_on_a_plain_directory(tmp_path):
    """benchmarks.cpu: every workload runs (here against this process's own CPU, with no
    FUSE connection to count), the attribution subtracts the helpers' requests, and the
    report goes into its own block of the docs."""
    from benchmarks import cpu, cpu_cases as K, cpu_report
    samples = {}
    for name, w in K.WORKLOADS.items():
        s = K.measure(w, str(tmp_path), os.getpid(), None, calls=20, settle=False)
        assert s.calls == 20 and s.counts is None and s.wall > 0
        assert os.listdir(tmp_path) == []          # the scratch directory is gone
        samples[name] = [s]
    # Counted as the kernel counts on a mount with the entry timeout 0: a create is a
    # LOOKUP of the missing name, then the CREATE, then a GETATTR of the directory.
    mixes = {"getattr": {"GETATTR": 20}, "lookup": {"LOOKUP": 20},
             "lookup-missing": {"LOOKUP": 20}, "create": {"LOOKUP": 20, "CREATE": 20,
                                                          "GETATTR": 20}}
    for name, counts in mixes.items():
        s = samples[name][0]
        samples[name] = [K.Sample(20, 20e-6 * 10, 20e-6 * 2, s.wall, counts)]
    samples["lookup"][0].user = 20e-6 * 12
    samples["create"][0].user = 20e-6 * (10 + 10 + 30)   # GETATTR + LOOKUP- + CREATE
    costs = cpu.costs_of({"xlfs": samples})
    assert costs["xlfs"]["getattr"].main_user == pytest.approx(10)
    assert costs["xlfs"]["lookup"].main_user == pytest.approx(12)
    assert costs["xlfs"]["create"].main_user == pytest.approx(30)
    assert costs["xlfs"]["create"].derived
    text = cpu_report.render({"peers": ["xlfs"], "rounds": "1"}, costs, {"bindfs": "absent"})
    assert "| CREATE * | 30.0 |" in text and "bindfs**: n/a: absent" in text
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nprose\n")
    cpu_report.write_docs(doc, text)
    cpu_report.write_docs(doc, text)
    written = doc.read_text()
    assert written.count(cpu_report.END) == 1 and written.startswith("# Benchmarks\n\nprose")
