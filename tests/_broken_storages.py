"""Storages with one deliberate defect each, for proving that the kit catches it.

Each keeps the shipped lifecycle (``StorageBase``) and is correct but for its
defect, so that a kit test failing on it fails for that defect.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio.lowlevel

from anybreaker import BreakerRecord, StorageError
from anybreaker.storage._base import StorageBase


class DictStorage(StorageBase):
    """A correct in-memory storage that the defective ones below change one thing of."""

    def __init__(self) -> None:
        self.records: dict[str, BreakerRecord] = {}

    def accepts(self, stored: BreakerRecord | None, expected_version: int | None) -> bool:
        """Whether a compare-and-set expecting ``expected_version`` may store."""
        return (None if stored is None else stored.version) == expected_version

    def keep(self, record: BreakerRecord) -> BreakerRecord:
        """What of ``record`` is stored."""
        return record

    def reach(self) -> None:
        """Reach the (imaginary) server, at the start of every operation."""
        self._check_open()

    async def get(self, name: str) -> BreakerRecord | None:
        """Return the record stored under ``name``, or ``None``."""
        self.reach()
        return self.records.get(name)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if ``accepts`` says so."""
        self.reach()
        if not self.accepts(self.records.get(name), expected_version):
            return False
        self.records[name] = self.keep(record)
        return True

    async def delete(self, name: str) -> None:
        """Remove the record stored under ``name``, if any."""
        self.reach()
        self.records.pop(name, None)

    async def names(self) -> list[str]:
        """Return the names that have a record."""
        self.reach()
        return list(self.records)


class IgnoresVersions(DictStorage):
    """Stores on every compare-and-set, whatever version is stored."""

    def accepts(self, stored: BreakerRecord | None, expected_version: int | None) -> bool:
        return True


class ChecksPresenceOnly(DictStorage):
    """Compares only whether something is stored, not which version."""

    def accepts(self, stored: BreakerRecord | None, expected_version: int | None) -> bool:
        return (stored is None) == (expected_version is None)


class DropsField(DictStorage):
    """Forgets one field of every record it stores (it reads back as the default)."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field

    def keep(self, record: BreakerRecord) -> BreakerRecord:
        data = record.to_dict()
        del data[self.field]
        return BreakerRecord.from_dict(data)


class RoundsTimes(DictStorage):
    """Keeps times to the microsecond, like a careless text or timestamp column."""

    def keep(self, record: BreakerRecord) -> BreakerRecord:
        data: dict[str, Any] = record.to_dict()
        data["changed_at"] = round(data["changed_at"], 6)
        data["failures"] = [round(moment, 6) for moment in data["failures"]]
        return BreakerRecord.from_dict(data)


class LosesWritesUnderConcurrency(DictStorage):
    """Checks the version, yields to other tasks, then writes: not atomic."""

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        self._check_open()
        if not self.accepts(self.records.get(name), expected_version):
            return False
        await anyio.lowlevel.checkpoint()
        self.records[name] = record
        return True


class RefusesNothingAfterClose(DictStorage):
    """Keeps working after ``aclose()``."""

    def reach(self) -> None:
        pass


class FailsWithRawErrors(DictStorage):
    """Lets its driver's exception escape instead of raising ``StorageError``."""

    def reach(self) -> None:
        super().reach()
        raise ConnectionRefusedError("connection refused")


class FailsWithoutCause(DictStorage):
    """Raises ``StorageError`` without chaining the driver's exception."""

    def reach(self) -> None:
        super().reach()
        raise StorageError("the server did not answer")


class FileAtomicWithinOneProcess(StorageBase):
    """A JSON file whose compare-and-set holds a thread lock, but no lock on the file.

    Correct for the tasks of one process, it loses writes when processes share
    the file.
    """

    _locks: ClassVar[dict[Path, threading.Lock]] = {}

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = self._locks.setdefault(path, threading.Lock())

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        # Another process may be half-way through writing it.
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError as error:
            raise StorageError(f"{self.path} is torn") from error
        return data

    async def get(self, name: str) -> BreakerRecord | None:
        """Return the record stored under ``name``, or ``None``."""
        self._check_open()
        with self._lock:
            stored = self._load().get(name)
        return None if stored is None else BreakerRecord.from_dict(stored)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the version read is ``expected_version``."""
        self._check_open()
        with self._lock:
            data = self._load()
            stored = data.get(name)
            if (None if stored is None else stored["version"]) != expected_version:
                return False
            # Widens the window in which another process reads the same version;
            # blocking the event loop is what keeps this process's tasks out.
            time.sleep(0.002)  # noqa: ASYNC251
            data[name] = record.to_dict()
            self.path.write_text(json.dumps(data))
            return True

    async def delete(self, name: str) -> None:
        """Remove the record stored under ``name``, if any."""
        self._check_open()
        with self._lock:
            data = self._load()
            if data.pop(name, None) is not None:
                self.path.write_text(json.dumps(data))

    async def names(self) -> list[str]:
        """Return the names that have a record."""
        self._check_open()
        with self._lock:
            return list(self._load())
