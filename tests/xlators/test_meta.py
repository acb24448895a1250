"""meta/meta: the .meta directory, driven through the harness (no mount)."""
from __future__ import annotations

import errno
import json
import logging
import os
import stat

import pytest

from xlators import Event
from xlators.core.host import Host, PendingRequest
from xlators.core.inode import Fd, Loc
from xlators.core.types import SetAttr
from xlators.meta.meta import META_INO_BASE, Meta
from xlators.testing import Harness

VOLFILE = """
volume store
    type storage/memory
    option size 1GB
end-volume

volume stats
    type debug/io-stats
    option latency-measurement on
    subvolumes store
end-volume

volume meta-autoload
    type meta/meta
    subvolumes stats
end-volume
"""


class FakeHost:
    """A Host as the bridge would give one."""
    version = "9.9.9"

    def __init__(self) -> None:
        self.level = "INFO"
        self.pending: list[PendingRequest] = []
        self.names: dict = {}
        self.dumps = 0

    def pending_requests(self):
        return self.pending

    def state(self):
        return {"inodes": 7, "open-fds": 2, "requests": 40}

    def options(self):
        return {"attribute_timeout": 1.0, "read_only": False}

    def cmdline(self):
        return ["xlfs", "-f", "x.vol", "/mnt"]

    def log_level(self):
        return self.level

    def set_log_level(self, name):
        if name.upper() not in ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL",
                                "NONE"):
            raise ValueError(name)
        self.level = name.upper()

    def entry_name(self, nodeid):
        return self.names.get(nodeid)

    def log_file(self):
        return "/var/log/xlfs/mnt.log"

    def direct_io(self):
        return True

    async def statedump(self):
        self.dumps += 1
        return f"/tmp/dump.{self.dumps}"

    def __call__(self, event, data, source):
        pass


def harness(host: bool = True) -> Harness:
    h = Harness.from_volfile(VOLFILE)
    if host:
        h.graph.host = FakeHost()
    return h


def gdir(h: Harness) -> str:
    return "/.meta/graphs/active"


async def names(h: Harness, path: str, plus: bool = False) -> set[str]:
    return {e.name.decode() for e in await h.listdir(path, plus=plus)} - {".", ".."}


async def text(h: Harness, path: str) -> str:
    return (await h.read_file(path)).decode()


def test_fake_host_is_a_host():
    assert isinstance(FakeHost(), Host)


async def test_found_by_lookup_but_not_listed_in_the_root():
    h = harness()
    await h.write_file("/f", b"x")
    await h.mkdir("/d")
    assert await names(h, "/") == {"f", "d"}
    assert await names(h, "/", plus=True) == {"f", "d"}
    e = await h.lookup("/.meta")
    assert stat.S_ISDIR(e.attr.mode) and e.attr.ino >= META_INO_BASE
    assert await names(h, "/.meta") == {"graphs", "frames", "logging", "process_uuid",
                                        "version", "cmdline", "root", "measure_latency",
                                        "top", "statedump"}
    with pytest.raises(OSError) as exc:          # only in the root
        await h.lookup("/d/.meta")
    assert exc.value.errno == errno.ENOENT


async def test_graph_view_in_glusterfs_shape():
    h = harness()
    assert await names(h, "/.meta/graphs") == {"active", h.top.graph_id}
    link = await h.lookup(f"/.meta/graphs/{h.top.graph_id}")
    assert await h.top.readlink(h.frame(), link.inode) == b"active"
    assert await names(h, gdir(h)) == {"meta-autoload", "stats", "store", "top", "volfile"}
    top = await h.lookup(f"{gdir(h)}/top")
    assert await h.top.readlink(h.frame(), top.inode) == b"meta-autoload"
    xl = f"{gdir(h)}/stats"
    assert await names(h, xl) == {"type", "name", "options", "subvolumes", "private",
                                  "profile", "state", "view"}
    assert await text(h, f"{xl}/type") == "debug/io-stats\n"
    assert await text(h, f"{xl}/name") == "stats\n"
    assert await text(h, f"{xl}/options/latency-measurement") == "on\n"     # as given
    assert await text(h, f"{xl}/options/ios-dump-format") == "json\n"       # the default
    sub = await h.lookup(f"{xl}/subvolumes/0")
    assert stat.S_ISLNK(sub.attr.mode)
    assert await h.top.readlink(h.frame(), sub.inode) == b"../../store"
    assert await text(h, f"{xl}/state") == "up\n"
    assert "volume stats" in await text(h, f"{gdir(h)}/volfile")


