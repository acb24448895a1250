"""Helpers for the cluster/replicate tests: a replica of storage/memory children, each
under a debug/error-gen that a test switches to fail everything with ENOTCONN."""
from __future__ import annotations

import os
from typing import Optional

from xlators.testing import Harness


def replica_volfile(n: int = 2, options: Optional[dict] = None, leaf: str = "storage/memory",
                    leaf_options: Optional[list[dict]] = None) -> str:
    out = []
    for i in range(n):
        out.append(f"volume m{i}\n    type {leaf}\n")
        lopts = (leaf_options[i] if leaf_options else None) or {"size": "0"}
        for k, v in lopts.items():
            out.append(f"    option {k} {v}\n")
        out.append("end-volume\n")
        out.append(f"volume e{i}\n    type debug/error-gen\n    subvolumes m{i}\nend-volume\n")
    out.append("volume r\n    type cluster/replicate\n")
    for k, v in (options or {}).items():
        out.append(f"    option {k} {v}\n")
    out.append("    subvolumes " + " ".join(f"e{i}" for i in range(n)) + "\nend-volume\n")
    return "".join(out)


def replica(n: int = 2, **options: str) -> Harness:
    opts = {k.replace("_", "-"): v for k, v in options.items()}
    return Harness.from_volfile(replica_volfile(n, opts))


def fail(h: Harness, i: int, errno_name: str = "ENOTCONN") -> None:
    h.graph[f"e{i}"].reconfigure({"failure": "100", "error-no": errno_name})


def recover(h: Harness, i: int) -> None:
    h.graph[f"e{i}"].reconfigure({})


def brick(h: Harness, i: int) -> Harness:
    """A harness straight on child i's storage (no replicate, no error-gen)."""
    return Harness(h.graph[f"m{i}"])


async def brick_tree(h: Harness, i: int, path: str = "/") -> dict:
    """{relative path: bytes (files) | 'dir' | ('link', target)} of child i's storage."""
    return await tree(brick(h, i), path)


async def tree(b: Harness, path: str = "/") -> dict:
    """{relative path: bytes (files) | 'dir' | ('link', target)} as ``b`` shows it."""
    out: dict = {}

    async def walk(p: str) -> None:
        for e in await b.listdir(p):
            if e.name in (b".", b".."):
                continue
            sub = os.path.join(p, os.fsdecode(e.name))
            st = await b.stat(sub)
            if (st.mode & 0o170000) == 0o040000:
                out[sub] = "dir"
                await walk(sub)
            elif (st.mode & 0o170000) == 0o120000:
                ent = await b.lookup(sub)
                out[sub] = ("link", await b.top.readlink(b.frame(), ent.inode))
            else:
                out[sub] = await b.read_file(sub)
    await walk(path)
    return out
