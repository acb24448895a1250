"""Turning measurements into a markdown table, target verdicts and a bar chart, and writing
them into docs/benchmarks.md between markers.

Ratios are "how many times faster xlfs is" (above 1: xlfs wins): for rates, xlfs divided
by the other; for latencies, the other divided by xlfs.  "xlfs/raw" is the share of the
raw directory's speed that xlfs reaches, by the same rule.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

from .cases import Metric
from . import docs_block

BEGIN = "<!-- benchmarks:results:begin (written by python -m benchmarks.run --write-docs) -->"
END = "<!-- benchmarks:results:end -->"

GETATTR_ROW = "GETATTR loop (fstat, caching off)"
GETATTR_TARGET = 1.5


@dataclass
class PeerResult:
    name: str
    description: str = ""
    version: str = ""
    na: Optional[str] = None                       # the whole peer is n/a: why
    metrics: Dict[str, Metric] = field(default_factory=dict)
    errors: Dict[str, str] = field(default_factory=dict)  # metric row -> error text


@dataclass
class Run:
    rows: List[str]                                # metric rows in order
    units: Dict[str, str]
    lower_better: Dict[str, bool]
    peers: List[PeerResult]
    info: Dict[str, str]
    interrupted: bool = False

    def peer(self, name: str) -> Optional[PeerResult]:
        return next((p for p in self.peers if p.name == name), None)


# -- numbers ---------------------------------------------------------------------------

def fmt(value: float, unit: str) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return "-"
    if unit == "us":
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def speedup(mine: Optional[Metric], theirs: Optional[Metric]) -> Optional[float]:
    """How many times faster ``mine`` is than ``theirs`` (None if either is missing)."""
    if mine is None or theirs is None or mine.value <= 0 or theirs.value <= 0:
        return None
    if mine.higher_is_better:
        return mine.value / theirs.value
    return theirs.value / mine.value


def _ratio(x: Optional[float], pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{x * 100:.0f}%" if x >= 0.1 else f"{x * 100:.1f}%"
    return f"{x:.2f}x"


def _cell(p: PeerResult, row: str, unit: str) -> str:
    if p.na is not None:
        return "n/a"
    if row in p.errors:
        return "error"
    m = p.metrics.get(row)
    return fmt(m.value, unit) if m else "-"


# -- the table ---------------------------------------------------------------------------

def table(run: Run) -> str:
    peers = run.peers
    xlfs, raw = run.peer("xlfs"), run.peer("raw")
    others = [p for p in peers if p.name not in ("xlfs", "raw")]
    head = ["case", "unit"] + [p.name for p in peers]
    if xlfs and raw:
        head.append("xlfs/raw")
    head += [f"xlfs vs {p.name}" for p in others if xlfs]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for row in run.rows:
        unit = run.units[row]
        cells = [row, unit + (" (lower is better)" if run.lower_better[row] else "")]
        cells += [_cell(p, row, unit) for p in peers]
        if xlfs:
            mine = xlfs.metrics.get(row)
            if raw:
                cells.append(_ratio(speedup(mine, raw.metrics.get(row)), pct=True))
            cells += [_ratio(speedup(mine, p.metrics.get(row))) for p in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(run: Run) -> str:
    out = []
    for p in run.peers:
        if p.na is not None:
            out.append(f"- **{p.name}**: n/a: {p.na}")
        for row, err in p.errors.items():
            out.append(f"- {p.name}, {row}: error: {err}")
    for p in run.peers:  # only the notes that qualify a number
        for row in run.rows:
            m = p.metrics.get(row)
            if m and ("time limit" in m.note or "setup" in m.note):
                out.append(f"- {p.name}, {row}: {m.note}")
    return "\n".join(out)


def targets(run: Run) -> str:
    xlfs, py, gl = run.peer("xlfs"), run.peer("pyfuse3"), run.peer("glusterfs")
    out = []
    if xlfs is None:
        return "- xlfs was not run."
    # 1. the GETATTR loop against pyfuse3
    if py is None or py.na is not None:
        why = "not run" if py is None else f"n/a ({py.na})"
        out.append(f"- GETATTR loop at least {GETATTR_TARGET}x pyfuse3: cannot tell, "
                   f"pyfuse3 {why}.")
    else:
        r = speedup(xlfs.metrics.get(GETATTR_ROW), py.metrics.get(GETATTR_ROW))
        if r is None:
            out.append(f"- GETATTR loop at least {GETATTR_TARGET}x pyfuse3: no measurement.")
        else:
            verdict = "**met**" if r >= GETATTR_TARGET else "**not met**"
            shown = f"{r:.2f}" if round(r, 2) != GETATTR_TARGET else f"{r:.3f}"
            out.append(f"- GETATTR loop at least {GETATTR_TARGET}x pyfuse3: {shown}x, {verdict}.")
    # 2. every case at least as fast as GlusterFS
    if gl is None or gl.na is not None:
        why = "not run" if gl is None else f"n/a ({gl.na})"
        out.append(f"- Every case at least as fast as GlusterFS: cannot tell, GlusterFS {why}.")
    else:
        behind, ahead = [], 0
        for row in run.rows:
            r = speedup(xlfs.metrics.get(row), gl.metrics.get(row))
            if r is None:
                continue
            if r >= 1.0:
                ahead += 1
            else:
                behind.append(f"{row} ({r:.2f}x)")
        if behind:
            out.append(f"- Every case at least as fast as GlusterFS: **not met**; xlfs is "
                       f"ahead in {ahead} of {ahead + len(behind)}, behind in: "
                       + ", ".join(behind) + ".")
        else:
            out.append(f"- Every case at least as fast as GlusterFS: **met** "
                       f"({ahead} of {ahead} cases).")
    return "\n".join(out)


# -- the chart ---------------------------------------------------------------------------

BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = max(0.0, min(1.0, fraction))
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part else "")
    return bar.ljust(width)


def chart(run: Run) -> str:
    """Per case, one bar per FUSE peer, scaled to the fastest FUSE peer of that case (the
    raw directory is usually far off the scale, so it is given as a number only).  A bar is
    speed: for latencies its length is 1/latency.  Longer is better everywhere."""
    fuse_peers = [p for p in run.peers if p.name != "raw" and p.na is None]
    raw = run.peer("raw")
    width = max([len(p.name) for p in fuse_peers] + [4])
    blocks = []
    for row in run.rows:
        unit = run.units[row]
        lower = run.lower_better[row]
        have = [(p, p.metrics[row]) for p in fuse_peers if row in p.metrics
                and p.metrics[row].value > 0]
        if not have:
            continue
        speed = {p.name: (1 / m.value if lower else m.value) for p, m in have}
        best = max(speed.values())
        title = f"{row} ({unit}{', lower is better' if lower else ''})"
        if raw and row in raw.metrics:
            title += f"; raw: {fmt(raw.metrics[row].value, unit)}"
        lines = [title]
        for p, m in have:
            lines.append(f"  {p.name.ljust(width)} {_bar(speed[p.name] / best)} "
                         f"{fmt(m.value, unit)}")
        blocks.append("\n".join(lines))
    return "```text\n" + "\n\n".join(blocks) + "\n```"


# -- the whole report ----------------------------------------------------------------------

def machine_info() -> Dict[str, str]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / (1 << 20):.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores{', ' + cpu if cpu else ''}{', ' + mem if mem else ''}",
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
    }


def markdown(run: Run) -> str:
    info = run.info
    lines = [f"Measured {info.get('date', '?')} in {info.get('mode', '?')} mode on "
             f"{info.get('machine', '?')}; {info.get('kernel', '?')}, "
             f"Python {info.get('python', '?')}."]
    versions = [p.version for p in run.peers if p.version and p.na is None]
    if versions:
        lines[0] += " Peers: " + "; ".join(versions) + "."
    if info.get("rounds", "1") != "1":
        lines[0] += (f" Each number is the median of {info['rounds']} rounds, the peers taking "
                     f"turns case by case.")
    if info.get("load"):
        lines[0] += (f" Load average (1, 5, 15 min): {info['load']}"
                     + (f"; the run took {info['duration']}." if info.get("duration") else "."))
    if run.interrupted:
        lines.append("\n**Interrupted: partial results.**")
    lines += ["", table(run), ""]
    n = notes(run)
    if n:
        lines += [n, ""]
    lines += ["Targets:", "", targets(run), "", "Chart (bars scaled to the fastest FUSE peer "
              "of each case; longer is better):", "", chart(run)]
    return "\n".join(lines)


_DOC_HEAD = """# Benchmarks

Run them with `python -m benchmarks.run --write-docs`; the section below is rewritten on
every such run.

"""


def write_docs(path: Path, body: str) -> None:
    """Put ``body`` between this report's markers in ``path`` (benchmarks.docs_block)."""
    docs_block.write(path, BEGIN, END, body, head=_DOC_HEAD)
