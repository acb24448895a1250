"""The report of ``python -m benchmarks.cpu``: CPU per request, per call, and issue 12's
targets, written into docs/benchmarks.md between its own markers (other sections of that
file are left alone)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from .cpu_cases import LISTED, WORKLOADS, Cost
from . import docs_block

BEGIN = "<!-- benchmarks:cpu:begin (written by python -m benchmarks.cpu --write-docs) -->"
END = "<!-- benchmarks:cpu:end -->"

# Issue 12: xlfs user CPU per request through local.vol (io-stats latency on), in µs.
USER_TARGETS = {"getattr": 8.0, "lookup": 12.0, "create": 20.0, "read": 10.0,
                "write": 10.0}
# ... and create, unlink, mkdir+rmdir and rename at least as fast as bindfs.
RATE_TARGETS = ("create", "unlink", "mkdir-rmdir", "rename")

Costs = Dict[str, Dict[str, Cost]]
BASELINE = "xlfs-baseline"      # benchmarks.cpu --baseline DIR


def _us(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def _mix(c: Cost) -> str:
    if not c.per_call:
        return "none" if c.counted else "not counted"
    parts = [f"{n:.2g} {op}" if abs(n - round(n)) > 0.05 else f"{round(n)} {op}"
             for op, n in sorted(c.per_call.items(), key=lambda kv: -kv[1]) if n >= 0.05]
    return ", ".join(parts)


def unsent(name: str, c: Cost) -> List[str]:
    """The requests workload ``name`` is named after ("READ 4 KiB": READ; "MKDIR+RMDIR":
    MKDIR and RMDIR) of which the kernel, counting, sent none: its figures then measure
    no such request (a 0.0 µs row is a measurement that did not happen)."""
    if not c.counted:
        return []
    kinds = WORKLOADS[name].opcode.split()[0].split("+")
    return [op for op in kinds if not c.per_call.get(op)]


def _peers(info: dict, costs: Costs) -> List[str]:
    return [p for p in info.get("peers", list(costs)) if p in costs]


def per_request_table(info: dict, costs: Costs) -> str:
    peers = _peers(info, costs)
    head = ["request"] + [f"{p} {k}" for p in peers for k in ("user", "sys")]
    head.append("xlfs target (user)")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, w in WORKLOADS.items():
        if not any(name in costs[p] for p in peers):
            continue
        derived = any(costs[p][name].derived for p in peers if name in costs[p])
        label = w.opcode + {"pair": " (a pair)", "listing": f" (a listing of {LISTED:,} names)"
                            }.get(w.per, "") + (" *" if derived else "")
        cells = [label]
        for p in peers:
            c = costs[p].get(name)
            if c is not None and unsent(name, c):
                cells += ["none sent", "-"]
                continue
            cells += [_us(c.main_user if c else None), _us(c.main_system if c else None)]
        t = USER_TARGETS.get(name)
        cells.append(f"<= {t:g}" if t else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_call_table(info: dict, costs: Costs) -> str:
    peers = _peers(info, costs)
    head = (["call", "requests the kernel sent (xlfs)"] + [f"{p} CPU" for p in peers]
            + [f"{p} calls/s" for p in peers])
    if "xlfs" in peers and "bindfs" in peers:
        head.append("xlfs vs bindfs")
    lines = ["| " + " | ".join(head) + " |", "|---|---" + "|---:" * (len(head) - 2) + "|"]
    for name in WORKLOADS:
        if not any(name in costs[p] for p in peers):
            continue
        ref = costs.get("xlfs", {}).get(name) or next(costs[p][name] for p in peers
                                                     if name in costs[p])
        cells = [name, _mix(ref)]
        for p in peers:
            c = costs[p].get(name)
            cells.append(_us(c.user + c.system) if c else "-")
        for p in peers:
            c = costs[p].get(name)
            cells.append(f"{1e6 / c.wall:,.0f}" if c and c.wall > 0 else "-")
        if "xlfs" in peers and "bindfs" in peers:
            a, b = costs["xlfs"].get(name), costs["bindfs"].get(name)
            cells.append(f"{b.wall / a.wall:.2f}x" if a and b else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mix_notes(info: dict, costs: Costs) -> List[str]:
    """Rows of requests the kernel never sent, and peers whose kernel request mix differs
    from xlfs's (their attribution differs)."""
    out = []
    mine = costs.get("xlfs", {})
    for p in _peers(info, costs):
        for name, c in costs[p].items():
            missing = unsent(name, c)
            if missing:
                out.append(f"- **{p}, {name}: the kernel sent no {' or '.join(missing)} "
                           f"request**: its CPU is not the cost of one")
            if p == "xlfs":
                continue
            ref = mine.get(name)
            if ref and c.per_call and _mix(c) != _mix(ref):
                out.append(f"- {p}, {name}: the kernel sent {_mix(c)}")
    return out


