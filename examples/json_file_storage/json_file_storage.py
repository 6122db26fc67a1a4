"""A storage that keeps breaker records in one JSON file, for hosts sharing a volume.

An example of a custom storage backend for anybreaker; see the page "Writing
a storage backend". Use it as::

    storage = JsonFileStorage("/shared/breakers.json")
    breaker = CircuitBreaker("model-api", storage=storage)

or, with the entry point registered, ``storage_from_url("jsonfile:///shared/breakers.json")``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio.to_thread

from anybreaker import BreakerRecord, StorageError

__all__ = ["JsonFileStorage", "from_url"]

FORMAT = "anybreaker-json-file"
FORMAT_VERSION = 1

T = TypeVar("T")
Breakers = dict[str, Any]
"""The file's records, by breaker name, as JSON values (``BreakerRecord.to_dict()``)."""


class JsonFileStorage:
    """Keep breaker records in one JSON file that processes, or hosts, share.

    The file holds ``{"format": "anybreaker-json-file", "format_version": 1,
    "breakers": {name: record}}``. A writer holds an exclusive ``flock`` on
    ``PATH.lock`` while it reads the file, changes it and replaces it whole,
    so compare-and-set is atomic across processes; readers take no lock, as
    a replaced file is never seen half-written. A file in another format is
    refused with ``StorageError``, never overwritten.

    ``flock`` works across hosts on NFS v4 and on most cluster file systems;
    check yours before sharing a file between hosts.
    """

    def __init__(self, path: str | os.PathLike[str], *, staleness: float = 0.1) -> None:
        if not isinstance(staleness, int | float) or not 0 <= staleness < math.inf:
            raise ValueError(
                f"staleness must be a finite number of seconds >= 0, got {staleness!r}"
            )
        self.path = Path(path)
        self.staleness = float(staleness)
        # The lock lives in a file of its own: the data file is replaced on
        # every write, and a lock on a replaced file protects nothing.
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._closed = False

    def __repr__(self) -> str:
        return f"JsonFileStorage({str(self.path)!r})"

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the storage; it holds nothing open between operations."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self!r} is closed; open a new one")

    # -- the protocol --------------------------------------------------------

    async def get(self, name: str) -> BreakerRecord | None:
        """Return the record stored under ``name``, or ``None``."""
        stored = (await self._run(self._read)).get(name)
        return None if stored is None else self._record(name, stored)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is ``expected_version`` (None: nothing)."""
        if record.version != (expected_version or 0) + 1:
            raise ValueError(f"record.version must be {(expected_version or 0) + 1}")

        def change(breakers: Breakers) -> bool:
            stored = breakers.get(name)
            version = None if stored is None else self._record(name, stored).version
            if version != expected_version:
                return False
            breakers[name] = record.to_dict()
            return True

        return await self._run(self._update, change)

    async def delete(self, name: str) -> None:
        """Remove the record stored under ``name``, if any."""
        await self._run(self._update, lambda breakers: breakers.pop(name, None) is not None)

    async def names(self) -> list[str]:
        """Return the names that have a record."""
        return list(await self._run(self._read))

    # -- the file --------------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking file work in a worker thread; OS errors become StorageError."""
        self._check_open()
        try:
            return await anyio.to_thread.run_sync(function, *args)
        except OSError as error:
            raise StorageError(f"{self!r}: {error}") from error

    def _read(self) -> Breakers:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
        except ValueError as error:
            raise StorageError(f"{self.path} is not JSON; refusing to use it") from error
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise StorageError(f"{self.path} is not an anybreaker JSON file; refusing to use it")
        if document.get("format_version") != FORMAT_VERSION:
            raise StorageError(
                f"{self.path} has format version {document.get('format_version')!r}, "
                f"this storage knows {FORMAT_VERSION}; refusing to use it"
            )
        breakers = document.get("breakers")
        if not isinstance(breakers, dict):
            raise StorageError(f"{self.path} has no breakers mapping; refusing to use it")
        return breakers

    def _record(self, name: str, stored: Any) -> BreakerRecord:
        try:
            return BreakerRecord.from_dict(stored)
        except (ValueError, AttributeError) as error:
            # Perhaps written by a newer release: leave it as it is.
            raise StorageError(
                f"{self.path}: record {name!r} is not one this storage knows"
            ) from error

    def _update(self, change: Callable[[Breakers], bool]) -> bool:
        """Under the lock, apply ``change`` and replace the file if it changed something."""
        with open(self._lock_path, "a") as lock:
            # Released when the file is closed, even if this thread dies.
            fcntl.flock(lock, fcntl.LOCK_EX)
            breakers = self._read()
            if not change(breakers):
                return False
            self._replace(breakers)
            return True

    def _replace(self, breakers: Breakers) -> None:
        """Write a new file beside the old one, then rename it over the old one."""
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "breakers": breakers}
        descriptor, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(document, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def from_url(url: str, **options: Any) -> JsonFileStorage:
    """Open ``jsonfile:///absolute/path.json?staleness=0.5`` (the entry point's target)."""
    parts = urlsplit(url)
    if parts.scheme != "jsonfile" or parts.netloc or not parts.path:
        raise ValueError(f"expected jsonfile:///absolute/path.json, got {url!r}")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "staleness" or name in options:
            raise ValueError(f"unknown or repeated option {name!r} in {url!r}")
        try:
            options[name] = float(value)
        except ValueError:
            raise ValueError(f"option staleness must be seconds, got {value!r}") from None
    return JsonFileStorage(unquote(parts.path), **options)
