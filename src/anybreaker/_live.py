"""Counting in place: the breakers of one process that share a MemoryStorage.

Writing a record for every outcome costs more than everything else a failed
call does, and in one process nothing needs the record to be rewritten that
often: every breaker object of a name in a MemoryStorage counts in one
shared window (a ``Tally``, kept beside the record), checks the rules on it
at once, and writes a record when the state changes, when the window is
read (``get_window_stats()``, any other write), and at most every
``FLUSH_INTERVAL`` seconds; ``storage.get()`` and a compare-and-set made
through the storage itself write it first, so they see every count. The
window exists while the stored record is the one it continues: MemoryStorage
drops it with any record written in another way, and the next count starts
it afresh from that record. Under the count rule alone, the
failures in a row of the breaker object that started the window are one
number until anything else reads or counts there (``LiveWindow.run``).
"""

from __future__ import annotations

from typing import Final

from . import _machine as machine
from ._access import StorageAccess
from ._config import OTHER_RULES, WINDOW_BUCKETS, CircuitBreakerConfig
from ._machine import Outcome, Tally
from ._state import CircuitState
from .storage._protocol import INITIAL_RECORD, BreakerRecord
from .storage.memory import _LOCK, MemoryStorage

__all__ = ["FLUSH_INTERVAL", "LiveCounting", "LiveWindow"]

FLUSH_INTERVAL: Final = 1.0
"""At most this many seconds pass before counted outcomes are in the stored record."""

_CLOSED: Final = CircuitState.CLOSED
_FAILURE: Final = Outcome.FAILURE


