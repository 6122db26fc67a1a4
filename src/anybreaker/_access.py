"""Storage access for a breaker object, with ``on_storage_error`` deciding what failures mean.

A storage failure is a ``StorageError`` or an operation that takes longer
than ``storage_timeout``. A storage that answers slowly because it is busy
(lock waits, compare-and-set conflicts) is not failing: the storages retry
lock waits themselves, and the breaker retries conflicts.

Once an operation fails, the breaker is in an outage for that name until a
probe, made at most every ``storage_retry_interval`` seconds, both reads the
stored record and writes what the breaker counted meanwhile. A storage that
answers reads but fails writes is therefore still failing. Meanwhile the
policy decides, without touching the storage:

- "local": the breaker keeps protecting with a process-local copy of the
  record (seeded with the last one known). The closed-state outcomes it
  counts there are kept in a ledger and merged into the stored window when
  the probe succeeds; then the stored record wins.
- "allow" / "reject": calls are let through / refused; outcomes stay
  pending, and are written once the storage answers.
- "raise": the ``StorageError`` reaches the caller.
"""

from __future__ import annotations

from typing import Any, Final

import anyio

from . import _machine as machine
from ._core import BreakerCore, Extra, logger
from ._errors import StorageError
from ._machine import Tally
from ._state import WindowStats
from .storage._protocol import INITIAL_RECORD, BreakerRecord
from .storage.memory import MemoryStorage

__all__ = ["Outage", "Reading", "Refused", "StorageAccess"]

_NO_RECORD: Final = INITIAL_RECORD


class Refused(Exception):
    """The storage fails and ``on_storage_error`` ("allow", "reject") decides instead."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(error)
        self.error = error


class Outage:
    """A storage that failed for one breaker, until a probe succeeds."""

    __slots__ = ("error", "fallback", "ledger", "retry_at")

    def __init__(self, error: StorageError, record: BreakerRecord, retry_at: float) -> None:
        self.error = error
        self.retry_at = retry_at
        self.fallback = MemoryStorage()
        """The process-local copy the "local" policy works on."""
        if record.version:
            self.fallback._put("", record)
        self.ledger = Tally(record.generation)
        """Closed-state outcomes counted locally, for the storage's window."""

    def keep(self, tally: Tally) -> None:
        """Keep ``tally``, written to the local copy, for the storage's window too."""
        if tally.generation == self.ledger.generation:
            self.ledger.merge(tally)


class Reading:
    """A read in flight for admissions, begun at ``began`` (the breaker's clock)."""

    __slots__ = ("began", "done", "record")

    def __init__(self, began: float) -> None:
        self.began = began
        self.done = anyio.Event()
        self.record: BreakerRecord | None = None
        """What the read adopted; ``None`` if it failed or was cancelled."""


