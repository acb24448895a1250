"""xlfsctl subcommands of the FUSE bridge, found by ``xlfsctl`` through the ``xlfs.ctl``
entry point that pyproject.toml declares (``xlators`` never imports the bridge).

    xlfsctl dump-decode PATH      # one line per message of a --dump-fuse recording
"""
from __future__ import annotations

import argparse
from typing import Any


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("dump-decode", help="decode a --dump-fuse recording",
                       description="Print one line per FUSE message recorded with "
                                   "--dump-fuse=PATH: time, direction (R read from the "
                                   "kernel, W written to it), the opcode (a reply is named "
                                   "after the request it answers), unique, then every field "
                                   "of the message; names quoted, data by length only.")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=run_dump_decode)


def run_dump_decode(args: argparse.Namespace) -> int:
    from .dump import main_decode
    return main_decode(args.path)
