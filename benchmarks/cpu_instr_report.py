"""Reading callgrind's output and reporting instructions per request
(``python -m benchmarks.cpu_instr``).

    totals(Path("cg.out.3"))                     # {"Ir": 123456789}
    top_functions(annotate_text, 10)             # [(inclusive Ir, "file:function"), ...]
    costs_of(samples)                            # peer -> workload -> cpu_cases.Cost in Ir
    render(info, costs, na, top)                 # the markdown written into the docs

The attribution of other requests (a LOOKUP that came with a CREATE, ...) is
``cpu_cases.attribute``'s, fed with instructions per call instead of CPU seconds: the
arithmetic is the same whatever the unit.
"""
from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import cpu_cases as K
from .cpu_report import unsent
from . import docs_block

BEGIN = ("<!-- benchmarks:cpu-instr:begin (written by python -m benchmarks.cpu_instr "
         "--write-docs) -->")
END = "<!-- benchmarks:cpu-instr:end -->"
_ANNOTATE_RE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)\s*$")


@dataclass
class InstrSample:
    """One instrumented loop on one peer."""
    calls: int
    ir: int                       # instructions the daemon executed in the window
    wall: float                   # seconds the window lasted (for the idle share)
    counts: Optional[Dict[str, int]] = None   # requests the kernel sent, by opcode
    idle_ir: float = 0.0          # the idle background subtracted from ``ir``
    note: str = ""
    dump: str = ""                # the callgrind dump file of the window


Samples = Dict[str, Dict[str, List[InstrSample]]]   # peer -> workload -> rounds


def totals(path: Path) -> Dict[str, int]:
    """The event totals of one callgrind dump (``events:`` names, ``totals:`` or, failing
    that, ``summary:`` values).  ValueError when the file has neither."""
    events: List[str] = []
    values: Optional[List[int]] = None
    summary: Optional[List[int]] = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split(":", 1)[1].split()
            elif line.startswith("totals:"):
                values = [int(v) for v in line.split(":", 1)[1].split()]
            elif line.startswith("summary:"):
                summary = [int(v) for v in line.split(":", 1)[1].split()]
    values = values if values is not None else summary
    if not events or values is None:
        raise ValueError(f"{path}: no 'events:' and 'totals:'/'summary:' lines "
                         f"(not a callgrind dump?)")
    return {e: (values[i] if i < len(values) else 0) for i, e in enumerate(events)}


def functions(text: str) -> List[Tuple[int, str, bool]]:
    """The function rows of ``callgrind_annotate`` output, as (Ir, name, nested): name is
    the bare function followed by its object's file name ("k_mul [libpython3.11.so.1.0]";
    rows of inlined code name no object and get the one of the function's other rows);
    nested rows are recursion levels below the first ("f'2"), folded into "f".
    PROGRAM TOTALS is left out."""
    rows: List[Tuple[int, str, str, bool]] = []
    objects: Dict[str, str] = {}
    for line in text.splitlines():
        m = _ANNOTATE_RE.match(line)
        if not m or "PROGRAM TOTALS" in m.group(2):
            continue
        where, _, obj = m.group(2).partition(" [")
        func = where if where.startswith("???:") else where.rsplit(":", 1)[-1]
        nested = re.search(r"'\d+$", func) is not None
        func = re.sub(r"'\d+$", "", func)
        obj = os.path.basename(obj.rstrip("]")) if obj else ""
        if obj:
            objects.setdefault(func, obj)
        rows.append((int(m.group(1).replace(",", "")), func, obj, nested))
    return [(ir, f"{func} [{obj or objects.get(func, '?')}]", nested)
            for ir, func, obj, nested in rows]


def top_functions(text: str, n: int, inclusive: bool) -> List[Tuple[int, str]]:
    """The ``n`` largest functions of ``callgrind_annotate`` output.  Self cost
    (``inclusive=False``): the rows of one function (its recursion levels, its inlined
    parts) summed.  Inclusive (``--inclusive=yes`` output): the largest outermost row of
    each function; nested recursion levels are left out, their inclusive cost counts the
    same instructions again (and comes out above the total)."""
    acc: Dict[str, int] = {}
    for ir, name, nested in functions(text):
        if not inclusive:
            acc[name] = acc.get(name, 0) + ir
        elif not nested:
            acc[name] = max(acc.get(name, 0), ir)
    return sorted(((ir, name) for name, ir in acc.items()), key=lambda r: (-r[0], r[1]))[:n]


