"""Helpers of the interrupt mount tests (and of benchmarks/signal_to_exit.py): a victim
process blocked in a call on the mount, signalled and timed; log and statedump readers.
"""
from __future__ import annotations

import json
import os
import platform
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from tests.mountlib import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
VICTIM = Path(__file__).resolve().parent / "victim.py"

DELAY_FLUSH = ROOT / "volfiles" / "delay-flush.vol"
LOCAL = ROOT / "volfiles" / "local.vol"


def delay_stack(fops: str, seconds: float) -> str:
    """posix + locks with debug/delay-gen on ``fops`` on top (a volfile's text)."""
    return f"""volume posix
    type storage/posix
    option directory /var/lib/xlfs/brick
end-volume

volume locks
    type features/locks
    subvolumes posix
end-volume

volume delay
    type debug/delay-gen
    option delay-percentage 100%
    option delay-duration {int(seconds * 1e6)}
    option enable {fops}
    subvolumes locks
end-volume
"""


class Victim:
    """``victim.py ACTION PATH``: started, waited for until blocked, signalled, timed."""

    def __init__(self, action: str, path: str, sigint: str = "handled",
                 *extra: str) -> None:
        self.action = action
        self.proc = subprocess.Popen(
            [sys.executable, str(VICTIM), action, path, f"--sigint={sigint}", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        self._buf = b""
        self.nr: Optional[int] = None
        self.signalled_at: Optional[float] = None
        self.returned_after: Optional[float] = None     # signal -> the call returned
        self.result: Optional[dict] = None

    def _line(self, timeout: float) -> Optional[str]:
        """The next line of the victim's stdout; None at EOF or after ``timeout``."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def wait_opened(self, timeout: float = 10.0) -> None:
        """Until a ``--gate`` victim has its file open and waits for :meth:`go`."""
        line = self._line(timeout)
        assert line and line.startswith("opened "), f"victim did not open: {line!r}"

    def go(self) -> None:
        """Let a ``--gate`` victim go on to its call."""
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()

    def wait_blocked(self, timeout: float = 10.0, settle: float = 0.1) -> None:
        """Until the victim sits in its call (/proc/PID/syscall), then ``settle`` more."""
        line = self._line(timeout)
        assert line and line.startswith("ready "), f"victim did not start: {line!r}"
        self.nr = int(line.split()[2])
        deadline = time.monotonic() + timeout
        x86 = platform.machine() == "x86_64"
        while x86 and time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.pid}/syscall") as f:
                    words = f.read().split()
            except OSError:
                words = []
            if words and words[0] == str(self.nr):
                break
            time.sleep(0.005)
        else:
            if x86:
                raise TimeoutError(f"victim never blocked in syscall {self.nr}")
            time.sleep(0.3)
        time.sleep(settle)

    def state(self) -> str:
        """The process state letter (R, S, D, Z, ...), or "" when it is gone."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        self.signalled_at = time.monotonic()
        os.kill(self.pid, sig)

    def wait_returned(self, timeout: float) -> Optional[dict]:
        """The call's result (None if the process died first); sets returned_after."""
        line = self._line(timeout)
        if line:
            self.result = json.loads(line)
        self.returned_after = time.monotonic() - (self.signalled_at or time.monotonic())
        return self.result

    def release(self) -> None:
        """Let a lock victim exit (it holds whatever it got until then)."""
        try:
            self.proc.stdin.write(b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def wait_exit(self, timeout: float) -> float:
        """Seconds from the signal to the exit."""
        self.proc.wait(timeout)
        return time.monotonic() - (self.signalled_at or time.monotonic())

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> "Victim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def log_since(mounted, offset: int) -> str:
    return mounted.read_log()[offset:]


def statedump(mounted, directory: Path, timeout: float = 5.0) -> dict[str, str]:
    """SIGUSR1 to the daemon (XLFS_DUMP_DIR must be ``directory``); key=value pairs."""
    before = set(directory.glob("xlfsdump.*"))
    mounted.proc.send_signal(signal.SIGUSR1)
    new = wait_until(lambda: [p for p in directory.glob("xlfsdump.*") if p not in before
                              and not p.name.endswith(".tmp")], timeout, "a statedump")
    out: dict[str, str] = {}
    for line in new[0].read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, v)
    new[0].unlink()
    return out


THIRD = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    if sys.argv[2] == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
sys.exit(0)
"""


def third_gets_it(path: str, kind: str) -> bool:
    """Can another process take the lock right now (without waiting)?"""
    r = subprocess.run([sys.executable, "-c", THIRD, path, kind], timeout=10)
    return r.returncode == 0
