"""Helpers for the deadlock tests: volfiles with the test translators, bounded waits on
processes and threads that may be stuck in the kernel, /proc task states."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.mountlib import Mounted, needs_mount, wait_until

HERE = Path(__file__).resolve().parent
ROOT_DIR = HERE.parent.parent
PLUGINS = {"XLFS_PLUGINS": "tests.deadlocks.xlators_seed"}

mount_marks = [pytest.mark.mount, needs_mount]


def volfile(path: Path, *layers: tuple[str, str, dict], brick: Optional[Path] = None) -> Path:
    """A volfile: ``storage/posix`` named posix at the bottom, then each
    (name, type, options) layer on top of the previous one."""
    lines = ["volume posix", "    type storage/posix",
             f"    option directory {brick or path.parent / 'brick'}", "end-volume", ""]
    below = "posix"
    for name, type_, options in layers:
        lines += [f"volume {name}", f"    type {type_}"]
        lines += [f"    option {k} {v}" for k, v in options.items()]
        lines += [f"    subvolumes {below}", "end-volume", ""]
        below = name
    path.write_text("\n".join(lines))
    return path


def mounted(tmp_path: Path, vol: Path, *flags: str, env: Optional[dict] = None,
            **kw: Any) -> Mounted:
    return Mounted(vol, tmp_path, *flags, env={**PLUGINS, **(env or {})}, **kw)


def task_states(pid: int) -> dict[int, str]:
    """State letter of every thread of process ``pid`` ({} once it is reaped)."""
    states = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states[int(tid)] = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            pass
    return states


def in_d_state(pid: int) -> bool:
    return "D" in task_states(pid).values()


def exits_within(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


class Call:
    """Run ``fn`` in a daemon thread (it may block in the kernel); wait for it boundedly."""

    def __init__(self, fn: Callable[[], Any], name: str = "call") -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.started = time.monotonic()
        self.elapsed: Optional[float] = None
        self._t = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._t.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - self.started

    def done(self, timeout: float) -> bool:
        self._t.join(timeout)
        return not self._t.is_alive()

    def value(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def stat_latency(path: str, timeout: float = 5.0) -> Optional[float]:
    """Seconds one stat of ``path`` took, or None if it did not return in ``timeout``."""
    call = Call(lambda: os.stat(path), "stat")
    if not call.done(timeout):
        return None
    return call.elapsed


def python(*args: str, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], **kw)


def statedump(m: Mounted, timeout: float = 5.0) -> dict[str, str]:
    """SIGUSR1 the daemon and return its statedump as ``key -> value`` (file removed)."""
    return dict(line.split("=", 1) for line in m.statedump(timeout).splitlines()
                if "=" in line)
