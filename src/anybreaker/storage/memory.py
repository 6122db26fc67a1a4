"""``MemoryStorage``: records in a dict, shared by the breakers of one process."""

from __future__ import annotations

import threading
from typing import Any

from ._base import StorageBase
from ._protocol import INITIAL_RECORD, BreakerRecord, check_new_version

__all__ = ["MemoryStorage"]

# One lock for every MemoryStorage: it is held for a dict operation only, and
# a lock per storage would double the size of the breakers that own one each.
_LOCK = threading.Lock()


class RecordCell:
    """What is stored under one name, kept up to date by the storage.

    A breaker holds its name's cell and checks that its cached record is
    still the stored one with one identity test (``INITIAL_RECORD``: none).
    """

    __slots__ = ("record",)

    def __init__(self, record: BreakerRecord) -> None:
        self.record = record


class MemoryStorage(StorageBase):
    """Keep breaker records in memory.

    Safe for any number of concurrent tasks, and for event loops in several
    threads: no method awaits while it holds the state. Breakers see each
    other's writes at once (``staleness`` is 0).
    """

    __slots__ = ("_cells", "_live", "_records")

    staleness = 0.0

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._cells: dict[str, RecordCell] | None = None
        """The cells handed to breakers (``_cell()``); every write goes through ``_put()``."""
        self._closed = False
        # What the breakers of this process keep beside a record (their
        # shared window, see anybreaker._live): written into the record
        # (``store()``) before a read or write through the storage itself
        # answers, and dropped with the record.
        self._live: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<MemoryStorage with {len(self._records)} records>"

    async def _close(self) -> None:
        self._live.clear()

    async def get(self, name: str) -> BreakerRecord | None:
        """Return the record stored under ``name``, or ``None``."""
        self._check_open()
        with _LOCK:
            return self._settled(name)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is ``expected_version``."""
        stored, _ = await self.compare_and_set_or_get(name, expected_version, record)
        return stored

    async def compare_and_set_or_get(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> tuple[bool, BreakerRecord | None]:
        """``compare_and_set()``; when it does not store, also what is stored."""
        self._check_open()
        check_new_version(expected_version, record)
        with _LOCK:
            current = self._settled(name)
            if (None if current is None else current.version) != expected_version:
                return False, current
            self._put(name, record)
            self._live.pop(name, None)
            return True, None

    def _settled(self, name: str) -> BreakerRecord | None:
        """The record of ``name``, with what its breakers counted in place (with ``_LOCK``)."""
        live = self._live.get(name)
        if live is not None:
            live.store(self, name)
        return self._records.get(name)

    def _cell(self, name: str) -> RecordCell:
        """The cell of ``name``, for a breaker of that name."""
        with _LOCK:
            cells = self._cells
            if cells is None:
                cells = self._cells = {}
            cell = cells.get(name)
            if cell is None:
                cell = cells[name] = RecordCell(self._records.get(name, INITIAL_RECORD))
            return cell

    def _put(self, name: str, record: BreakerRecord | None) -> None:
        """Store ``record`` under ``name`` (``None``: remove it), with ``_LOCK``."""
        if record is None:
            self._records.pop(name, None)
        else:
            self._records[name] = record
        cell = None if self._cells is None else self._cells.get(name)
        if cell is not None:
            cell.record = INITIAL_RECORD if record is None else record

    def _replace(self, name: str, current: BreakerRecord, record: BreakerRecord) -> bool:
        """Store ``record`` if ``current`` is what is stored (for the in-process breaker)."""
        if self._closed:
            self._check_open()
        with _LOCK:
            # What the breakers counted in place is stored first: if there is
            # any, ``current`` is no longer the stored record.
            if (self._settled(name) or INITIAL_RECORD) is not current:
                return False
            self._put(name, record)
            self._live.pop(name, None)
            return True

    async def delete(self, name: str) -> None:
        """Remove the record stored under ``name``, if any."""
        self._check_open()
        with _LOCK:
            self._put(name, None)
            self._live.pop(name, None)

    async def names(self) -> list[str]:
        """Return the names that have a record."""
        self._check_open()
        return list(self._records)