#: Calls counted in xlfs's windows (CPython 3.11's names): Python function calls that
#: returned (frames popped; resuming a coroutine is not one), pymalloc allocations, and
#: the C library's system call wrappers the bridge's reader and replies go through.
COUNTED_CALLS = {"Python calls": "_PyThreadState_PopFrame",
                 "pymalloc allocations": "_PyObject_Malloc",
                 "readv": "readv", "write": "write", "poll": "poll",
                 "epoll_wait": "epoll_wait"}
_FN_RE = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")


def call_counts(path: Path, names: List[str]) -> Dict[str, int]:
    """How often each function of ``names`` was called in one callgrind dump (the
    ``calls=`` lines under a ``cfn=`` of that name, its recursion levels folded in).
    Names are compressed in dumps ("cfn=(12) name" once, "cfn=(12)" after)."""
    wanted = set(names)
    ids: Dict[str, str] = {}
    got = {n: 0 for n in names}
    callee: Optional[str] = None
    with open(path, errors="replace") as f:
        for line in f:
            m = _FN_RE.match(line.rstrip("\n"))
            if m:
                kind, ident, name = m.groups()
                if name:
                    ids[ident] = re.sub(r"'\d+$", "", name.strip())
                if kind == "cfn":
                    callee = ids.get(ident)
                continue
            if line.startswith("calls=") and callee in wanted:
                got[callee] += int(line[6:].split()[0])
    return got


def net_ir(s: InstrSample) -> float:
    return s.ir - s.idle_ir


def costs_of(samples: Samples) -> Dict[str, Dict[str, K.Cost]]:
    """Per peer and workload: instructions per call (median over rounds, in Cost.user;
    system is 0) and, through ``cpu_cases.attribute``, per request of the workload's
    opcode (Cost.main_user)."""
    out: Dict[str, Dict[str, K.Cost]] = {}
    for peer, by_w in samples.items():
        costs: Dict[str, K.Cost] = {}
        for wname, ss in by_w.items():
            ss = [s for s in ss if s.calls]
            if not ss:
                continue
            counted = [s for s in ss if s.counts is not None]
            per_call = {op: statistics.median(s.counts.get(op, 0) / s.calls for s in counted)
                        for op in {op for s in counted for op in s.counts}}
            costs[wname] = K.Cost(statistics.median(net_ir(s) / s.calls for s in ss), 0.0,
                                  statistics.median(1e6 * s.wall / s.calls for s in ss),
                                  per_call, counted=bool(counted))
        K.attribute(costs)
        out[peer] = costs
    return out


def spread(samples: Samples) -> Dict[str, Tuple[float, str]]:
    """Per peer, the largest spread of instructions per call over the rounds of one
    workload, (max - min) / median, and that workload; peers run once are left out."""
    out: Dict[str, Tuple[float, str]] = {}
    for peer, by_w in samples.items():
        for w, ss in by_w.items():
            xs = [net_ir(s) / s.calls for s in ss if s.calls]
            if len(xs) > 1 and statistics.median(xs) > 0:
                r = (max(xs) - min(xs)) / statistics.median(xs)
                if r >= out.get(peer, (-1.0, ""))[0]:
                    out[peer] = (r, w)
    return out


def _kir(x: Optional[float]) -> str:
    return "-" if x is None else f"{x / 1000:.1f}"


def per_request_table(peers: List[str], costs: Dict[str, Dict[str, K.Cost]]) -> List[str]:
    names = [w for w in K.WORKLOADS if any(w in costs.get(p, {}) for p in peers)]
    lines = ["| workload | request | " + " | ".join(peers) + " |",
             "|---|---|" + "---:|" * len(peers)]
    for w in names:
        cells = []
        for p in peers:
            c = costs.get(p, {}).get(w)
            if c is None:
                cells.append("n/a")
            elif unsent(w, c):
                cells.append("none sent")
            else:
                cells.append(_kir(c.main_user) + ("*" if c.derived else ""))
        lines.append(f"| {w} | {K.WORKLOADS[w].opcode} | " + " | ".join(cells) + " |")
    return lines


def _sent(c: K.Cost) -> str:
    """The requests per call, those of at least 0.05 per call, rounded."""
    big = sorted(((op, n) for op, n in c.per_call.items() if n >= 0.05),
                 key=lambda kv: (-kv[1], kv[0]))
    return " + ".join(f"{n:.2g} {op}" for op, n in big) or "none"


