"""Every benchmark peer by name: the local ones (benchmarks.peers), issue 10's stacks
(benchmarks.stack_peers), those on a GlusterFS volume (benchmarks.gluster_peers) and
xlfs under PyPy (benchmarks.pypy_peers).
``benchmarks.run.PEERS`` is this table; ab_cases, which run imports, takes it from here."""
from __future__ import annotations

from typing import Dict

from .gluster_peers import GLUSTER_PEERS
from .peers import PEERS as LOCAL_PEERS
from .peers import Peer
from .pypy_peers import PYPY_PEERS
from .stack_peers import STACK_PEERS

PEERS: Dict[str, type[Peer]] = {**LOCAL_PEERS, **STACK_PEERS, **GLUSTER_PEERS, **PYPY_PEERS}
