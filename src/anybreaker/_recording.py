"""The outcome path: calls' outcomes counted, batched and written to the storage.

Outcomes are the contended path: an outage is many tasks in many processes
failing at once. So:

- Outcomes are counts in the window's buckets (a ``Tally``), never a list.
- Each breaker object writes one record at a time; outcomes that arrive
  while a write is in flight join the next one (group commit), so a failing
  call waits for at most the write in flight and its own.
- A compare-and-set conflict re-reads and re-applies the counts; counts
  that could not be written (conflicts beyond ``storage_timeout``, a failing
  storage under "allow" or "reject") stay pending for the next write. Only
  counts that became stale (their generation ended) are dropped.
- A closed-state success takes no lock and does no I/O: it is counted, and
  joins the next write, or a flush made at most every ``FLUSH_INTERVAL``
  seconds by a later call. A failure, or a slow call when a rule counts
  them, is written at once: the call that crosses a threshold opens the
  breaker.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import anyio

from . import _machine as machine
from ._access import Refused
from ._core import logger
from ._errors import RetryAfter, StorageError
from ._live import FLUSH_INTERVAL, LiveCounting
from ._machine import Outcome, Tally
from ._state import CallEvent, WindowStats
from .storage._protocol import INITIAL_RECORD, BreakerRecord
from .storage.memory import MemoryStorage

__all__ = ["FLUSH_INTERVAL", "Change", "OutcomeRecorder"]

Change = Callable[[BreakerRecord, float, Tally | None], BreakerRecord | None]
"""A write: the record to store given the current one, the time and the pending counts."""


class OutcomeRecorder(LiveCounting):
    """Counting outcomes and writing them: the write path of ``CircuitBreaker``."""

    __slots__ = ()

    def _classify(self, exc: BaseException | None) -> Outcome:
        if exc is None:
            return Outcome.SUCCESS
        if not isinstance(exc, Exception) or isinstance(exc, self._config.ignored_exceptions):
            return Outcome.NEUTRAL
        is_failure = self._config.is_failure
        if is_failure is None:
            return Outcome.FAILURE
        try:
            return Outcome.FAILURE if is_failure(exc) else Outcome.SUCCESS
        except Exception:
            logger.exception(
                "circuit %r: is_failure raised on %r; counting a failure", self._name, exc
            )
            return Outcome.FAILURE

    async def _finish(
        self,
        generation: int,
        token: str | None,
        exc: BaseException | None,
        started: float | None,
        *,
        outcome: Outcome | None = None,
    ) -> None:
        """Count how a call ended, and write what it changes.

        ``generation`` and ``token`` are the call's admission's (generation
        -1: a call that counts only in this object's stats); ``started``:
        when it began, if it was timed; ``outcome``: decided by the caller.
        """
        now = self._clock()
        if outcome is None:
            outcome = self._classify(exc)
        extra = self._extra or self._more()
        duration = 0.0 if started is None else now - started
        slow_after = self._config.slow_call_duration
        slow = slow_after is not None and duration > slow_after
        unsent = (
            outcome is Outcome.SUCCESS
            and not slow
            and token is None
            and generation == self._record.generation
            and not isinstance(exc, RetryAfter)
        )
        if outcome is Outcome.FAILURE:
            extra.failed += 1
        elif outcome is Outcome.NEUTRAL:
            extra.neutral += 1
        elif not unsent:
            # Counted in this object's stats, and already elsewhere (or nowhere).
            self._succeeded += 1
            self._filed += 1
        if self._meter is not None and started is not None:
            self._meter.ran(outcome, duration, slow)
        if extra.call_listeners:
            self._emit(CallEvent(self._name, outcome, duration, slow, now))  # type: ignore[arg-type]
        try:
            if isinstance(exc, RetryAfter) and exc.seconds > 0:
                if token is None and generation == self._record.generation:
                    self._tally().add(machine.bucket_start(now, self._config), outcome, slow)
                await self._write(self._retry_after(exc.seconds), with_tally=True)
            elif token is not None:
                await self._write(self._trial(generation, token, outcome, slow))
            elif generation != self._record.generation or outcome is Outcome.NEUTRAL:
                pass  # stale, or counted nowhere but in this object's stats
            elif unsent:
                if self._unsent_start <= now < self._unsent_until:
                    self._succeeded += 1
                else:
                    await self._success_slowly(now)
            elif not (
                self._cell is not None
                and not extra.tally
                and self._count_in_place(outcome, now, slow)
            ):
                # A failure, or a slow success: written at once if it can trip a rule.
                self._tally().add(machine.bucket_start(now, self._config), outcome, slow)
                if outcome is Outcome.FAILURE or self._slow_calls_trip():
                    await self._commit()
        except Refused:
            pass  # "allow" and "reject": the counts stay pending
        except StorageError as error:
            if exc is not None:
                error.add_note(f"raised while recording the outcome of the guarded call: {exc!r}")
            raise
        if extra.changes:
            await self._deliver()

    def _outcomes(
        self, record: BreakerRecord, now: float, tally: Tally | None
    ) -> BreakerRecord | None:
        """The write of pending counts: merged into the window, the rules checked."""
        assert tally is not None
        return machine.record_outcomes(record, self._config, now, tally, self._trip())

    def _trial(self, generation: int, token: str, outcome: Outcome, slow: bool) -> Change:
        """The write of a trial's outcome."""
        config = self._config

        def trial(record: BreakerRecord, now: float, tally: Tally | None) -> BreakerRecord | None:
            return machine.settle(record, config, now, generation, token, outcome, slow)

        return trial

    def _retry_after(self, seconds: float) -> Change:
        """The write of a dependency's ``Retry-After``: open at least that long."""
        config = self._config

        def retry_after(
            record: BreakerRecord, now: float, tally: Tally | None
        ) -> BreakerRecord | None:
            return machine.open_for(record, config, now, seconds, tally, extend_only=True)

        return retry_after

    def _slow_calls_trip(self) -> bool:
        """Whether a slow call can trip a rule, and so is written at once."""
        return self._config.slow_call_rate_threshold is not None or self._config.trip is not None

    def _tally(self) -> Tally:
        """The pending counts, with the successes counted so far filed in."""
        extra = self._more()
        tally = extra.tally
        if tally is None:
            tally = extra.tally = Tally(self._record.generation)
        unsent = self._succeeded - self._filed
        if unsent:
            tally.add(self._unsent_start, Outcome.SUCCESS, count=unsent)
            self._filed = self._succeeded
        return tally

    async def _success_slowly(self, now: float) -> None:
        """Count a success that ends its bucket, or finds a flush due: file, maybe write.

        The success is not in ``_succeeded`` yet; the earlier ones not yet
        filed belong to the bucket at ``_unsent_start``. On a shared storage
        they are written at most every ``FLUSH_INTERVAL`` (the first time as
        soon as a later call finds them pending); in place, the live window
        keeps its own pace.
        """
        start = machine.bucket_start(now, self._config)
        extra = self._extra
        due = in_place = False
        if extra is not None or self._succeeded != self._filed:
            extra = self._more()
            in_place = (
                self._cell is not None
                and not extra.tally
                and self._count_in_place(Outcome.SUCCESS, now)
            )
            if not in_place:
                if extra.flush_due == -math.inf or extra.flush_due > now + FLUSH_INTERVAL:
                    # Nothing flushed yet, or the clock stepped back: an interval
                    # after the oldest success pending.
                    pending = self._succeeded != self._filed
                    extra.flush_due = (self._unsent_start if pending else now) + FLUSH_INTERVAL
                due = now >= extra.flush_due
                if due:
                    extra.flush_due = now + FLUSH_INTERVAL
                self._tally()
        self._succeeded += 1
        if in_place:
            self._filed += 1
        self._unsent_start = start
        flush_due = now + FLUSH_INTERVAL if extra is None or in_place else extra.flush_due
        self._unsent_until = min(start + self._config.bucket_width, flush_due)
        if due:
            with contextlib.suppress(Refused):
                await self._commit()

    async def _commit(self) -> None:
        """Write the pending counts; outcomes arriving meanwhile join the next write.

        The counts pending now are batch number ``extra.batch``; a caller
        waits for the write in flight, then returns at once if that write
        or a later one carried its batch.
        """
        await self._write(self._outcomes, with_tally=True, batch=self._more().batch)

    async def _write(
        self, change: Change, *, with_tally: bool = False, batch: int | None = None
    ) -> bool:
        """Apply ``change`` with compare-and-set, one write of this object at a time.

        ``with_tally``: the pending counts go with it. ``batch``: a write of
        the pending counts alone, skipped when that batch was written
        already. Returns whether the write was made (or was not needed).
        Shielded from cancellation: a trial permit taken is also given back,
        and counts taken are not lost half-way.
        """
        extra = self._more()
        if self._cell is not None and extra.outage is None:
            return self._store_local(change, with_tally)
        if extra.lock is None:
            extra.lock = anyio.Lock(fast_acquire=True)
        with anyio.CancelScope(shield=True):
            async with extra.lock:
                if batch is not None and extra.written >= batch:
                    return True
                return await self._store(change, with_tally)
        raise AssertionError("unreachable: the shield and the lock swallow nothing")

    async def _store(self, change: Change, with_tally: bool) -> bool:
        """The compare-and-set loop of one write; ``False`` if conflicts outlasted it."""
        extra = self._more()
        now = self._clock()
        tally: Tally | None = None
        taken = 0
        if with_tally:
            tally = self._tally()
            extra.tally = None
            taken = extra.batch
            extra.batch += 1
        record = self._record
        try:
            for _ in self._attempts():
                new = change(record, now, tally)
                if new is None:
                    tally = None  # stale counts, or nothing to change
                    extra.written = max(extra.written, taken)
                    return True
                basis = await self._swap(record, new, now)
                if basis is None:
                    if tally and extra.outage is not None:
                        extra.outage.keep(tally)
                    tally = None
                    extra.written = max(extra.written, taken)
                    return True
                record = basis
                if tally is not None:
                    taken = self._join_retry(tally, taken)
            logger.info(
                "circuit %r: compare-and-set conflicts went on for longer than "
                "storage_timeout=%s s; the counts stay pending for the next write",
                self._name,
                self._config.storage_timeout,
            )
            return False
        finally:
            if tally:
                self._keep_pending(tally)

    def _store_local(self, change: Change, with_tally: bool) -> bool:
        """``_store()`` on a MemoryStorage: nothing awaits, so nothing interleaves.

        Only another thread's event loop may write in between; then it tries again.
        """
        now = self._clock()
        self._flush_in_place(now)
        tally: Tally | None = None
        if with_tally:
            tally = self._tally()
            self._more().tally = None
        storage = self._storage
        assert isinstance(storage, MemoryStorage)
        while True:
            stored = storage._records.get(self._name, INITIAL_RECORD)
            if stored is not self._record and stored.version != self._record.version:
                self._adopt(stored, now, 0, force=True)
            new = change(self._record, now, tally)
            if new is None:
                return True
            if storage._replace(self._name, stored, new):
                self._adopt_own(new, now)
                return True

    def _join_retry(self, tally: Tally, taken: int) -> int:
        """Let the counts that arrived during a conflict join the retry; its batch number.

        Their callers then wait for this write alone, not for the next one too.
        """
        extra = self._more()
        if not extra.tally and self._succeeded == self._filed:
            return taken
        arrived = self._tally()
        if arrived.generation != tally.generation:
            return taken  # stale, or newer: they wait for their own write
        tally.merge(arrived)
        extra.tally = None
        extra.batch += 1
        return extra.batch - 1

    def _keep_pending(self, tally: Tally) -> None:
        """Put counts that were not written back in front of the pending ones."""
        extra = self._more()
        if tally.generation != self._record.generation:
            return  # stale: the breaker changed state since
        if extra.tally is not None:
            tally.merge(extra.tally)
        extra.tally = tally

    async def get_window_stats(self) -> WindowStats:
        """Return the window's numbers as the storage holds them, for every process.

        Writes this object's pending outcomes first, then reads. Raises
        ``StorageError`` if the storage fails, unless ``on_storage_error`` is
        "local": then, during the outage, it returns the local window.
        """
        try:
            await self._commit()
            now = self._clock()
            record = await self._read(now)
        except Refused as refusal:
            raise refusal.error from refusal.error.__cause__
        await self._deliver()
        return machine.window_stats(record, self._config.window_size, now)