async def test_private_is_the_statedump_section():
    h = harness()
    await h.write_file("/f", b"hello")
    private = await text(h, f"{gdir(h)}/stats/private")
    assert "bytes_written=5" in private and "create.count=1" in private
    bridge = await text(h, "/.meta/root/private")
    assert "inodes=7" in bridge and "open-fds=2" in bridge
    assert await text(h, "/.meta/root/options/read_only") == "no\n"
    assert await text(h, "/.meta/version") == "9.9.9\n"
    assert await text(h, "/.meta/cmdline") == "xlfs -f x.vol /mnt\n"
    link = await h.lookup("/.meta/logging/logfile")
    assert await h.top.readlink(h.frame(), link.inode) == b"/var/log/xlfs/mnt.log"


async def test_every_file_reports_the_size_it_reads():
    h = harness()
    await h.write_file("/f", b"hello")

    async def walk(path: str) -> int:
        count = 0
        for e in await h.listdir(path):
            name = e.name.decode()
            if name in (".", ".."):
                continue
            child = f"{path}/{name}"
            entry = await h.lookup(child)
            if stat.S_ISDIR(entry.attr.mode):
                count += await walk(child)
            elif stat.S_ISREG(entry.attr.mode):
                fd = await h.open(child, os.O_RDONLY)
                try:
                    data = await h.read(fd, 1 << 20)
                    attr = await h.top.getattr(h.frame(), fd.inode, fd)
                finally:
                    await h.close(fd)
                assert attr.size == len(data), child
                if "frames" not in child and "private" not in child and \
                        "profile" not in child and "process" not in child:
                    assert entry.attr.size == len(data), child   # lookup said the same
                count += 1
        return count
    assert await walk("/.meta") > 20


async def test_read_only_everywhere_but_the_writable_files():
    h = harness()
    fr = h.frame
    meta = (await h.lookup("/.meta")).inode
    version = (await h.lookup("/.meta/version")).inode
    for call in (lambda: h.open("/.meta/version", os.O_WRONLY),
                 lambda: h.mkdir("/.meta/x"),
                 lambda: h.create("/.meta/x"),
                 lambda: h.unlink("/.meta/version"),
                 lambda: h.rmdir("/.meta/graphs"),
                 lambda: h.rename("/.meta/version", "/.meta/v2"),
                 lambda: h.top.setattr(fr(), version, SetAttr(mode=0o777)),
                 lambda: h.top.setxattr(fr(), version, b"user.x", b"1", 0),
                 lambda: h.top.link(fr(), version, Loc(h.root, b"hard"))):
        with pytest.raises(OSError) as exc:
            await call()
        assert exc.value.errno == errno.EPERM
    await h.write_file("/f", b"x")
    for call in (lambda: h.rename("/f", "/.meta"), lambda: h.rename("/.meta", "/g"),
                 lambda: h.unlink("/.meta"), lambda: h.rmdir("/.meta")):
        with pytest.raises(OSError) as exc:
            await call()
        assert exc.value.errno == errno.EPERM
    for call in (lambda: h.mkdir("/.meta"), lambda: h.create("/.meta"),
                 lambda: h.symlink("x", "/.meta")):
        with pytest.raises(OSError) as exc:
            await call()
        assert exc.value.errno == errno.EEXIST
    assert await h.top.listxattr(fr(), meta) == []


async def test_loglevel_is_writable_names_and_glusterfs_numbers():
    h = harness()
    host = h.graph.host
    assert await text(h, "/.meta/logging/loglevel") == "INFO\n"
    loglevel = (await h.lookup("/.meta/logging/loglevel")).inode
    fd = await h.open("/.meta/logging/loglevel", os.O_WRONLY | os.O_TRUNC)
    await h.top.setattr(h.frame(), loglevel, SetAttr(size=0))      # truncate: accepted
    assert await h.write(fd, b"debug\n") == 6
    await h.close(fd)
    assert host.level == "DEBUG"
    assert await text(h, "/.meta/logging/loglevel") == "DEBUG\n"
    fd = await h.open("/.meta/logging/loglevel", os.O_WRONLY)
    await h.write(fd, b"9\n")                  # GlusterFS's GF_LOG_TRACE
    assert host.level == "TRACE"
    with pytest.raises(OSError) as exc:
        await h.write(fd, b"LOUD\n")
    assert exc.value.errno == errno.EINVAL and host.level == "TRACE"
    await h.close(fd)