def targets(costs: Costs) -> List[str]:
    x = costs.get("xlfs")
    if not x:
        return ["- xlfs was not measured."]
    out = []
    for name, t in USER_TARGETS.items():
        c = x.get(name)
        if c is None or c.main_user is None:
            out.append(f"- {WORKLOADS[name].opcode} user CPU <= {t:g} µs: not measured.")
            continue
        missing = unsent(name, c)
        if missing:
            out.append(f"- {WORKLOADS[name].opcode} user CPU <= {t:g} µs: **not measured**: "
                       f"the kernel sent no {' or '.join(missing)} request "
                       f"({_us(c.main_user)} µs is no measurement).")
            continue
        ok = "**met**" if c.main_user <= t else "**not met**"
        base = costs.get(BASELINE, {}).get(name)
        was = (f" (baseline {_us(base.main_user)} µs)" if base is not None
               and base.main_user is not None else "")
        out.append(f"- {WORKLOADS[name].opcode} user CPU <= {t:g} µs: "
                   f"{_us(c.main_user)} µs{was}, {ok}.")
    g, gl = x.get("getattr"), costs.get("glusterfs", {}).get("getattr")
    if g and gl and g.main_user is not None and gl.main_user is not None:
        mine, theirs = g.main_user + g.main_system, gl.main_user + gl.main_system
        ok = "**met**" if mine <= theirs else "**not met**"
        out.append(f"- total CPU per GETATTR at most GlusterFS's: {_us(mine)} against "
                   f"{_us(theirs)} µs, {ok}.")
    else:
        out.append("- total CPU per GETATTR at most GlusterFS's: GlusterFS not measured.")
    b = costs.get("bindfs")
    if b:
        slow, seen = [], 0
        for name in RATE_TARGETS:
            if name in x and name in b:
                seen += 1
                r = b[name].wall / x[name].wall
                slow += [] if r >= 1 else [f"{name} {r:.2f}x"]
        ok = ("**met**" if not slow else "**not met** (" + ", ".join(slow) + ")") \
            if seen == len(RATE_TARGETS) else f"{seen} of {len(RATE_TARGETS)} measured" + (
                "" if not slow else ", **not met** (" + ", ".join(slow) + ")")
        out.append(f"- create, unlink, mkdir+rmdir and rename at least as fast as bindfs "
                   f"(calls/s here): {ok}.")
    return out


def render(info: dict, costs: Costs, na: Dict[str, str]) -> str:
    versions = "; ".join(v for v in info.get("versions", {}).values() if v)
    head = (f"Measured {info.get('date', '?')} ({info.get('mode', '?')} mode, median of "
            f"{info.get('rounds', '?')} rounds, peers taking turns) on "
            f"{info.get('machine', '?')}; {info.get('kernel', '?')}, Python "
            f"{info.get('python', '?')}.")
    if versions:
        head += f" Peers: {versions}."
    where = {"same": "application and daemon pinned to one CPU",
             "split": "application on CPU 0, daemon on CPU 1"}.get(info.get("placement", ""))
    if where:
        head += f" Placement: {where}."
    if info.get("load"):
        head += f" Load average: {info['load']}; the run took {info.get('duration', '?')}."
    lines = [head, ""]
    if info.get("counted"):
        lines += [f"**Requests were not counted** ({info['counted']}): the per-request "
                  "columns are per call.", ""]
    lines += ["Daemon CPU per request, µs (* = the other requests of the call subtracted "
              "at their own cost):", "", per_request_table(info, costs), "",
              "Per call: the requests the kernel sent, the daemon's CPU (user + sys, µs) "
              "and the calls per second:", "", per_call_table(info, costs), ""]
    notes = mix_notes(info, costs) + [f"- **{p}**: n/a: {why}" for p, why in na.items()]
    if notes:
        lines += notes + [""]
    lines += ["Targets (issue 12):", ""] + targets(costs)
    return "\n".join(lines)


def write_docs(path: Path, body: str) -> None:
    """Put ``body`` between this report's markers in ``path`` (benchmarks.docs_block)."""
    docs_block.write(path, BEGIN, END, body)