def per_call_table(peers: List[str], costs: Dict[str, Dict[str, K.Cost]]) -> List[str]:
    """kIr per call in all, and what the kernel sent per call (peers that got something
    else than the first peer are named)."""
    names = [w for w in K.WORKLOADS if any(w in costs.get(p, {}) for p in peers)]
    lines = ["| call | requests the kernel sent | " + " | ".join(peers) + " |",
             "|---|---|" + "---:|" * len(peers)]
    for w in names:
        sent: Dict[str, List[str]] = {}
        for p in peers:
            c = costs.get(p, {}).get(w)
            if c is not None:
                sent.setdefault(_sent(c) if c.counted else "not counted", []).append(p)
        mixes = list(sent)
        what = "; ".join([mixes[0]] + [f"{', '.join(sent[m])}: {m}" for m in mixes[1:]])
        cells = [_kir(costs[p][w].user) if w in costs.get(p, {}) else "n/a" for p in peers]
        lines.append(f"| {w} | {what} | " + " | ".join(cells) + " |")
    return lines


def render(info: dict, costs: Dict[str, Dict[str, K.Cost]], na: Dict[str, str],
           top: Optional[Dict[str, Dict[str, List[Tuple[int, str]]]]] = None,
           top_requests: Optional[Dict[str, int]] = None) -> str:
    peers = [p for p in info.get("peers", list(costs)) if p in costs or p in na]
    lines = [f"Run: {info.get('date', '?')}, {info.get('mode', '')} "
             f"({info.get('calls', '')}); valgrind {info.get('valgrind', '?')}.", ""]
    for p in peers:
        if p in info.get("versions", {}):
            lines.append(f"- {p}: {info['versions'][p]}")
    for p, why in na.items():
        lines.append(f"- {p}: n/a: {why}")
    lines += ["", "Thousands of instructions (kIr) the daemon executed per request, all "
              "threads (* = other requests the kernel sent with it subtracted at their "
              "own measured cost):", ""]
    lines += per_request_table([p for p in peers if p in costs], costs)
    idle = info.get("idle", {})
    if idle:
        lines += ["", "Idle background (subtracted, per second of window): " + ", ".join(
            f"{p} {v / 1000:.1f} kIr/s" for p, v in idle.items()) + "."]
    if info.get("spread"):
        lines += ["", "Largest spread over the rounds of one workload ((max - min) / median "
                  "of kIr per call): " + ", ".join(
                      f"{p} {100 * r:.1f}% ({w})" for p, (r, w) in info["spread"].items())
                  + "."]
    lines += ["", "Per call, in all: kIr and the requests the kernel sent:", ""]
    lines += per_call_table([p for p in peers if p in costs], costs)
    counted = info.get("call_counts") or {}
    if counted:
        labels = list(COUNTED_CALLS)
        lines += ["", "Calls per request in xlfs's windows (GETATTR and LOOKUP; callgrind "
                  "counts calls as exactly as instructions):", "",
                  "| peer | request | " + " | ".join(labels) + " |",
                  "|---|---|" + "---:|" * len(labels)]
        for p, by_w in counted.items():
            for w in ("getattr", "lookup"):
                if w in by_w:
                    lines.append(f"| {p} | {K.WORKLOADS[w].opcode} | " + " | ".join(
                        f"{by_w[w].get(label, 0):.2f}" for label in labels) + " |")
    for p, kinds in (top or {}).items():
        n = (top_requests or {}).get(p) or 1
        lines += ["", f"{p}, GETATTR window ({n} requests): top functions, kIr per "
                  f"request, inclusive (with what they call) and self:", "",
                  "| inclusive | function | self | function |", "|---:|---|---:|---|"]
        inc, own = kinds.get("inclusive", []), kinds.get("self", [])
        for i in range(max(len(inc), len(own))):
            a = inc[i] if i < len(inc) else None
            b = own[i] if i < len(own) else None
            lines.append(f"| {_kir(a[0] / n) if a else ''} | {f'`{a[1]}`' if a else ''} "
                         f"| {_kir(b[0] / n) if b else ''} | {f'`{b[1]}`' if b else ''} |")
    return "\n".join(lines)


def write_docs(path: Path, body: str) -> None:
    """Put ``body`` between this report's markers in ``path`` (benchmarks.docs_block)."""
    docs_block.write(path, BEGIN, END, body)