async def test_loglevel_without_a_host_sets_the_process_level():
    h = harness(host=False)
    root = logging.getLogger()
    old = root.level
    try:
        fd = await h.open("/.meta/logging/loglevel", os.O_WRONLY)
        await h.write(fd, b"ERROR\n")
        await h.close(fd)
        assert root.level == logging.ERROR
        assert await text(h, "/.meta/logging/loglevel") == "ERROR\n"
    finally:
        root.setLevel(old)


async def test_profiling_counts_every_translator_and_every_file():
    h = harness()
    await h.write_file("/before", b"x")
    assert await text(h, "/.meta/measure_latency") == "0\n"
    fd = await h.open("/.meta/measure_latency", os.O_WRONLY)
    await h.write(fd, b"1\n")
    await h.close(fd)
    store = h.graph.xlators["store"]
    assert "readv" in store.__dict__                  # wrapped while profiling
    await h.mkdir("/d")
    await h.write_file("/d/f", b"y" * 100)
    assert await h.read_file("/d/f") == b"y" * 100
    profile = await text(h, f"{gdir(h)}/store/profile")
    kv = dict(line.split("=", 1) for line in profile.splitlines())
    assert kv["measure_latency"] == "1"
    assert kv["mkdir.count"] == "1" and kv["writev.bytes"] == "100"
    assert kv["readv.count"] == "1" and kv["readv.bytes"] == "100"
    assert float(kv["writev.latency_max_us"]) >= float(kv["writev.latency_min_us"]) > 0
    top = await text(h, "/.meta/top")
    line = next(l for l in top.splitlines() if l.endswith(" /d/f"))
    assert line.split()[:5] == ["2", "1", "100", "1", "100"]   # opens reads rb writes wb
    fd = await h.open("/.meta/measure_latency", os.O_WRONLY)
    await h.write(fd, b"0\n")
    await h.close(fd)
    assert "readv" not in store.__dict__ and "lookup" not in h.top.__dict__
    assert "mkdir.count=1" in await text(h, f"{gdir(h)}/store/profile")   # still readable


async def test_top_names_files_looked_up_before_profiling_from_the_host():
    h = harness()
    await h.mkdir("/old")
    await h.write_file("/old/f", b"12345")
    d, f = (await h.lookup("/old")).inode, (await h.lookup("/old/f")).inode
    fd = await h.open("/.meta/measure_latency", os.O_WRONLY)
    await h.write(fd, b"1")
    await h.close(fd)
    handle = Fd(f, os.O_RDONLY)
    await h.top.open(h.frame(), f, os.O_RDONLY, handle)          # no lookup: kernel-cached
    assert await h.top.readv(h.frame(), handle, 100, 0) == b"12345"
    await h.top.release(h.frame(), handle)
    top = await text(h, "/.meta/top")
    assert f"1 1 5 0 0 /<nodeid {f.nodeid}>" in top
    h.graph.host.names = {f.nodeid: (d.nodeid, b"f"), d.nodeid: (1, b"old")}
    assert "1 1 5 0 0 /old/f" in await text(h, "/.meta/top")


async def test_frames_show_what_the_host_says_is_pending():
    h = harness()
    h.graph.host.pending = [PendingRequest(12, "FSYNC", 345, 1000, 1000, 7, 2.5,
                                           ("meta-autoload", "stats"), "trio.sleep", False)]
    frames = json.loads(await text(h, "/.meta/frames"))
    assert frames["count"] == 1
    (r,) = frames["requests"]
    assert (r["unique"], r["opcode"], r["pid"], r["age_s"], r["where"], r["waiting_on"]) == \
        (12, "FSYNC", 345, 2.5, ["meta-autoload", "stats"], "trio.sleep")


async def test_state_follows_child_events():
    h = harness()
    store = h.graph.xlators["store"]
    state = f"{gdir(h)}/store/state"
    assert await text(h, state) == "up\n"
    store.notify_parents(Event.CHILD_DOWN, None)
    assert await text(h, state) == "down\n"
    h.graph.fini()
    assert "notify_parents" not in store.__dict__


