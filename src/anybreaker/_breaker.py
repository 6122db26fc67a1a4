"""``CircuitBreaker``: the short async loop around the machine and a storage."""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, ParamSpec, Self, TypeVar

import anyio

from . import _machine as machine
from ._config import CircuitBreakerConfig, check_settings
from ._errors import CircuitBreakerOpenError, StorageError
from ._machine import Outcome
from ._state import CircuitState, CircuitStats, StateChange
from .storage._protocol import INITIAL_RECORD, BreakerRecord, Storage
from .storage.memory import MemoryStorage

__all__ = ["CircuitBreaker", "Listener"]

logger: Final = logging.getLogger("anybreaker")

P = ParamSpec("P")
T = TypeVar("T")
Listener = Callable[[StateChange], Awaitable[None] | None]

_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_CONTENDED_RETRY: Final = 0.001

# The calls entered with ``async with`` that carry a ticket, innermost first:
# (breaker, generation, token, tag id, enclosing entry). See ``__aenter__``.
_Tag = tuple["CircuitBreaker", int, str | None, int, "_Tag | None"]
_TAGS: ContextVar[_Tag | None] = ContextVar("anybreaker_tags", default=None)
_tag_ids = itertools.count()


def _new_token() -> str:
    """Name a trial permit uniquely across processes (``random`` reseeds after fork)."""
    return f"{random.getrandbits(64):016x}"


