"""``CircuitBreaker``: the public face, the hot paths, and admission (the read path)."""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, NoReturn, ParamSpec, Self, TypeVar

import anyio

from . import _machine as machine
from ._access import Refused
from ._config import CircuitBreakerConfig, check_settings
from ._core import UNREAD, CallListener, CallMeter, Extra, Listener
from ._errors import CircuitBreakerOpenError, RetryAfter, StorageError
from ._machine import Admission, Outcome
from ._recording import Change, OutcomeRecorder
from ._state import CallEvent, CircuitState, CircuitStats
from .storage._protocol import INITIAL_RECORD, BreakerRecord, Storage
from .storage.memory import MemoryStorage

__all__ = ["NEW_BREAKER_HOOKS", "CircuitBreaker", "Listener"]

P = ParamSpec("P")
T = TypeVar("T")

_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_FAILURE: Final = Outcome.FAILURE
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_CONTENDED_RETRY: Final = 0.001
_LONG_AGO: Final = -math.inf
"""One object for every breaker's times not yet set: ``-math.inf`` makes a float each time."""
_STALE: Final = -1
"""The generation of a call whose outcome counts only in this object's stats."""
_FAILING_TYPES: Final = 32
"""At most this many exception types are known as failures counted in place."""

# Shared by every breaker made without settings: configs are immutable.
_DEFAULT_CONFIG: Final = CircuitBreakerConfig()

NEW_BREAKER_HOOKS: list[Callable[[CircuitBreaker], object]] = []
"""Called with every breaker made from then on (``anybreaker.otel.instrument()`` adds one)."""


class _Ticket:
    """A call entered with ``async with`` that carries its own state (see ``__aenter__``)."""

    __slots__ = ("breaker", "generation", "id", "outer", "scope", "started", "token")

    def __init__(
        self,
        breaker: CircuitBreaker,
        generation: int,
        token: str | None,
        started: float,
        scope: anyio.CancelScope | None,
        outer: _Ticket | None,
    ) -> None:
        self.breaker = breaker
        self.generation = generation
        self.token = token
        self.started = started
        self.scope = scope
        self.outer = outer
        self.id = next(_ticket_ids)


_ticket_ids = itertools.count()
# The innermost call with a ticket of the current task.
_TICKETS: ContextVar[_Ticket | None] = ContextVar("anybreaker_tickets", default=None)

# The start times of the untagged calls of instrumented breakers running in
# the current task, innermost first, when more than one such call of the
# breaker runs at once: (breaker, started, the entries before).
_Start = tuple[object, float, "_Start | None"]
_STARTS: ContextVar[_Start | None] = ContextVar("anybreaker_starts", default=None)

# allow_request()'s admissions in the current task, per breaker:
# (generation, token, started), for the next record_success/record_failure.
_Manual = tuple[int, str | None, float | None]
_MANUAL: ContextVar[dict[int, tuple[CircuitBreaker, _Manual]] | None] = ContextVar(
    "anybreaker_manual", default=None
)


def _new_token() -> str:
    """Name a trial permit uniquely across processes (``random`` reseeds after fork)."""
    return f"{random.getrandbits(64):016x}"


