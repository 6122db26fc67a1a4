"""What a breaker object knows: its cached record, and the changes it tells listeners.

The cached record never goes back: a storage answer that arrives after a
newer record was adopted is not adopted. Listeners hear the state changes
the cached record shows, in the order it showed them, with times that
never decrease, and only changes the machine can make.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol, cast

import anyio

from . import _machine as machine
from ._config import CircuitBreakerConfig
from ._machine import Outcome, Tally
from ._state import CallEvent, CircuitState, StateChange
from .storage._protocol import BreakerRecord, Storage
from .storage.memory import MemoryStorage, RecordCell

if TYPE_CHECKING:
    from ._access import Outage, Reading

__all__ = ["UNREAD", "BreakerCore", "CallListener", "CallMeter", "Extra", "Listener", "logger"]

logger: Final = logging.getLogger("anybreaker")

Listener = Callable[[StateChange], Awaitable[None] | None]
CallListener = Callable[[CallEvent], object]

_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN

UNREAD: Final = RecordCell(BreakerRecord())
"""A MemoryStorage breaker's cell until it takes its own: it holds no record ever adopted."""


class CallMeter(Protocol):
    """Where an instrumented breaker counts its calls, as they end (``anybreaker.otel``).

    Called on the calls' path: each method must cost little and never raise.
    """

    def succeeded(self, duration: float) -> None:
        """A call succeeded after ``duration`` seconds, and was not slow."""

    def ran(self, outcome: Outcome, duration: float, slow: bool) -> None:
        """A call ran for ``duration`` seconds and ended with ``outcome``."""

    def refused(self) -> None:
        """A call was refused (in shadow mode: would have been; it runs, and ends too)."""


class Extra:
    """What only some breakers need, kept apart so that an idle breaker stays small."""

    __slots__ = (
        "adopted_at",
        "batch",
        "call_listeners",
        "changes",
        "delivering",
        "failed",
        "failing_types",
        "flush_due",
        "held",
        "last_change_at",
        "listeners",
        "lock",
        "neutral",
        "ops",
        "outage",
        "per_call",
        "reading",
        "state_changes",
        "tags",
        "tally",
        "written",
    )

    def __init__(self) -> None:
        self.failed = self.neutral = self.state_changes = 0
        self.listeners: tuple[Listener, ...] = ()
        self.call_listeners: tuple[CallListener, ...] = ()
        self.per_call = False
        """Every call carries a ticket (timed calls, call events, shadow mode)."""
        self.failing_types: frozenset[type[BaseException]] = frozenset()
        """Exception types that count as failures, not ``RetryAfter``, under this config."""
        self.tags: set[int] | None = None
        """The tickets of calls running with one (made with the first)."""
        self.held: deque[tuple[int, str, float]] | None = None
        """Trial permits taken by ``allow_request()`` and not yet given back."""
        self.lock: anyio.Lock | None = None
        """Held while this object writes: outcomes arriving meanwhile join the next write."""
        self.tally: Tally | None = None
        """Outcomes of the current generation not written yet (made when needed)."""
        self.batch = 1
        """The number of the pending counts, for group commit; written ones: ``written``."""
        self.written = 0
        self.flush_due = -float("inf")
        self.outage: Outage | None = None
        self.reading: Reading | None = None
        """The admissions' read in flight, if any: calls arriving meanwhile wait for it."""
        self.ops = 0
        """Storage operations begun so far."""
        self.adopted_at = 0
        """``ops`` when the cached record was adopted: later operations see newer data."""
        self.changes: deque[StateChange] | None = None
        """State changes not yet told to listeners (made when there are listeners)."""
        self.delivering = False
        self.last_change_at = -float("inf")


