"""Graph events (GlusterFS's notify): PARENT_* travel down, CHILD_* and UPCALL travel up."""
from __future__ import annotations

import enum


class Event(enum.Enum):
    PARENT_UP = "parent-up"
    PARENT_DOWN = "parent-down"
    CHILD_UP = "child-up"
    CHILD_DOWN = "child-down"
    CHILD_CONNECTING = "child-connecting"
    UPCALL = "upcall"

    @property
    def goes_down(self) -> bool:
        return self in (Event.PARENT_UP, Event.PARENT_DOWN)
