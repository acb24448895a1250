"""fuse_bridge.mount_watch: which requests re-read the mount's flags first.

Opens always depend on them (noatime); the other modifying requests only through
--read-only's translator, so they check only while it is in the client's graph (a
remount,rw then still lets the next write through: tests/mount/test_remount.py)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fuse_bridge import abi
from fuse_bridge.mount import VfsFlags
from fuse_bridge.mount_watch import (MODIFYING_OPCODES, OPEN_OPCODES, READ_ONLY_VOLUME,
                                     WATCHED_OPCODES, MountWatch)

O = abi.Opcode


class FakeSession:
    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {}
        for op in WATCHED_OPCODES | {int(O.GETATTR)}:
            self.handlers[op] = self._handler(op)

    @staticmethod
    def _handler(op: int) -> Any:
        def handler(c: Any, req: Any, body: Any) -> Any:
            return ("served", op)
        return handler

    def handler(self, op: int) -> Any:
        return self.handlers.get(op)

    def set_handler(self, op: int, handler: Any) -> None:
        self.handlers[op] = handler


def installed(tmp_path) -> tuple[MountWatch, FakeSession, list[int]]:
    watch = MountWatch(str(tmp_path), lambda old, new: None)
    checks: list[int] = []
    watch.check = lambda: checks.append(1)       # type: ignore[method-assign]
    session = FakeSession()
    watch.install(session)
    return watch, session, checks


def client(*volumes: str) -> Any:
    return SimpleNamespace(graph=SimpleNamespace(xlators={v: object() for v in volumes}))


def test_opens_always_check_and_other_modifications_only_under_read_only(tmp_path):
    watch, session, checks = installed(tmp_path)
    try:
        plain, read_only = client("posix", "locks"), client("posix", READ_ONLY_VOLUME)
        for op in OPEN_OPCODES:
            checks.clear()
            assert session.handlers[op](plain, None, b"") == ("served", op)
            assert checks == [1], O(op).name
        for op in MODIFYING_OPCODES:
            checks.clear()
            assert session.handlers[op](plain, None, b"") == ("served", op)
            assert checks == [], O(op).name
            assert session.handlers[op](read_only, None, b"") == ("served", op)
            assert checks == [1], O(op).name
        checks.clear()
        session.handlers[int(O.GETATTR)](read_only, None, b"")
        assert checks == []
    finally:
        watch.close()


def test_current_checks_first(tmp_path):
    watch = MountWatch(str(tmp_path), lambda old, new: None)
    try:
        now = VfsFlags.from_mountinfo({"options": "rw,noatime",
                                       "super_options": "rw"})

        def check() -> None:
            watch.flags = now
        watch.check = check                      # type: ignore[method-assign]
        assert watch.current() is now
    finally:
        watch.close()