class BreakerCore:
    """The state every part of a breaker object shares; see ``CircuitBreaker``."""

    __slots__ = (
        "__weakref__",
        "_cell",
        "_clock",
        "_config",
        "_extra",
        "_fast",
        "_filed",
        "_meter",
        "_name",
        "_per_call",
        "_read_at",
        "_record",
        "_rejected",
        "_seen",
        "_staleness",
        "_started",
        "_storage",
        "_succeeded",
        "_unsent_start",
        "_unsent_until",
        "_untagged",
    )

    _name: str
    _config: CircuitBreakerConfig
    _storage: Storage
    _clock: Callable[[], float]
    _staleness: float
    _cell: RecordCell | None
    """On a MemoryStorage, what is stored under the name (the cheapest freshness check
    there is), once taken (``UNREAD`` before: idle breakers hold none); ``None`` elsewhere.
    """
    _record: BreakerRecord
    """The last record adopted, rebased to this process's clock."""
    _fast: BreakerRecord | None
    """``_record`` while ``async with`` may admit at once (see ``__aenter__``), else ``None``.

    Set by an admission that found the cached record stored, closed, and
    nothing to do per call; cleared whenever any of these may change.
    """
    _read_at: float
    """The clock's time when ``_record`` was last known to be current."""
    _seen: CircuitState
    """The state the listeners last heard of."""
    _per_call: bool
    """Whether calls entered with ``async with`` must carry a ticket (see ``__aenter__``)."""
    _untagged: int
    """Calls running that carry no ticket: they belong to the current generation."""
    _succeeded: int
    _rejected: int
    _filed: int
    """Of ``_succeeded``, the successes counted already: the rest wait in ``_unsent_start``."""
    _unsent_start: float
    _unsent_until: float
    """Until then a success only adds to ``_succeeded`` (its bucket's end, or a flush)."""
    _extra: Extra | None
    _meter: CallMeter | None
    """Set by ``anybreaker.otel``: every call is timed and counted there."""
    _started: float | None
    """When the untagged call running alone began, if instrumented (see ``_start_timing``)."""

    def _more(self) -> Extra:
        extra = self._extra
        if extra is None:
            extra = self._extra = Extra()
        return extra

    def _take_cell(self) -> RecordCell:
        """Take this name's cell from the MemoryStorage (``_cell`` was ``UNREAD``)."""
        cell = self._cell = cast(MemoryStorage, self._storage)._cell(self._name)
        return cell

    def _instrument(self, meter: CallMeter) -> None:
        """Count and time every call from now on in ``meter`` (``anybreaker.otel``)."""
        self._meter = meter
        self._fast = None

    def _begin(self) -> int:
        """Number a storage operation as it begins."""
        extra = self._more()
        extra.ops += 1
        return extra.ops

    def _adopt(
        self, record: BreakerRecord, now: float, begun: int, *, force: bool = False
    ) -> BreakerRecord:
        """Cache ``record``, read or written by the operation numbered ``begun``.

        Return what is cached afterwards. An answer older than the cached
        record (a lower version, from an operation begun before the cached
        record was adopted) is ignored; the same version keeps the cached
        object, which may have been rebased. ``force``: the storage answers
        again after an outage, and its record wins over the local one.
        """
        extra = self._more()
        current = self._record
        if not force:
            if record.version == current.version:
                if begun > extra.adopted_at and now > self._read_at:
                    self._read_at = now
                return self._rebase(now)
            if record.version < current.version and begun <= extra.adopted_at:
                return current
        record = machine.rebase(record, self._config, now)
        if record.generation != current.generation:
            # Outcomes of calls begun before this change no longer count.
            if self._untagged:
                self._per_call = True
            extra.tally = None
            self._filed = self._succeeded
        self._record = record
        self._fast = None
        self._read_at = now
        extra.adopted_at = extra.ops
        self._notice(now)
        return record

    def _rebase(self, now: float) -> BreakerRecord:
        """Move the cached record's times that lie after ``now`` to ``now``, once."""
        record = self._record
        rebased = machine.rebase(record, self._config, now)
        if rebased is not record:
            self._record = rebased
            self._fast = None
        return rebased

    def _adopt_own(self, record: BreakerRecord, now: float) -> None:
        """Cache ``record``, just stored by this object's own compare-and-set."""
        if record.generation != self._record.generation:
            self._adopt(record, now, 0, force=True)
            return
        self._record = record
        self._fast = None
        self._read_at = now

    def _notice(self, now: float) -> None:
        """Note the state the cached record shows now; queue the change for listeners."""
        state = machine.view(self._record, self._config, now)
        old = self._seen
        if old is state:
            return
        self._seen = state
        extra = self._more()
        steps: tuple[tuple[CircuitState, CircuitState], ...]
        if old is _CLOSED and state is _HALF_OPEN:
            # It opened, and its open period passed, between two reads.
            steps = ((_CLOSED, _OPEN), (_OPEN, _HALF_OPEN))
        else:
            steps = ((old, state),)
        at = max(now, extra.last_change_at)
        extra.last_change_at = at
        record = self._record
        if state is _OPEN and record.open_duration == math.inf and not record.forced:
            logger.warning(
                "circuit %r: its backed-off open period overflowed; it stays open until "
                "reset(). Set max_timeout to cap the back-off",
                self._name,
            )
        for before, after in steps:
            extra.state_changes += 1
            logger.info("circuit %r: %s -> %s", self._name, before.value, after.value)
            if extra.listeners:
                if extra.changes is None:
                    extra.changes = deque()
                extra.changes.append(StateChange(self._name, before, after, at))

    async def _deliver(self) -> None:
        """Tell listeners the queued changes, in order, one task at a time.

        Runs outside any lock or shield: a slow listener delays only the
        task that delivers, never a storage write, and cancelling that task
        leaves the rest of the queue to the next one.
        """
        extra = self._extra
        if extra is None or not extra.changes or extra.delivering:
            return
        extra.delivering = True
        changes = extra.changes
        try:
            while changes:
                change = changes.popleft()
                for listener in extra.listeners:
                    try:
                        result = listener(change)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        logger.exception(
                            "circuit %r: state change listener %r raised", self._name, listener
                        )
        finally:
            extra.delivering = False

    def _emit(self, event: CallEvent) -> None:
        """Give a call event to every call listener; one that raises is logged."""
        for listener in self._more().call_listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("circuit %r: call listener %r raised", self._name, listener)
