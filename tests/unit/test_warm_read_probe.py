"""benchmarks.warm_read_probe on the raw directory (no mount): the rounds run, every read
is timed, and the table has the base's own ratio of 1."""
from __future__ import annotations

import os

from benchmarks import warm_read_probe as probe


def test_raw_rounds_and_table(tmp_path, capsys):
    assert probe.main(["--peers", "raw", "--rounds", "3", "--reads", "40", "--size-mib", "1",
                       "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 rounds of 40 preads each")
    (row,) = [line for line in out if line.startswith("raw ")]
    fields = row.split()
    assert fields[3] == "1.000" and fields[5] in ("1.000", "n/a") and fields[-1] == "-"
    assert list(tmp_path.iterdir()) == []          # the scratch tree is removed


def test_time_preads_counts_every_read(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 8192)
    fd = os.open(f, os.O_RDONLY)
    try:
        wall, cpu, fetched = probe.time_preads(fd, [0, 4096] * 10)
    finally:
        os.close(fd)
    assert wall > 0 and cpu >= 0 and fetched >= 0
