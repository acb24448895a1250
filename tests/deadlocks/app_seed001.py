"""The application of seed 001: it talks to the filesystem over a UNIX socket.

    python app_seed001.py SOCKET FILE [FILE...]

Opens every FILE (on the mount) for writing, writes its data (``data_for(path)``) and keeps
it open; only then creates the listening SOCKET and answers every connection with "ok"
from a server thread.  The descriptor order matters: at exit the kernel closes a
process's descriptors in increasing order, so the files (flushed first, each FLUSH waiting
for its reply) close before the socket that the flush is waiting on.  Prints "ready" once
everything is written and the server listens; then waits to be killed.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time


def data_for(path: str) -> bytes:
    """What the application writes into ``path``: a recognisable pattern, 256 KiB."""
    name = os.path.basename(path).encode()
    line = b"seed001 " + name + b" " + b"x" * 40 + b"\n"
    return (line * (256 * 1024 // len(line) + 1))[:256 * 1024]


def serve(sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            if conn.recv(256):
                conn.sendall(b"ok\n")


def main() -> int:
    sock_path, files = sys.argv[1], sys.argv[2:]
    fds = []
    for path in files:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        data = data_for(path)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fds.append(fd)
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    sock.listen(16)
    assert sock.fileno() > max(fds), "the socket must close after the files"
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