class LiveWindow:
    """A name's window in a MemoryStorage, counted in place; see the module."""

    __slots__ = (
        "config",
        "flush_due",
        "record",
        "run",
        "start",
        "threshold",
        "until",
        "width",
        "window",
        "written",
    )

    def __init__(self, record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> None:
        self.record = record
        """The stored record this window continues."""
        self.config = config
        """The settings of the breaker that started the window; others check their own."""
        window_size = config.window_size
        self.threshold = count_rule_only(config)
        """``failure_threshold`` if it is ``config``'s only rule: checked without ``trips()``."""
        self.width = window_size / WINDOW_BUCKETS
        self.window = Tally.of(record, window_size, now)
        self.run = 0
        """Failures in a row in the current bucket, not yet in ``window`` (see ``settle``)."""
        self.written = True
        """Whether every count is in ``record``."""
        self.flush_due = now + FLUSH_INTERVAL
        self.start = self.until = 0.0
        self.enter_bucket(now)

    def settle(self) -> None:
        """Put the failures of ``run`` in ``window``, before anything else reads or counts there.

        Under the count rule alone, a failure of the breaker that started the
        window only adds to ``run``: an outage's failures cost one addition
        each, and the rule is checked on ``window.failures + run``.
        """
        if self.run:
            self.window.add(self.start, _FAILURE, count=self.run)
            self.run = 0

    def store(self, storage: MemoryStorage, name: str) -> BreakerRecord:
        """Store the counts in ``storage`` as the next version of ``record`` (with ``_LOCK``).

        Also called by the MemoryStorage before it answers ``get()`` or a
        compare-and-set, so that no count is missing from what they see, or
        overwritten by a write made in another way.
        """
        if not self.written:
            self.settle()
            window_size = self.config.window_size
            self.window.prune(window_size, self.start)
            self.record = machine.counted(self.record, window_size, self.window)
            storage._put(name, self.record)
            self.written = True
        return self.record

    def enter_bucket(self, now: float) -> None:
        """Make the bucket of ``now`` the current one; drop the buckets that left the window."""
        self.settle()
        self.window.prune(self.config.window_size, now)
        self.start = (now // self.width) * self.width
        self.until = self.start + self.width


def count_rule_only(config: CircuitBreakerConfig) -> int | None:
    """``failure_threshold``, if it is the only trip rule of ``config``; else ``None``."""
    if any(getattr(config, rule) is not None for rule in OTHER_RULES):
        return None
    return config.failure_threshold


class LiveCounting(StorageAccess):
    """The in-place counting of a breaker on a MemoryStorage."""

    __slots__ = ()

    def _live(self, now: float) -> LiveWindow | None:
        """This name's shared window, continuing the cached record (call with ``_LOCK``).

        ``None``: count the general way (another storage, a record to adopt
        first, a breaker that is not closed).
        """
        storage = self._storage
        record = self._record
        if (
            not isinstance(storage, MemoryStorage)
            or storage._closed
            or storage._records.get(self._name, INITIAL_RECORD) is not record
            or record.state is not _CLOSED
        ):
            return None
        live = storage._live.get(self._name)
        window_size = self._config.window_size
        if live is None or live.record is not record or live.config.window_size != window_size:
            if live is not None and live.record is record:
                self._write_live(storage, live, now)
                record = self._record
            live = storage._live[self._name] = LiveWindow(record, self._config, now)
        elif not live.start <= now < live.until:
            live.enter_bucket(now)
        return live

    def _fail_in_place(self, now: float) -> bool:
        """Count one failure (not slow) of the current generation in place, as ``_count_in_place``.

        The path of an outage's failures: under the count rule alone, in the
        current bucket, with this object's successes filed, the failure only
        extends the window's ``run``.
        """
        storage: MemoryStorage = self._storage  # type: ignore[assignment]
        _LOCK.acquire()
        live = storage._live.get(self._name)
        if (
            live is None
            or live.config is not self._config
            or live.threshold is None
            or live.record is not self._record
            or not live.start <= now < live.until
            or self._succeeded != self._filed
        ):
            _LOCK.release()
            return self._count_in_place(_FAILURE, now)
        try:
            run = live.run + 1
            live.run = run
            live.written = False
            if live.window.failures + run >= live.threshold:
                live.settle()
                self._write_live_change(
                    live, now, machine.opened_by_rules(live.record, self._config, now, live.window)
                )
            elif now >= live.flush_due:
                self._write_live(storage, live, now)
        finally:
            _LOCK.release()
        return True

    def _count_in_place(
        self, outcome: Outcome, now: float, slow: bool = False, count: int = 1
    ) -> bool:
        """Count an outcome of the current generation in place; ``False`` if it cannot be."""
        storage: MemoryStorage = self._storage  # type: ignore[assignment]
        config = self._config
        with _LOCK:
            # A live window exists only while its record is the stored one.
            live = storage._live.get(self._name)
            if (
                live is None
                or live.record is not self._record
                or not live.start <= now < live.until
                or live.config.window_size != config.window_size
            ):
                live = self._live(now)
                if live is None:
                    return False
            live.settle()
            window = live.window
            if self._succeeded != self._filed:
                # This object's successes so far came first.
                window.add(self._unsent_start, Outcome.SUCCESS, count=self._succeeded - self._filed)
                self._filed = self._succeeded
            window.add(live.start, outcome, slow, count)
            live.written = False
            # Each breaker object checks its own rules, whichever started the window.
            threshold = live.threshold if live.config is config else count_rule_only(config)
            if threshold is not None:
                tripped = window.failures >= threshold  # trips(), for the count rule alone
            else:
                trip = None if config.trip is None else self._guarded_trip
                tripped = machine.trips(config, window, trip)
            if tripped:
                self._write_live_change(
                    live, now, machine.opened_by_rules(live.record, config, now, live.window)
                )
            elif now >= live.flush_due:
                self._write_live(storage, live, now)
        return True

    def _flush_in_place(self, now: float) -> None:
        """Write the counts counted in place, if any, so that the stored record holds them."""
        storage = self._storage
        if not isinstance(storage, MemoryStorage):
            return
        with _LOCK:
            live = storage._live.get(self._name)
            if live is not None and not live.written:
                self._write_live(storage, live, now)

    def _write_live(self, storage: MemoryStorage, live: LiveWindow, now: float) -> None:
        """Store the live window's counts as the next version of its record (with ``_LOCK``)."""
        live.flush_due = now + FLUSH_INTERVAL
        if live.written:
            return
        live.window.prune(live.config.window_size, now)
        new = live.store(storage, self._name)
        if self._record.version + 1 == new.version:
            self._adopt_own(new, now)

    def _write_live_change(self, live: LiveWindow, now: float, new: BreakerRecord) -> None:
        """Store a state change decided on the live window, which it ends (with ``_LOCK``)."""
        storage = self._storage
        assert isinstance(storage, MemoryStorage)
        storage._put(self._name, new)
        del storage._live[self._name]
        self._adopt_own(new, now)