class _StoragePolicyRefusal(Exception):
    """The storage failed and ``on_storage_error`` ("allow", "reject") decides instead."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(error)
        self.error = error


class _Extra:
    """What only some breakers need, kept apart so an idle breaker stays small."""

    __slots__ = (
        "failed",
        "fallback",
        "held",
        "listeners",
        "neutral",
        "outage",
        "retry_at",
        "state_changes",
        "tags",
    )

    def __init__(self) -> None:
        self.failed = self.neutral = self.state_changes = 0
        self.listeners: list[Listener] = []
        self.tags: set[int] = set()
        self.held: deque[tuple[int, str]] = deque()
        self.fallback: MemoryStorage | None = None
        self.outage = False
        self.retry_at = 0.0


_NO_EXTRA: Final = _Extra()
# Shared by every breaker made without settings: configs are immutable.
_DEFAULT_CONFIG: Final = CircuitBreakerConfig()


class CircuitBreaker:
    """Guard calls to a dependency: stop calling it while it keeps failing.

    ``CircuitBreaker(name, config=None, *, storage=None, clock=None,
    listeners=(), **settings)``: ``settings`` are ``CircuitBreakerConfig``
    fields given directly. Breakers that share a storage and a name share
    one state, in one process or many.

    Use it as ``async with breaker:``, ``await breaker.call(fn, ...)`` or
    ``@breaker`` on an ``async def``.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_extra",
        "_local",
        "_name",
        "_read_at",
        "_record",
        "_rejected",
        "_seen",
        "_staleness",
        "_storage",
        "_succeeded",
        "_tagging",
        "_untagged",
    )

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] | None = None,
        listeners: Iterable[Listener] = (),
        **settings: Any,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        if not name.strip():
            raise ValueError("name must be a non-empty string")
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
            raise TypeError(f"storage must implement the Storage protocol, got {storage!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        staleness = getattr(storage, "staleness", 0.0)
        if not isinstance(staleness, int | float) or not staleness >= 0:
            raise ValueError(f"storage.staleness must be seconds >= 0, got {staleness!r}")

        self._name = name
        self._config = config
        self._storage = storage
        self._clock: Callable[[], float] = clock or time.time
        self._staleness = float(staleness)
        # A MemoryStorage's dict is read directly: its current record being
        # the one this breaker holds is the cheapest possible freshness check.
        self._local = storage._records if type(storage) is MemoryStorage else None
        self._record = INITIAL_RECORD
        self._read_at = -math.inf
        self._seen = CircuitState.CLOSED
        self._untagged = 0
        self._tagging = False
        self._succeeded = self._rejected = 0
        self._extra: _Extra | None = None
        for listener in listeners:
            self.add_listener(listener)

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
        return self.state is CircuitState.OPEN

    def get_time_until_retry(self) -> float:
        """Seconds until the breaker admits a trial (``inf`` if forced open); no I/O."""
        return machine.time_until_retry(self._record, self._config, self._clock())

    @property
    def stats(self) -> CircuitStats:
        """This breaker object's counters in this process."""
        return self.get_stats()

    def get_stats(self) -> CircuitStats:
        """Return this breaker object's counters in this process."""
        extra = self._extra or _NO_EXTRA
        return CircuitStats(
            total_calls=self._succeeded + extra.failed + extra.neutral,
            successful_calls=self._succeeded,
            failed_calls=extra.failed,
            rejected_calls=self._rejected,
            state_changes=extra.state_changes,
        )

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(change)`` (sync or async) on every state change seen."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._more().listeners.append(listener)

    # -- guarding calls ----------------------------------------------------

    async def __aenter__(self) -> Self:
        # The closed-state fast path: no lock, no write, no storage read.
        # Calls entered here carry no ticket; ``_untagged`` counts them. When
        # the generation changes while some are running, they all become
        # stale, and until they are done every new entry carries a ticket
        # in ``_TAGS`` (``_tagging``), so that an entry without one is known
        # to be stale when it exits.
        record = self._record
        local = self._local  # _fresh(), written out: this is the hot path
        if (
            local.get(self._name, INITIAL_RECORD) is record
            if local is not None
            else self._clock() - self._read_at < self._staleness
        ):
            if record.state is _CLOSED and not self._tagging:
                self._untagged += 1
                return self
            if record.state is _OPEN and self._seen is _OPEN:
                # _reject_if_open(), written out: rejections come in floods.
                remaining = machine.time_until_retry(record, self._config, self._clock())
                if remaining > 0:
                    self._rejected += 1
                    raise CircuitBreakerOpenError(self._name, remaining)
        generation, token = await self._admit()
        if token is None and not self._tagging:
            self._untagged += 1
        else:
            tag_id = next(_tag_ids)
            self._more().tags.add(tag_id)
            self._tagging = True
            _TAGS.set((self, generation, token, tag_id, _TAGS.get()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._tagging:
            self._untagged -= 1
            if exc is None:
                self._succeeded += 1
                return
            await self._settle(self._record.generation, None, exc)
            return
        extra = self._more()
        tag = _TAGS.get()
        if tag is not None and tag[0] is self and tag[3] in extra.tags:
            _TAGS.set(tag[4])
            extra.tags.discard(tag[3])
            ticket: tuple[int, str | None] | None = (tag[1], tag[2])
        else:
            self._untagged -= 1
            ticket = None
        if self._untagged == 0 and not extra.tags:
            self._tagging = False
        if ticket is None:
            self._count(self._classify(exc))
        else:
            await self._settle(ticket[0], ticket[1], exc)

    def _reject_if_open(self, record: BreakerRecord) -> None:
        """Reject at once, with no storage access, while a fresh record is open."""
        remaining = machine.time_until_retry(record, self._config, self._clock())
        if remaining > 0:
            self._rejected += 1
            raise CircuitBreakerOpenError(self._name, remaining)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` under the breaker and return its result."""
        record = self._record
        if record.state is _CLOSED and self._fresh():
            generation, token = record.generation, None
        else:
            if record.state is _OPEN and self._seen is _OPEN and self._fresh():
                self._reject_if_open(record)
            generation, token = await self._admit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            await self._settle(generation, token, error)
            raise
        if token is None:
            self._succeeded += 1
        else:
            await self._settle(generation, token, None)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an ``async def`` so that every call goes through the breaker."""
        if not inspect.iscoroutinefunction(fn):
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

        Give the permit back with the next ``record_success()`` or
        ``record_failure()`` of this breaker object.
        """
        try:
            generation, token = await self._admit()
        except CircuitBreakerOpenError:
            return False
        if token is not None:
            self._more().held.append((generation, token))
        return True

    async def record_success(self) -> None:
        """Report that a call admitted by ``allow_request()`` succeeded."""
        await self._settle(*self._held_ticket(), None)

    async def record_failure(self, exc: BaseException | None = None) -> None:
        """Report that a call admitted by ``allow_request()`` failed with ``exc``."""
        await self._settle(*self._held_ticket(), exc if exc is not None else Exception())

    def _held_ticket(self) -> tuple[int, str | None]:
        if self._extra is not None and self._extra.held:
            return self._extra.held.popleft()
        return self._record.generation, None

    # -- administration ----------------------------------------------------

    async def reset(self) -> None:
        """Close the breaker and clear its history, for every process sharing it.

        Raises ``StorageError`` if the storage fails, unless ``on_storage_error``
        is "local": then, during the outage, it acts on the local state only.
        """
        await self._administer(machine.reset)

    async def force_open(self) -> None:
        """Open the breaker until ``reset()``, for every process sharing it.

        Raises ``StorageError`` if the storage fails, unless ``on_storage_error``
        is "local": then, during the outage, it acts on the local state only.
        """
        await self._administer(machine.force_open)

    async def _administer(self, change: Callable[[BreakerRecord, float], BreakerRecord]) -> None:
        try:
            await self._write(change)
        except _StoragePolicyRefusal as refusal:
            raise refusal.error from refusal.error.__cause__

    async def get_state(self) -> CircuitState:
        """Read the state from the storage and return it, evaluated now.

        Raises ``StorageError`` if the storage fails, unless ``on_storage_error``
        is "local": then, during the outage, it returns the local state.
        """
        now = self._clock()
        try:
            record = await self._read(now)
        except _StoragePolicyRefusal as refusal:
            raise refusal.error from refusal.error.__cause__
        await self._observe(now)
        return machine.view(record, self._config, now)

    # -- the loop around the machine ---------------------------------------

    def _fresh(self) -> bool:
        if self._local is not None:
            return self._local.get(self._name, INITIAL_RECORD) is self._record
        return self._clock() - self._read_at < self._staleness

    async def _admit(self) -> tuple[int, str | None]:
        """Admit a call or raise ``CircuitBreakerOpenError``; return its ticket."""
        now = self._clock()
        try:
            record = self._record if self._fresh() else await self._read(now)
        except _StoragePolicyRefusal:
            return self._admit_without_storage()
        await self._observe(now)
        for _ in self._attempts():
            admission = machine.admit(record, self._config, now, _new_token)
            if not admission.allowed:
                self._rejected += 1
                raise CircuitBreakerOpenError(self._name, admission.retry_after)
            if admission.record is None:
                return admission.generation, None
            try:
                with self._shielded():
                    stored = await self._compare_and_set(record, admission.record, now)
            except _StoragePolicyRefusal:
                return self._admit_without_storage()
            if stored is None:
                await self._observe(now)
                return admission.generation, admission.token
            record = stored
            await self._observe(now)
        # Every conflict means another caller took a permit first: the trials are taken.
        self._give_up_writing()
        self._rejected += 1
        raise CircuitBreakerOpenError(self._name, _CONTENDED_RETRY)

    def _attempts(self) -> Iterator[None]:
        """Yield once per compare-and-set attempt, for up to ``storage_timeout`` seconds.

        Each conflict means another writer made progress, so a write retries
        however many times it takes within that time.
        """
        yield
        deadline = anyio.current_time() + self._config.storage_timeout
        while anyio.current_time() < deadline:
            yield

    def _admit_without_storage(self) -> tuple[int, str | None]:
        """Admit or reject as on_storage_error says while the storage fails."""
        if self._config.on_storage_error == "reject":
            self._rejected += 1
            raise CircuitBreakerOpenError(
                self._name, self._config.storage_retry_interval or _CONTENDED_RETRY
            ) from None
        return self._record.generation, None  # "allow": the outcome is not recorded

    def _give_up_writing(self) -> None:
        """Say that a write lost every compare-and-set it tried."""
        error = StorageError(
            f"circuit {self._name!r}: compare-and-set conflicts went on for longer "
            f"than storage_timeout={self._config.storage_timeout} s"
        )
        if self._config.on_storage_error == "raise":
            raise error
        logger.warning("%s; the outcome is dropped", error)

    def _classify(self, exc: BaseException | None) -> Outcome:
        if exc is None:
            return Outcome.SUCCESS
        if not isinstance(exc, Exception) or isinstance(exc, self._config.ignored_exceptions):
            return Outcome.NEUTRAL
        is_failure = self._config.is_failure
        if is_failure is not None and not is_failure(exc):
            return Outcome.SUCCESS
        return Outcome.FAILURE

    def _count(self, outcome: Outcome) -> None:
        if outcome is Outcome.SUCCESS:
            self._succeeded += 1
        elif outcome is Outcome.FAILURE:
            self._more().failed += 1
        else:
            self._more().neutral += 1

    async def _settle(self, generation: int, token: str | None, exc: BaseException | None) -> None:
        """Count a call's outcome and write what it changes, shielded from cancellation."""
        outcome = self._classify(exc)
        self._count(outcome)
        if token is None and outcome is not Outcome.FAILURE:
            return
        config = self._config

        def change(record: BreakerRecord, now: float) -> BreakerRecord | None:
            return machine.settle(record, config, now, generation, token, outcome)

        # "allow" and "reject" drop what they cannot store.
        with self._shielded(), contextlib.suppress(_StoragePolicyRefusal):
            await self._write(change)

    async def _write(self, change: Callable[[BreakerRecord, float], BreakerRecord | None]) -> None:
        """Apply ``change`` with compare-and-set, re-reading on conflict."""
        now = self._clock()
        record = self._record
        for _ in self._attempts():
            new = change(record, now)
            if new is None:
                return
            stored = await self._compare_and_set(record, new, now)
            if stored is None:
                await self._observe(now)
                return
            record = stored
        self._give_up_writing()

    # -- storage access, with the failure policy ---------------------------

    def _adopt(self, record: BreakerRecord, now: float) -> None:
        """Cache ``record``; calls running without a ticket become stale if its generation moved."""
        if record.generation != self._record.generation and self._untagged:
            self._tagging = True
        self._record = record
        self._read_at = now

    async def _read(self, now: float) -> BreakerRecord:
        """Read the stored record (or the fallback's) and cache it."""
        record = await self._storage_op(now, "get") or INITIAL_RECORD
        if self._read_at == -math.inf:
            # What the first read finds is where this object starts, not a change.
            self._seen = machine.view(record, self._config, now)
        self._adopt(record, now)
        return record

    async def _compare_and_set(
        self, expected: BreakerRecord, new: BreakerRecord, now: float
    ) -> BreakerRecord | None:
        """Store ``new`` if ``expected`` is current: ``None``, else the current record."""
        if await self._storage_op(now, "compare_and_set", expected.version or None, new):
            self._adopt(new, now)
            return None
        return await self._read(now)

    async def _storage_op(self, now: float, method: str, *args: Any) -> Any:
        extra = self._extra
        if extra is not None and extra.fallback is not None:
            if now < extra.retry_at:
                return await getattr(extra.fallback, method)(self._name, *args)
            try:
                record = await self._call_storage("get")
            except (StorageError, TimeoutError):
                extra.retry_at = now + self._config.storage_retry_interval
                return await getattr(extra.fallback, method)(self._name, *args)
            self._storage_recovered(extra)
            # The fallback's versions mean nothing to the storage: adopt the
            # stored record and let a pending write retry against it.
            return record if method == "get" else False
        try:
            result = await self._call_storage(method, *args)
        except (StorageError, TimeoutError) as error:
            return await self._storage_failed(now, method, args, error)
        if extra is not None and extra.outage:
            self._storage_recovered(extra)
        return result

    async def _call_storage(self, method: str, *args: Any) -> Any:
        operation = getattr(self._storage, method)
        if self._local is not None:  # a MemoryStorage answers at once, never slowly
            return await operation(self._name, *args)
        with anyio.fail_after(self._config.storage_timeout):
            return await operation(self._name, *args)

    def _shielded(self) -> AbstractContextManager[object]:
        """Shield a write from cancellation, so that a permit taken is also given back.

        A MemoryStorage never waits, so nothing can interrupt its writes.
        """
        if self._local is not None:
            return contextlib.nullcontext()
        return anyio.CancelScope(shield=True)

    def _storage_recovered(self, extra: _Extra) -> None:
        extra.fallback = None
        extra.outage = False
        logger.info("circuit %r: storage %r answers again", self._name, self._storage)

    async def _storage_failed(
        self, now: float, method: str, args: tuple[Any, ...], error: Exception
    ) -> Any:
        policy = self._config.on_storage_error
        extra = self._more()
        if not extra.outage:
            extra.outage = True
            logger.warning(
                "circuit %r: storage %r failed (%s); on_storage_error=%r",
                self._name,
                self._storage,
                error if str(error) else type(error).__name__,
                policy,
            )
        if not isinstance(error, StorageError):
            timed_out = StorageError(
                f"circuit {self._name!r}: storage operation {method} took longer "
                f"than storage_timeout={self._config.storage_timeout} s"
            )
            timed_out.__cause__ = error
            error = timed_out
        if policy == "raise":
            raise error
        if policy != "local":
            raise _StoragePolicyRefusal(error)
        # Keep protecting in this process, from the last record known.
        fallback = MemoryStorage()
        if self._record.version:
            fallback._records[self._name] = self._record
        extra.fallback = fallback
        extra.retry_at = now + self._config.storage_retry_interval
        return await getattr(fallback, method)(self._name, *args)

    # -- state changes -----------------------------------------------------

    async def _observe(self, now: float) -> None:
        """Note the state the cached record shows now; tell listeners if it changed."""
        state = machine.view(self._record, self._config, now)
        old = self._seen
        self._seen = state
        if old is state:
            return
        self._more().state_changes += 1
        logger.info("circuit %r: %s -> %s", self._name, old.value, state.value)
        if self._extra is None or not self._extra.listeners:
            return
        change = StateChange(self._name, old, state, now)
        for listener in list(self._extra.listeners):
            try:
                result = listener(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception(
                    "circuit %r: state change listener %r raised", self._name, listener
                )

    def _more(self) -> _Extra:
        if self._extra is None:
            self._extra = _Extra()
        return self._extra
