"""One rule for the data caches: drop what is cached of a file around every fop that may
change its contents, the fops read from the fop table (``fop_targets.data_changes_of``).

    class IoCache(DataChangeInvalidation, Translator):
        def _data_changed(self, inode):
            ...drop the inode's pages...

io-cache, read-ahead and quick-read mix this in; it gives them ``writev``, ``setattr``,
``fallocate``, ``copy_file_range``, ``create``, ``open`` and any fop the table gains
that names an existing inode, so none of them lists those fops by hand.  A translator
that needs more around one of them overrides it and calls ``super()``.

The cache is dropped before the fop is wound and again once it returns: a read that
raced with the change may have refilled the cache with the old contents meanwhile.

write-behind needs the other side of the same rule: a change must land after the writes
it holds back.  :class:`DataChangeOrdering` gives it the same fops, each waiting for the
inode's held writes (``_await_held_data(inode)``) before it is wound.
"""
from __future__ import annotations

from typing import Any, Callable

from .fop_targets import DATA_CHANGING_FOPS, data_changes_of


class DataChangeInvalidation:
    """Mixin (before Translator in the bases): ``_data_changed(inode)`` on every change."""

    def _data_changed(self, inode: Any) -> None:
        """Forget every byte of ``inode`` this translator holds."""
        raise NotImplementedError

    async def _wind_data_change(self, fop_name: str, frame: Any, args: tuple,
                                kwargs: dict) -> Any:
        before = data_changes_of(fop_name, args, kwargs)
        for inode in before:
            self._data_changed(inode)
        try:
            result = await getattr(self.child, fop_name)(frame, *args, **kwargs)
        finally:
            for inode in before:
                self._data_changed(inode)
        for inode in data_changes_of(fop_name, args, kwargs, result):
            if inode not in before:
                self._data_changed(inode)
        return result


class DataChangeOrdering:
    """Mixin (before Translator in the bases) for a translator that holds writes back:
    ``await _await_held_data(inode)`` before every fop that may change ``inode``'s
    contents is wound, so the change lands after the writes made before it."""

    async def _await_held_data(self, inode: Any) -> None:
        """Return once every write held back for ``inode`` has landed."""
        raise NotImplementedError

    async def _wind_data_change(self, fop_name: str, frame: Any, args: tuple,
                                kwargs: dict) -> Any:
        for inode in data_changes_of(fop_name, args, kwargs):
            await self._await_held_data(inode)
        return await getattr(self.child, fop_name)(frame, *args, **kwargs)


def _winding(fop_name: str, what: str) -> Callable[..., Any]:
    async def fop(self: Any, frame: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._wind_data_change(fop_name, frame, args, kwargs)
    fop.__name__ = fop.__qualname__ = fop_name
    fop.__doc__ = f"{fop_name}: wind it, {what}."
    return fop


for _name in DATA_CHANGING_FOPS:
    setattr(DataChangeInvalidation, _name,
            _winding(_name, "dropping the cached data it may change"))
    setattr(DataChangeOrdering, _name,
            _winding(_name, "after the held writes of the data it may change"))
del _name
