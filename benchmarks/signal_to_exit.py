"""Signal-to-exit times: how long a process blocked on an xlfs mount takes to go after a
signal, for each signal and with and without the interrupt flags.  Prints a markdown
table (docs/interrupts.md shows its output).

    .venv/bin/python -m benchmarks.signal_to_exit            # as root; about 4 minutes
    .venv/bin/python -m benchmarks.signal_to_exit --quick    # 1 round, 2 s delays

Operations (each victim is tests/interrupts/victim.py, calling libc through ctypes):

- close(): volfiles/delay-flush.vol (debug/delay-gen holds every FLUSH for DELAY);
  the flag is --fuse-flush-handle-interrupt.
- fcntl(F_SETLKW) / flock(LOCK_EX): volfiles/local.vol; this process holds the lock and
  lets it go DELAY after the signal; the flag is --fuse-setlk-handle-interrupt.
- write(): posix + locks + debug/delay-gen on WRITE; no flag is involved: delay-gen's
  frame.on_interrupt handler cancels the request.

Signals: SIGINT with a handler (the call returns, the victim then exits at once), SIGINT
with the default action, SIGTERM, SIGKILL.  A cell is the median over the rounds of the
time from kill() to the victim's exit, and how the call ended: EINTR, ok (it completed),
or killed.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.interrupts.intrlib import DELAY_FLUSH, LOCAL, Victim, delay_stack  # noqa: E402
from tests.mountlib import Mounted, can_mount  # noqa: E402

SIGNALS = [("SIGINT, handled", signal.SIGINT, "handled"),
           ("SIGINT, default (fatal)", signal.SIGINT, "fatal"),
           ("SIGTERM", signal.SIGTERM, "handled"),
           ("SIGKILL", signal.SIGKILL, "handled")]


def measure(m: Mounted, op: str, sig: int, sigint: str, delay: float, n: int) -> tuple:
    """(seconds from kill() to exit, how the call ended) for one victim."""
    path = m.path(f"{op}-{n}")
    holder = None
    timer = None
    if op in ("fcntl", "flock"):
        holder = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        (fcntl.flock if op == "flock" else fcntl.lockf)(holder, fcntl.LOCK_EX)
    try:
        with Victim(op, path, sigint) as v:
            v.wait_blocked()
            if holder is not None:    # the holder lets go DELAY after the signal
                how = fcntl.flock if op == "flock" else fcntl.lockf
                timer = threading.Timer(delay, how, (holder, fcntl.LOCK_UN))
            v.signal(sig)
            if timer is not None:
                timer.start()
            result = v.wait_returned(delay + 20)
            v.release()
            took = v.wait_exit(delay + 20)
            if result is None:
                outcome = "killed"
            else:
                outcome = result["errno"] or "ok"
            return took, outcome
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
        if holder is not None:
            os.close(holder)


def run_config(volfile: Path, flags: list[str], ops: list[str], delay: float, rounds: int,
               overrides: list[str]) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="xlfs-sig-") as work:
        with Mounted(volfile, Path(work), *flags, limit=3600.0, overrides=overrides) as m:
            for op in ops:
                for label, sig, sigint in SIGNALS:
                    runs = [measure(m, op, sig, sigint, delay, i) for i in range(rounds)]
                    times = [t for t, _ in runs]
                    outcomes = sorted({o for _, o in runs})
                    out[(op, label)] = (statistics.median(times), "/".join(outcomes))
                    ms = statistics.median(times) * 1000
                    print(f"  {op:6} {label:24} {' '.join(flags) or '(no flag)':34} "
                          f"{ms:9.1f} ms  {'/'.join(outcomes)}", file=sys.stderr, flush=True)
    return out


def cell(value) -> str:
    if value is None:
        return "n/a (no flag involved)"
    seconds, outcome = value
    text = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    return f"{text} ({outcome})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay", type=float, default=5.0,
                    help="delay of FLUSH / WRITE, and how long the lock holder holds on "
                         "after the signal (seconds; default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per cell (median)")
    ap.add_argument("--quick", action="store_true", help="1 round, 2 s delays")
    ap.add_argument("--ops", default="close,fcntl,flock,write",
                    help="comma list of close, fcntl, flock, write")
    args = ap.parse_args(argv)
    if args.quick:
        args.delay, args.rounds = 2.0, 1
    why = can_mount()
    if why:
        print(f"signal_to_exit: {why}", file=sys.stderr)
        return 2
    ops = [o for o in args.ops.split(",") if o]
    delay_us = int(args.delay * 1e6)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="xlfs-sigvol-") as tmp:
        write_vol = Path(tmp) / "delay-write.vol"
        write_vol.write_text(delay_stack("writev", args.delay))
        for flag_on in (False, True):
            if "close" in ops:
                flags = ["--fuse-flush-handle-interrupt"] if flag_on else []
                for k, v in run_config(DELAY_FLUSH, flags, ["close"], args.delay,
                                       args.rounds,
                                       [f"delay.delay-duration={delay_us}"]).items():
                    results[(k, flag_on)] = v
            lock_ops = [o for o in ops if o in ("fcntl", "flock")]
            if lock_ops:
                flags = ["--fuse-setlk-handle-interrupt"] if flag_on else []
                for k, v in run_config(LOCAL, flags, lock_ops, args.delay,
                                       args.rounds, []).items():
                    results[(k, flag_on)] = v
        if "write" in ops:
            for k, v in run_config(write_vol, [], ["write"], args.delay, args.rounds,
                                   []).items():
                results[(k, False)] = v
    names = {"close": f"close() (FLUSH delayed {args.delay:g} s)",
             "fcntl": f"fcntl(F_SETLKW) (lock held {args.delay:g} s more)",
             "flock": f"flock(LOCK_EX) (lock held {args.delay:g} s more)",
             "write": f"write() (WRITE delayed {args.delay:g} s)"}
    flag_of = {"close": "--fuse-flush-handle-interrupt",
               "fcntl": "--fuse-setlk-handle-interrupt",
               "flock": "--fuse-setlk-handle-interrupt", "write": "none"}
    print(f"Signal to exit, median of {args.rounds} run(s); Linux {platform.release()}, "
          f"Python {platform.python_version()}; "
          f"`python -m benchmarks.signal_to_exit{' --quick' if args.quick else ''}`.\n")
    print("| operation | flag | signal | without the flag | with the flag |")
    print("|---|---|---|---|---|")
    for op in ops:
        for label, _, _ in SIGNALS:
            off = results.get(((op, label), False))
            on = None if op == "write" else results.get(((op, label), True))
            print(f"| {names[op]} | `{flag_of[op]}` | {label} | {cell(off)} | {cell(on)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
