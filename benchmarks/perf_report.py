"""Issue 10's side-by-side table: every peer as a share of the raw directory, xlfs's
fast stack against the best other FUSE peer, and the issue's targets, met or not.

    python -m benchmarks.run --peers raw,bindfs,glusterfs,glusterfs-perf,xlfs,xlfs-perf,\
xlfs-fast,xlfs-fast-pt --json /tmp/run.json
    python -m benchmarks.perf_report /tmp/run.json               # print
    python -m benchmarks.perf_report /tmp/run.json --write-docs  # into docs/benchmarks.md

The block it writes in docs/benchmarks.md sits between its own markers (the runner's
block and other sections are left alone).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .report import PeerResult, Run, fmt, speedup
from . import docs_block

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- benchmarks:issue10:begin (python -m benchmarks.perf_report RUN.json --write-docs) -->"
END = "<!-- benchmarks:issue10:end -->"

FAST, FAST_PT = "xlfs-fast", "xlfs-fast-pt"
RAW_TARGET = 0.9
# The passthrough target's rows, by how their names start.
DATA_ROWS = ("seq read", "seq write", "random 4 KiB read")


def _is_xlfs(p: PeerResult) -> bool:
    return p.name == "xlfs" or p.name.startswith("xlfs-")


def _value(p: Optional[PeerResult], row: str):
    if p is None or p.na is not None:
        return None
    return p.metrics.get(row)


def _cell(p: PeerResult, row: str, unit: str, raw: Optional[PeerResult]) -> str:
    if p.na is not None:
        return "n/a"
    if row in p.errors:
        return "error"
    m = p.metrics.get(row)
    if m is None:
        return "-"
    text = fmt(m.value, unit)
    if raw is not None and p is not raw:
        r = speedup(m, _value(raw, row))
        if r is not None:
            text += f" ({r:.2f}x)"
    return text


def best_other(run: Run, row: str) -> tuple[Optional[PeerResult], Optional[float]]:
    """The fastest FUSE peer that is not xlfs on ``row``, and its speed relative to raw
    (None when raw is missing)."""
    best, best_m = None, None
    for p in run.peers:
        if p.name == "raw" or _is_xlfs(p):
            continue
        m = _value(p, row)
        if m is None or m.value <= 0:
            continue
        if best_m is None or speedup(m, best_m) > 1:
            best, best_m = p, m
    return best, best_m


def table(run: Run) -> str:
    raw = run.peer("raw")
    peers = [p for p in run.peers if p.na is None]
    fast = run.peer(FAST_PT) or run.peer(FAST)
    head = ["case", "unit"] + [p.name for p in peers] + ["best other FUSE peer"]
    if fast is not None:
        head.append(f"{fast.name} vs it")
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for row in run.rows:
        unit = run.units[row] + (" (lower is better)" if run.lower_better[row] else "")
        cells = [row, unit] + [_cell(p, row, run.units[row], raw) for p in peers]
        other, other_m = best_other(run, row)
        cells.append(other.name if other else "-")
        if fast is not None:
            r = speedup(_value(fast, row), other_m)
            cells.append("-" if r is None else f"{r:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def targets(run: Run) -> List[str]:
    out = []
    raw = run.peer("raw")
    for name in (FAST_PT, FAST):
        me = run.peer(name)
        if me is None or me.na is not None:
            out.append(f"- {name}: not run.")
            continue
        behind, ahead = [], 0
        for row in run.rows:
            other, other_m = best_other(run, row)
            r = speedup(_value(me, row), other_m)
            if r is None:
                continue
            if r >= 1.0:
                ahead += 1
            else:
                behind.append(f"{row} ({r:.2f}x {other.name})")
        out.append(f"- {name} at least as fast as the best other FUSE peer on every case: "
                   f"{_verdict(not behind)}, ahead or level in {ahead} of "
                   f"{ahead + len(behind)}" + (f"; behind in: {', '.join(behind)}."
                                                if behind else "."))
    pt = run.peer(FAST_PT)
    if raw is None or pt is None or pt.na is not None:
        out.append(f"- Passthrough data cases at least {RAW_TARGET}x raw: cannot tell "
                   f"(raw or {FAST_PT} not run).")
    else:
        parts, ok = [], True
        for row in run.rows:
            if not row.startswith(DATA_ROWS):
                continue
            r = speedup(_value(pt, row), _value(raw, row))
            if r is None:
                continue
            ok = ok and r >= RAW_TARGET
            parts.append(f"{row} {r:.2f}x")
        out.append(f"- {FAST_PT}, data cases at least {RAW_TARGET}x raw: {_verdict(ok)} "
                   f"({'; '.join(parts)}).")
    warm = [row for row in run.rows if row.startswith("readdir") and row.endswith("warm")]
    for name in (FAST_PT, FAST):
        me = run.peer(name)
        if raw is None or me is None or me.na is not None or not warm:
            continue
        r = speedup(_value(me, warm[0]), _value(raw, warm[0]))
        if r is not None:
            out.append(f"- {name}, warm listing (kernel directory cache) at least as fast "
                       f"as raw: {r:.2f}x, {_verdict(r >= 1.0)}.")
    return out


def markdown(run: Run) -> str:
    info = run.info
    head = (f"Measured {info.get('date', '?')}, {info.get('mode', '?')} mode, "
            f"{info.get('rounds', '?')} round(s) (median), on {info.get('machine', '?')}; "
            f"{info.get('kernel', '?')}. Load average (1, 5, 15 min): {info.get('load', '?')}; "
            f"the run took {info.get('duration', '?')}.")
    errors = [f"- {p.name}: n/a: {p.na}" for p in run.peers if p.na is not None]
    for p in run.peers:
        if len(set(p.errors.values())) == 1 and len(p.errors) > 1:
            errors.append(f"- {p.name}, every row shown as error: "
                          f"{next(iter(p.errors.values()))[:300]}")
        else:
            errors += [f"- {p.name}, {row}: error: {e[:300]}" for row, e in p.errors.items()]
    lines = [head, "", "Each cell: the value and, in brackets, its ratio to raw (above 1: "
             "faster than the raw directory).", "", table(run), ""]
    if errors:
        lines += errors + [""]
    lines += ["Targets (issue 10):", ""] + targets(run)
    return "\n".join(lines)


def write_docs(path: Path, body: str) -> None:
    """Put ``body`` between this report's markers in ``path`` (benchmarks.docs_block)."""
    docs_block.write(path, BEGIN, END, body)


def main(argv: Optional[List[str]] = None) -> int:
    from .run import load_run
    p = argparse.ArgumentParser(prog="python -m benchmarks.perf_report",
                                description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path, help="a run saved with benchmarks.run --json")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--docs", type=Path, default=DOCS)
    a = p.parse_args(argv)
    text = markdown(load_run(a.json))
    print(text)
    if a.write_docs:
        write_docs(a.docs, text)
        print(f"wrote {a.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