class CircuitBreaker(OutcomeRecorder):
    """Guard calls to a dependency: stop calling it while it keeps failing.

    ``CircuitBreaker(name, config=None, *, storage=None, clock=None,
    listeners=(), call_listeners=(), **settings)``: ``settings`` are
    ``CircuitBreakerConfig`` fields given directly. Breakers that share a
    storage and a name share one state, in one process or many.

    Use it as ``async with breaker:``, ``await breaker.call(fn, ...)`` or
    ``@breaker`` on an ``async def``.
    """

    __slots__ = ()

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] | None = None,
        listeners: Iterable[Listener] = (),
        call_listeners: Iterable[CallListener] = (),
        **settings: Any,
    ) -> None:
        _check_name(name)
        if config is not None and settings:
            raise TypeError(
                "give either config or settings, not both "
                f"(got config and {', '.join(sorted(settings))})"
            )
        if config is None:
            check_settings(settings)
            config = CircuitBreakerConfig(**settings) if settings else _DEFAULT_CONFIG
        elif not isinstance(config, CircuitBreakerConfig):
            raise TypeError(f"config must be a CircuitBreakerConfig, got {type(config).__name__}")
        if storage is None:
            storage = MemoryStorage()
        elif not isinstance(storage, Storage):
            raise TypeError(
                "storage must implement the Storage protocol (async get, compare_and_set, "
                f"delete, names and aclose), got {storage!r}"
            )
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        staleness = getattr(storage, "staleness", 0.0)
        if not isinstance(staleness, int | float) or not staleness >= 0:
            raise ValueError(f"storage.staleness must be seconds >= 0, got {staleness!r}")

        self._name = name
        self._config = config
        self._storage = storage
        self._clock = clock or time.time
        self._staleness = float(staleness)
        self._cell = UNREAD if type(storage) is MemoryStorage else None
        self._record = INITIAL_RECORD
        self._fast = None
        self._read_at = _LONG_AGO
        self._seen = _CLOSED
        self._untagged = 0
        self._per_call = False
        self._succeeded = self._rejected = 0
        self._filed = 0
        self._unsent_start = math.inf
        self._unsent_until = _LONG_AGO
        self._extra: Extra | None = None
        self._meter: CallMeter | None = None
        self._started: float | None = None
        if config.call_timeout is not None or config.slow_call_duration is not None:
            self._time_every_call()
        if not config.enforce:
            self._time_every_call()
        for listener in listeners:
            self.add_listener(listener)
        for call_listener in call_listeners:
            self.add_call_listener(call_listener)
        for hook in NEW_BREAKER_HOOKS:
            hook(self)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self.state.value}>"

    # -- public views ------------------------------------------------------

    @property
    def name(self) -> str:
        """The breaker's name: its key in the storage."""
        return self._name

    @property
    def config(self) -> CircuitBreakerConfig:
        """The breaker's settings."""
        return self._config

    @property
    def storage(self) -> Storage:
        """Where the breaker keeps its state."""
        return self._storage

    @property
    def state(self) -> CircuitState:
        """The last known state, evaluated now (OPEN turns HALF_OPEN on time); no I/O."""
        return machine.view(self._record, self._config, self._clock())

    @property
    def is_open(self) -> bool:
        """Whether the last known state, evaluated now, is OPEN; no I/O."""
        return self.state is _OPEN

    def get_time_until_retry(self) -> float:
        """Seconds until the breaker admits a trial (``inf`` until reset); no I/O."""
        return machine.time_until_retry(self._record, self._config, self._clock())

    @property
    def stats(self) -> CircuitStats:
        """This breaker object's counters in this process."""
        return self.get_stats()

    def get_stats(self) -> CircuitStats:
        """Return this breaker object's counters in this process."""
        extra = self._extra
        failed = neutral = changes = 0
        if extra is not None:
            failed, neutral, changes = extra.failed, extra.neutral, extra.state_changes
        return CircuitStats(
            total_calls=self._succeeded + failed + neutral,
            successful_calls=self._succeeded,
            failed_calls=failed,
            rejected_calls=self._rejected,
            state_changes=changes,
        )

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(change)`` (sync or async) on every state change seen.

        A listener added already is not added again.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        extra = self._more()
        if listener not in extra.listeners:
            extra.listeners = (*extra.listeners, listener)

    def add_call_listener(self, listener: CallListener) -> None:
        """Call ``listener(event)`` (sync) with a ``CallEvent`` for every call, run or refused.

        Breakers without call listeners do not time their calls. A listener
        added already is not added again.
        """
        if not callable(listener):
            raise TypeError(f"call listener must be callable, got {listener!r}")
        extra = self._more()
        if listener not in extra.call_listeners:
            extra.call_listeners = (*extra.call_listeners, listener)
        self._time_every_call()

    def _time_every_call(self) -> None:
        self._more().per_call = True
        self._per_call = True
        self._fast = None

    # -- guarding calls ----------------------------------------------------

    async def __aenter__(self) -> Self:
        # The closed-state fast path: no lock, no write, no storage read, no
        # per-call state. Calls entered here carry no ticket; ``_untagged``
        # counts them. When the generation changes while some are running,
        # they all become stale, and until they are done every new entry
        # carries a ticket in ``_TICKETS`` (``_per_call``), so that an entry
        # without one is known to be stale when it exits. Calls that need
        # their own state (a deadline, a start time for a listener or a
        # slow-call rule) always carry one; an instrumented breaker times its
        # untagged calls without one (``_start_timing``). On a MemoryStorage,
        # ``_fast`` makes all of that one identity test.
        cell = self._cell
        if cell is not None and cell.record is self._fast:
            self._untagged += 1
            return self
        if cell is UNREAD:
            cell = self._take_cell()
        record = self._record
        if (
            cell.record is record  # _fresh(), written out: this is the hot path
            if cell is not None
            else self._read_at <= self._clock() < self._read_at + self._staleness
        ):
            if record.state is _CLOSED:
                if not self._per_call:
                    if self._meter is not None:
                        if self._untagged == 0:
                            self._started = self._clock()  # _start_timing(), written out
                        else:
                            self._start_timing()
                    elif cell is not None:
                        self._fast = record
                    self._untagged += 1
                    return self
                generation, token = record.generation, None  # admitted; a ticket follows
            elif record.state is _OPEN and self._seen is _OPEN and not self._per_call:
                # _reject_if_open() and time_until_retry(), written out:
                # rejections come in floods. An opening stamped later than now
                # (the clock stepped back) takes the slow path, which rebases it.
                now = self._clock()
                since = record.changed_at
                remaining = math.inf if record.forced else record.open_duration - (now - since)
                if remaining > 0 and since <= now:
                    self._rejected += 1
                    if self._meter is not None:
                        self._meter.refused()
                    raise CircuitBreakerOpenError(self._name, remaining)
                generation, token = await self._admit()
            else:
                generation, token = await self._admit()
        else:
            generation, token = await self._admit()
        if token is None and not self._per_call:
            if self._meter is not None:
                self._start_timing()
            self._untagged += 1
            return self
        self._issue_ticket(generation, token)
        return self

    # The ticketed paths live in helpers of their own: an exception raised by
    # ``__aenter__`` (every rejection) copies its whole frame into the
    # traceback, and each coroutine made from ``__aenter__``/``__aexit__``
    # allocates room for all of their locals, so both stay small.

    def _issue_ticket(self, generation: int, token: str | None) -> None:
        """Give the call entering now a ticket: its own generation, permit, start and deadline."""
        extra = self._more()
        self._per_call = True
        self._fast = None
        timeout = self._config.call_timeout
        scope = None
        if timeout is not None:
            scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
            scope.__enter__()
        ticket = _Ticket(self, generation, token, self._clock(), scope, _TICKETS.get())
        if extra.tags is None:
            extra.tags = set()
        extra.tags.add(ticket.id)
        _TICKETS.set(ticket)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._per_call:
            self._untagged -= 1
            if exc is None:
                now = self._clock()  # _finish()'s success counting, written out
                meter = self._meter
                if meter is not None:
                    started = self._started
                    if started is not None and self._untagged == 0:
                        self._started = None  # _stop_timing(), written out
                    else:
                        started = self._stop_timing()
                    if started is not None:
                        meter.succeeded(now - started)
                if self._unsent_start <= now < self._unsent_until:
                    self._succeeded += 1
                    return
                await self._success_slowly(now)
                return
            extra = self._extra
            if (
                # _finish(), written out for the in-process breaker's failures
                # of a type counted in place before (see _ended_untagged()).
                extra is not None
                and type(exc) in extra.failing_types
                and self._meter is None
                and self._cell is not None
                and not extra.tally
                and not extra.call_listeners
                and self._fail_in_place(self._clock())
            ):
                extra.failed += 1
                if extra.changes:
                    await self._deliver()
                return
            await self._ended_untagged(exc)
            return
        await self._exit_ticketed(exc_type, exc, tb)

    async def _exit_ticketed(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """``__aexit__`` of a breaker whose calls carry tickets (see ``__aenter__``)."""
        extra = self._more()
        ticket = _TICKETS.get()
        tags = extra.tags
        if ticket is None or ticket.breaker is not self or tags is None or ticket.id not in tags:
            # Entered without a ticket, before the generation changed: stale.
            self._untagged -= 1
            started = None if self._meter is None else self._stop_timing()
            self._drained(extra)
            await self._finish(_STALE, None, exc, started)
            return
        _TICKETS.set(ticket.outer)
        tags.discard(ticket.id)
        self._drained(extra)
        scope = ticket.scope
        if scope is not None:
            scope.__exit__(exc_type, exc, tb)
        if scope is not None and scope.cancelled_caught:
            error = self._timed_out()
            await self._finish(
                ticket.generation, ticket.token, error, ticket.started, outcome=Outcome.FAILURE
            )
            raise error from None
        await self._finish(ticket.generation, ticket.token, exc, ticket.started)

    def __enter__(self) -> NoReturn:
        raise TypeError(
            f"circuit breaker {self._name!r} guards async code: use `async with breaker:`"
        )

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raises
        return None

    async def _ended_untagged(self, exc: BaseException) -> None:
        """Count how an untagged call of the current generation ended with ``exc``.

        A failure that ``_fail_in_place()`` counted makes its type known as
        one (``Extra.failing_types``): the next failure of that type skips
        the classification.
        """
        started = None if self._meter is None else self._stop_timing()
        outcome = self._classify(exc)
        if (
            outcome is _FAILURE
            and self._cell is not None
            and started is None
            and not isinstance(exc, RetryAfter)
            and self._config.is_failure is None
        ):
            extra = self._more()
            if not extra.tally and not extra.call_listeners and self._fail_in_place(self._clock()):
                extra.failed += 1
                if len(extra.failing_types) < _FAILING_TYPES:
                    extra.failing_types |= {type(exc)}
                if extra.changes:
                    await self._deliver()
                return
        await self._finish(self._record.generation, None, exc, started, outcome=outcome)

    def _drained(self, extra: Extra) -> None:
        """Stop giving tickets once no stale call is left (unless every call needs one)."""
        if self._untagged == 0 and not extra.tags and not extra.per_call:
            self._per_call = False

    def _start_timing(self) -> None:
        """Note when an untagged call of an instrumented breaker begins (before it counts).

        A call that runs alone keeps its start in ``_started``, at no more
        cost than an attribute; calls that overlap it keep theirs in the
        task's ``_STARTS``.
        """
        now = self._clock()
        if self._untagged == 0:
            self._started = now
        else:
            _STARTS.set((self, now, _STARTS.get()))

    def _stop_timing(self) -> float | None:
        """When the call now ending (no longer in ``_untagged``) began; ``None`` if untimed."""
        started = self._started
        if started is not None and self._untagged == 0:
            # The call that began alone is the only one left: this one.
            self._started = None
            return started
        entry = _STARTS.get()
        if entry is not None and entry[0] is self:
            _STARTS.set(entry[2])
            return entry[1]
        self._started = None  # the call that began alone (or one begun untimed)
        return started

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(
            f"circuit {self._name!r}: the guarded call took longer than "
            f"call_timeout={self._config.call_timeout} s and was cancelled"
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` under the breaker and return its result.

        ``fn`` must return an awaitable; one that does not is refused with
        ``TypeError`` and counts as neither a success nor a failure.
        """
        record = self._record
        cell = self._cell
        if (cell is not None and cell.record is self._fast) or (
            record.state is _CLOSED and not self._per_call and self._fresh()
        ):
            generation, token = record.generation, None
        else:
            if (
                record.state is _OPEN
                and self._seen is _OPEN
                and not self._per_call
                and self._fresh()
            ):
                now = self._clock()
                remaining = machine.time_until_retry(record, self._config, now)
                if remaining > 0 and record.changed_at <= now:
                    self._rejected += 1
                    if self._meter is not None:
                        self._meter.refused()
                    raise CircuitBreakerOpenError(self._name, remaining)
            generation, token = await self._admit()
        per_call = self._per_call
        meter = self._meter
        started = self._clock() if per_call or meter is not None else None
        timeout = self._config.call_timeout
        refused: TypeError | None = None
        timed_out: TimeoutError | None = None
        try:
            awaitable: object = fn(*args, **kwargs)
            if not inspect.isawaitable(awaitable):
                refused = TypeError(
                    "call() needs an async function (or one returning an awaitable); "
                    f"{fn!r} returned {type(awaitable).__name__} {awaitable!r}"
                )
            elif timeout is None:
                result: T = await awaitable
            else:
                with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                    result = await awaitable
                if scope.cancelled_caught:
                    timed_out = self._timed_out()
        except BaseException as error:
            await self._finish(generation, token, error, started)
            raise
        if refused is not None:
            await self._finish(generation, token, None, started, outcome=Outcome.NEUTRAL)
            raise refused
        if timed_out is not None:
            await self._finish(generation, token, timed_out, started, outcome=Outcome.FAILURE)
            raise timed_out
        if token is None and not per_call and generation == self._record.generation:
            now = self._clock()
            if meter is not None and started is not None:
                meter.succeeded(now - started)
            if self._unsent_start <= now < self._unsent_until:
                self._succeeded += 1
            else:
                await self._success_slowly(now)
        else:
            await self._finish(generation, token, None, started)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` (or an object with one as ``__call__``) to guard every call."""
        if not (
            inspect.iscoroutinefunction(fn)
            or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
        ):
            raise TypeError(
                f"@breaker needs an async def function, got {fn!r}; "
                "a breaker guards awaitable calls only"
            )

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return guarded

    # -- manual use --------------------------------------------------------

    async def allow_request(self) -> bool:
        """Return whether a call may run now; in half-open this takes a trial permit.

        Report the call with ``record_success()`` or ``record_failure()``: in
        the same task, the report pairs with this admission; otherwise it
        gives back the oldest permit this object holds.
        """
        try:
            generation, token = await self._admit()
        except CircuitBreakerOpenError:
            return False
        timed = self._per_call or self._meter is not None
        ticket: _Manual = (generation, token, self._clock() if timed else None)
        if token is not None:
            extra = self._more()
            if extra.held is None:
                extra.held = deque()
            extra.held.append((generation, token, ticket[2] or 0.0))
        _MANUAL.set({**(_MANUAL.get() or {}), id(self): (self, ticket)})
        return True

    async def record_success(self) -> None:
        """Report that a call admitted by ``allow_request()`` succeeded."""
        generation, token, started = self._manual_ticket()
        await self._finish(generation, token, None, started)

    async def record_failure(self, exc: BaseException | None = None) -> None:
        """Report that a call admitted by ``allow_request()`` failed with ``exc``."""
        generation, token, started = self._manual_ticket()
        await self._finish(generation, token, exc if exc is not None else Exception(), started)

    def _manual_ticket(self) -> _Manual:
        """The admission a report belongs to: this task's, else the oldest permit held."""
        tickets = _MANUAL.get() or {}
        entry = tickets.get(id(self))
        extra = self._extra
        if entry is not None and entry[0] is self:
            _MANUAL.set({key: value for key, value in tickets.items() if key != id(self)})
            generation, token, started = entry[1]
            if token is not None and extra is not None and extra.held:
                for held in extra.held:
                    if held[1] == token:
                        extra.held.remove(held)
                        break
            return generation, token, started
        if extra is not None and extra.held:
            generation, token, _ = extra.held.popleft()
            return generation, token, None
        return self._record.generation, None, None

    # -- administration ----------------------------------------------------

    async def reset(self) -> None:
        """Close the breaker and clear its window, for every process sharing it.

        Raises ``StorageError`` if the storage fails, unless ``on_storage_error``
        is "local": then, during the outage, it acts on the local state only.
        """
        await self._administer(lambda record, now, tally: machine.reset(record, now))

    async def force_open(self) -> None:
        """Open the breaker until ``reset()``, for every process sharing it.

        Raises ``StorageError`` if the storage fails, unless ``on_storage_error``
        is "local": then, during the outage, it acts on the local state only.
        """
        await self._administer(lambda record, now, tally: machine.force_open(record, now))

    async def open_for(self, seconds: float) -> None:
        """Open the breaker now for ``seconds``, for every process sharing it; then half-open.

        Raises ``StorageError`` if the storage fails, unless ``on_storage_error``
        is "local": then, during the outage, it acts on the local state only.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, got {seconds!r}")
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        config = self._config
        duration = float(seconds)
        await self._administer(
            lambda record, now, tally: machine.open_for(record, config, now, duration, tally),
            with_tally=True,
        )

    async def _administer(self, change: Change, *, with_tally: bool = False) -> None:
        try:
            written = await self._write(change, with_tally=with_tally)
        except Refused as refusal:
            raise refusal.error from refusal.error.__cause__
        await self._deliver()
        if not written:
            raise StorageError(
                f"circuit {self._name!r}: compare-and-set conflicts went on for longer "
                f"than storage_timeout={self._config.storage_timeout} s; nothing was changed"
            )

    async def get_state(self) -> CircuitState:
        """Read the state from the storage and return it, evaluated now.

        Raises ``StorageError`` if the storage fails, unless ``on_storage_error``
        is "local": then, during the outage, it returns the local state.
        """
        now = self._clock()
        try:
            record = await self._read(now)
        except Refused as refusal:
            raise refusal.error from refusal.error.__cause__
        self._notice(now)
        await self._deliver()
        return machine.view(record, self._config, now)

    # -- admission: the read path ------------------------------------------

    def _fresh(self) -> bool:
        cell = self._cell
        if cell is not None:
            if cell is UNREAD:
                cell = self._take_cell()
            return cell.record is self._record
        return self._read_at <= self._clock() < self._read_at + self._staleness

    async def _admit(self) -> tuple[int, str | None]:
        """Admit a call or raise ``CircuitBreakerOpenError``; return its ticket.

        In shadow mode (``enforce=False``) a call that would be refused is
        admitted with the generation ``_STALE``: it runs, and counts only in
        this object's stats.
        """
        now = self._clock()
        try:
            if self._fresh():
                record = self._rebase(now)
            else:
                record = await self._read_for_admission(now)
            self._notice(now)
            admission = machine.admit(record, self._config, now, _new_token)
            if admission.record is not None:
                admission = await self._take_permit()
        except Refused:
            return self._admit_without_storage()
        await self._deliver()
        if admission.allowed:
            return admission.generation, admission.token
        return self._refuse(admission)

    async def _take_permit(self) -> Admission:
        """Write a trial permit, against the newest record; the admission that counts."""
        config = self._config
        admissions: list[Admission] = []

        def permit(record: BreakerRecord, now: float, tally: object) -> BreakerRecord | None:
            admissions.append(machine.admit(record, config, now, _new_token))
            return admissions[-1].record

        if await self._write(permit):
            return admissions[-1]
        # Every conflict meant another caller took a permit first.
        return Admission(
            False, self._record.generation, retry_after=_CONTENDED_RETRY, state=_HALF_OPEN
        )

    def _refuse(self, admission: Admission) -> tuple[int, str | None]:
        """Count a refusal; raise it, or in shadow mode let the call run uncounted."""
        self._rejected += 1
        if self._meter is not None:
            self._meter.refused()
        extra = self._extra
        if extra is not None and extra.call_listeners:
            self._emit(CallEvent(self._name, "rejected", 0.0, False, self._clock()))
        if not self._config.enforce:
            return _STALE, None
        raise CircuitBreakerOpenError(self._name, admission.retry_after, admission.state)

    def _admit_without_storage(self) -> tuple[int, str | None]:
        """Admit or reject as on_storage_error says while the storage fails."""
        if self._config.on_storage_error == "reject":
            retry = self._config.storage_retry_interval or _CONTENDED_RETRY
            return self._refuse(Admission(False, self._record.generation, retry_after=retry))
        return self._record.generation, None  # "allow": its outcome waits for the storage


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    if not name.strip():
        raise ValueError("name must be a non-empty string")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"name {name!r} cannot be stored: it is not valid Unicode text (a lone "
            "surrogate, as os.fsdecode() makes of bytes that are not UTF-8)"
        ) from None
