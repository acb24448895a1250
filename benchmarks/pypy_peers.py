"""xlfs's daemon under PyPy: the same code and volfiles as xlfs and xlfs-fast, another
interpreter (docs/benchmarks.md, "The interpreter: PyPy against CPython").

- xlfs-pypy: volfiles/local.vol, as peer xlfs.
- xlfs-fast-pypy: volfiles/fast.vol, as peer xlfs-fast.

The interpreter is ``$XLFS_PYPY`` when set, else ``.venv-pypy/bin/python`` of this
checkout (``scripts/setup-pypy.sh`` makes it).  Each mount gets
``WARM_UP_ROUNDS`` rounds of benchmarks.warm_up first, so the JIT has compiled the
request paths before a case is measured.  benchmarks.peer_table adds PYPY_PEERS to the
table benchmarks.run and benchmarks.cpu take peers from.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Type

from .peers import ROOT, Peer, XlfsPeer
from .stack_peers import XlfsFastPeer

#: each request kind served this many times before the cases: PyPy compiles a loop
#: after 1,039 iterations and a function after 1,619 calls (its default thresholds)
WARM_UP_ROUNDS = 3000


def pypy_python() -> Path:
    """The PyPy interpreter the -pypy peers run the daemon under."""
    return Path(os.environ.get("XLFS_PYPY") or ROOT / ".venv-pypy" / "bin" / "python")


class _PypyMixin:
    warm_up_rounds = WARM_UP_ROUNDS

    @property
    def python(self) -> str:          # looked up when the peer runs, not at import
        return str(pypy_python())

    def unavailable(self):
        if not os.access(pypy_python(), os.X_OK):
            return (f"no PyPy interpreter at {pypy_python()} (scripts/setup-pypy.sh "
                    f"makes .venv-pypy; or set XLFS_PYPY)")
        return super().unavailable()

    def version(self) -> str:
        import subprocess
        try:
            out = subprocess.run([str(pypy_python()), "-c", "import sys; print("
                                  "'PyPy %d.%d.%d' % sys.pypy_version_info[:3])"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        return f"{super().version()} on {out or 'PyPy'}"


class XlfsPypyPeer(_PypyMixin, XlfsPeer):
    name = "xlfs-pypy"
    description = "xlfs on volfiles/local.vol, the daemon under PyPy"


class XlfsFastPypyPeer(_PypyMixin, XlfsFastPeer):
    name = "xlfs-fast-pypy"
    description = "xlfs on volfiles/fast.vol (--fuse-passthrough=no), the daemon under PyPy"


PYPY_PEERS: Dict[str, Type[Peer]] = {"xlfs-pypy": XlfsPypyPeer,
                                     "xlfs-fast-pypy": XlfsFastPypyPeer}
