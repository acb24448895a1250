"""An xlfs mount re-exported over NFSv4 by nfs-ganesha's VFS backend, which names every
object by its file handle (name_to_handle_at) and reopens it with open_by_handle_at: the
export must keep working after the kernel dropped its caches.

Optional: runs only where ganesha.nfsd (with its VFS backend) and libnfs's nfs-cat /
nfs-cp are installed (Debian: nfs-ganesha nfs-ganesha-vfs libnfs-utils); this kernel has
no nfsd of its own, and nothing mounts NFS here: libnfs is the client, over loopback.
"""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.mount.fhandle import drop_caches
from tests.mountlib import VOLFILES, Mounted, can_mount

TOOLS = ("ganesha.nfsd", "nfs-cat", "nfs-cp", "nfs-ls")
missing = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount())),
              pytest.mark.skipif(bool(missing), reason=f"not installed: {missing}")]

CONFIG = """\
NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = {port}; Bind_addr = 127.0.0.1;
                 Enable_RQUOTA = false; Enable_NLM = false; }}
NFSV4 {{ Graceless = true; RecoveryRoot = {recovery}; }}
EXPORT {{
    Export_Id = 1; Path = {path}; Pseudo = /xlfs; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = 4; Transports = TCP; SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, timeout=30)


def test_ganesha_export_survives_dropped_caches(tmp_path):
    with Mounted(VOLFILES / "local.vol", tmp_path) as m:
        os.makedirs(m.path("dir", "sub"))
        with open(m.path("dir", "sub", "file"), "wb") as f:
            f.write(b"over nfs\n")
        port = _free_port()
        (tmp_path / "recovery").mkdir()
        conf = tmp_path / "ganesha.conf"
        conf.write_text(CONFIG.format(port=port, path=m.path(),
                                      recovery=tmp_path / "recovery"))
        log = tmp_path / "ganesha.log"
        ganesha = subprocess.Popen(
            ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(log),
             "-p", str(tmp_path / "ganesha.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"nfs://127.0.0.1/xlfs/{{}}?version=4&nfsport={port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                r = _run("nfs-cat", url.format("dir/sub/file"))
                if r.returncode == 0 or time.monotonic() > deadline:
                    break
                if ganesha.poll() is not None:
                    pytest.skip(f"ganesha.nfsd exited {ganesha.returncode}: "
                                f"{log.read_text(errors='replace')[-500:]}")
                time.sleep(0.5)
            assert r.stdout == b"over nfs\n", r.stderr
            for _ in range(2):
                drop_caches()
                r = _run("nfs-cat", url.format("dir/sub/file"))
                assert r.returncode == 0 and r.stdout == b"over nfs\n", r.stderr
                r = _run("nfs-ls", "-R", url.format(""))
                assert r.returncode == 0 and b"dir/sub/file" in r.stdout, r.stderr
            src = tmp_path / "in.txt"
            src.write_bytes(b"written over nfs\n")
            drop_caches()
            r = _run("nfs-cp", str(src), url.format("dir/new.txt"))
            assert r.returncode == 0, r.stderr
            with open(m.path("dir", "new.txt"), "rb") as f:
                assert f.read() == b"written over nfs\n"
        finally:
            ganesha.send_signal(signal.SIGTERM)
            try:
                ganesha.wait(15)
            except subprocess.TimeoutExpired:
                ganesha.kill()
                ganesha.wait(15)
        assert "Traceback" not in m.read_log()