class StorageAccess(BreakerCore):
    """Reads and compare-and-sets of this breaker's record, through the failure policy."""

    __slots__ = ()

    async def _read(self, now: float) -> BreakerRecord:
        """Read the stored record (or, in an outage, the local one) and adopt it."""
        begun = self._begin()
        record = await self._operate(now, "get")
        return self._adopt(record or _NO_RECORD, now, begun)

    async def _read_for_admission(self, now: float) -> BreakerRecord:
        """``_read()``, shared by the calls that arrive while it is in flight.

        A flood of calls at a stale cache (an outage begins, a burst starts)
        makes one read, not one each: a call that finds a read in flight,
        begun less than ``staleness`` ago, waits for its answer, which is as
        fresh as its own would be allowed to be. If that read fails or is
        cancelled, the call reads for itself (during an outage that touches
        no storage).
        """
        extra = self._more()
        reading = extra.reading
        if reading is not None and now - reading.began < self._staleness:
            await reading.done.wait()
            return reading.record or await self._read(now)
        if self._cell is not None:  # a MemoryStorage read never waits
            return await self._read(now)
        reading = extra.reading = Reading(now)
        try:
            reading.record = await self._read(now)
            return reading.record
        finally:
            if extra.reading is reading:
                extra.reading = None
            reading.done.set()

    async def _swap(
        self, expected: BreakerRecord, new: BreakerRecord, now: float
    ) -> BreakerRecord | None:
        """Store ``new`` if ``expected`` is current: ``None``, else the record to retry against.

        The record to retry against is the storage's, as read after the
        conflict (by the same operation, where the storage can), unless the
        cache already holds a newer one.
        """
        begun = self._begin()
        version = expected.version or None
        if callable(getattr(self._storage, "compare_and_set_or_get", None)):
            stored, current = await self._operate(now, "compare_and_set_or_get", version, new)
        else:
            stored = await self._operate(now, "compare_and_set", version, new)
            if not stored:
                begun = self._begin()
                current = await self._operate(now, "get")
        if stored:
            self._adopt(new, now, begun)
            return None
        return self._adopt(current or _NO_RECORD, now, begun)

    async def _operate(self, now: float, method: str, *args: Any) -> Any:
        """Run one storage operation, or what the policy says instead while it fails."""
        extra = self._more()
        outage = extra.outage
        if outage is not None:
            if now >= outage.retry_at:
                record = await self._probe(extra, outage, now)
                if record is not None:
                    # Over: a write must start again from the stored record.
                    if method == "get":
                        return record
                    return (False, record) if method == "compare_and_set_or_get" else False
            return await self._instead(outage, method, args)
        try:
            return await self._call(method, *args)
        except (StorageError, TimeoutError) as error:
            outage = self._fail(extra, error, method, now)
            return await self._instead(outage, method, args)

    async def _call(self, method: str, *args: Any) -> Any:
        operation = getattr(self._storage, method)
        if self._cell is not None:  # a MemoryStorage answers at once, never slowly
            return await operation(self._name, *args)
        with anyio.fail_after(self._config.storage_timeout):
            return await operation(self._name, *args)

    async def _instead(self, outage: Outage, method: str, args: tuple[Any, ...]) -> Any:
        """What an operation does while the storage fails, by policy."""
        policy = self._config.on_storage_error
        if policy == "local":
            # The local copy lives under the name "" of its own MemoryStorage.
            return await getattr(outage.fallback, method)("", *args)
        if policy == "raise":
            raise outage.error
        raise Refused(outage.error)

    def _storage_error(self, error: Exception, method: str) -> StorageError:
        """``error`` as a ``StorageError``: a timeout says which operation took too long."""
        if isinstance(error, StorageError):
            return error
        timed_out = StorageError(
            f"circuit {self._name!r}: storage operation {method} took longer "
            f"than storage_timeout={self._config.storage_timeout} s"
        )
        timed_out.__cause__ = error
        return timed_out

    def _fail(self, extra: Extra, error: Exception, method: str, now: float) -> Outage:
        """Start an outage: say so once, and keep the record known until now."""
        error = self._storage_error(error, method)
        logger.warning(
            "circuit %r: storage %r failed (%s); on_storage_error=%r until it answers again",
            self._name,
            self._storage,
            str(error) or type(error).__name__,
            self._config.on_storage_error,
        )
        outage = Outage(error, self._record, now + self._config.storage_retry_interval)
        extra.outage = outage
        return outage

    async def _probe(self, extra: Extra, outage: Outage, now: float) -> BreakerRecord | None:
        """Try the storage again: read it and write the ledger. The stored record, or ``None``."""
        ledger = outage.ledger
        try:
            begun = self._begin()
            record = await self._call("get") or _NO_RECORD
            for _ in self._attempts():
                new = machine.record_outcomes(record, self._config, now, ledger, self._trip())
                if new is None:
                    ledger = Tally(ledger.generation)
                    break
                begun = self._begin()
                if await self._call("compare_and_set", record.version or None, new):
                    record, ledger = new, Tally(ledger.generation)
                    break
                begun = self._begin()
                record = await self._call("get") or _NO_RECORD
        except (StorageError, TimeoutError) as error:
            outage.error = self._storage_error(error, "get")
            outage.retry_at = now + self._config.storage_retry_interval
            return None
        extra.outage = None
        logger.info("circuit %r: storage %r answers again", self._name, self._storage)
        record = self._adopt(record, now, begun, force=True)
        if ledger and ledger.generation == self._record.generation:
            # Conflicts outlasted storage_timeout: the next write carries them.
            if extra.tally is not None:
                ledger.merge(extra.tally)
            extra.tally = ledger
        return record

    def _attempts(self) -> Any:
        """Yield once per compare-and-set attempt, for up to ``storage_timeout`` seconds.

        Each conflict means another writer made progress, so a write retries
        however many times it takes within that time.
        """
        yield
        deadline = anyio.current_time() + self._config.storage_timeout
        while anyio.current_time() < deadline:
            yield

    def _trip(self) -> machine.Trip | None:
        """``config.trip``, guarded: a rule that raises is logged and does not trip."""
        return None if self._config.trip is None else self._guarded_trip

    def _guarded_trip(self, stats: WindowStats) -> bool:
        trip = self._config.trip
        assert trip is not None
        try:
            return bool(trip(stats))
        except Exception:
            logger.exception("circuit %r: trip rule %r raised", self._name, trip)
            return False