async def test_statedump_write_then_read_gives_the_path(tmp_path, monkeypatch):
    h = harness()
    fd = await h.open("/.meta/statedump", os.O_RDWR)
    await h.write(fd, b"dump\n")
    assert await h.read(fd, 100) == b"/tmp/dump.1\n"
    await h.close(fd)
    assert await text(h, "/.meta/statedump") == "/tmp/dump.1\n"
    monkeypatch.setenv("XLFS_DUMP_DIR", str(tmp_path))
    h2 = harness(host=False)                      # no host: the graph's own dump
    fd = await h2.open("/.meta/statedump", os.O_RDWR)
    await h2.write(fd, b"1")
    path = (await h2.read(fd, 4096)).decode().strip()
    await h2.close(fd)
    assert path.startswith(str(tmp_path)) and "[xlator.debug.io-stats.stats]" in \
        open(path).read()


async def test_io_stats_dump_xattr_as_glusterfs(tmp_path, monkeypatch):
    monkeypatch.setenv("XLFS_DUMP_DIR", str(tmp_path))
    h = harness()
    await h.write_file("/f", b"abc")
    d = (await h.mkdir("/d")).inode
    await h.top.setxattr(h.frame(), d, b"trusted.io-stats-dump", b"/tmp/x/y", 0)
    dumped = tmp_path / "tmp-x-y.stats"
    assert "Cumulative Stats of stats" in dumped.read_text()
    with pytest.raises(OSError) as exc:           # the key never reached the storage
        await h.top.getxattr(h.frame(), d, b"trusted.io-stats-dump")
    assert exc.value.errno == errno.ENODATA
    key = f"trusted.io-stats-{os.getpid()}_json_dump".encode()
    await h.top.setxattr(h.frame(), h.root, key, b"j", 0)
    assert json.loads((tmp_path / "j.stats").read_text())["bytes_written"] == 3
    with pytest.raises(OSError) as exc:
        await h.top.setxattr(h.frame(), h.root, b"trusted.io-stats-dump", b"a/../../b", 0)
    assert exc.value.errno == errno.EINVAL


async def test_io_stats_dump_xattr_without_io_stats_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XLFS_DUMP_DIR", str(tmp_path))
    h = Harness.stack("meta/meta")
    with pytest.raises(OSError) as exc:
        await h.top.setxattr(h.frame(), h.root, b"trusted.io-stats-dump", b"x", 0)
    assert exc.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError):
        await h.top.getxattr(h.frame(), h.root, b"trusted.io-stats-dump")
    assert os.listdir(tmp_path) == []


async def test_other_objects_pass_through_untouched():
    h = harness()
    await h.write_file("/f", b"data")
    fd = await h.open("/f", os.O_RDWR)
    assert await h.read(fd, 10) == b"data"
    assert "direct_io" not in fd.open_flags
    assert Meta in type(h.top).__mro__ and not fd.ctx.get(h.top)
    await h.close(fd)
    assert await h.read_file("/f") == b"data"


async def test_inode_numbers_are_the_same_in_every_graph():
    first, second = harness(), harness()
    await second.lookup("/.meta/logging")                   # another order of lookups
    for path in ("/.meta/version", "/.meta/logging/loglevel", "/.meta"):
        assert (await first.lookup(path)).attr.ino == (await second.lookup(path)).attr.ino
    a = (await first.lookup(f"{gdir(first)}/stats")).attr.ino
    b = (await first.lookup(f"{gdir(first)}/store")).attr.ino
    assert a != b and min(a, b) >= META_INO_BASE


async def test_a_graph_that_replaced_another_finds_the_host_among_its_listeners():
    old, new = harness(), harness(host=False)
    old.graph.listeners.append(old.graph.host)       # as fuse_bridge.meta_host.attach
    new.graph.listeners.extend(old.graph.listeners)  # what a graph switch does
    assert await text(new, "/.meta/version") == "9.9.9\n"
    assert "inodes=7" in await text(new, "/.meta/root/private")


async def test_forget_of_a_meta_inode_stays_in_meta():
    h = harness()
    inode = (await h.lookup("/.meta/version")).inode
    await h.top.forget(h.frame(), inode)
    assert h.top not in inode.ctx


def test_meta_dir_name_is_an_option():
    h = Harness.from_volfile(VOLFILE.replace("type meta/meta",
                                             "type meta/meta\n    option meta-dir-name .m"))
    assert h.top.dir_name == ".m"
    with pytest.raises(Exception) as exc:
        Harness.from_volfile(VOLFILE.replace("type meta/meta",
                                             "type meta/meta\n    option meta-dir-name a/b"))
    assert "meta-dir-name" in str(exc.value)
