"""Faults and bad input: nothing escapes into the guarded call, nothing wedges, clocks may lie."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anybreaker import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    StateChange,
    Storage,
    StorageError,
)
from anybreaker.testing import FakeClock

from ._storages import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    REDIS_HOST,
    REDIS_PORT,
    InFront,
    postgres_url,
    redis_url,
    require_server,
    unique_name,
)

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
NAME = "model-api"
HOUR = 3600.0
WEBHOOK_SECONDS = 10.0
"""How long a slow listener's webhook would take, were it not cancelled."""


class Boom(Exception):
    """The guarded dependency failed."""


class Stale(InFront):
    """A storage in front of another, read at most every ``staleness`` seconds."""

    def __init__(self, inner: Storage, staleness: float) -> None:
        super().__init__(inner)
        self.staleness = staleness


def make(storage: Any, clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """A breaker on ``storage`` and the test's clock."""
    defaults: dict[str, Any] = {
        "failure_threshold": 2,
        "timeout": 10.0,
        "window_size": 60.0,
        "storage_timeout": 60.0,  # a storage slow under load is not what these test
    }
    return CircuitBreaker(NAME, storage=storage, clock=clock, **{**defaults, **settings})


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that raise ``Boom``."""
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom


# -- the user's own callbacks ---------------------------------------------------------


async def test_an_is_failure_that_raises_counts_a_failure_and_keeps_the_call_s_error(
    storage: Storage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A predicate that raises is logged; the caller gets its own error; a failure counts."""

    def is_failure(error: Exception) -> bool:
        return error.response.status >= 500  # type: ignore[attr-defined, no-any-return]

    breaker = make(storage, clock, is_failure=is_failure)
    await fail(breaker, 2)
    assert breaker.state is OPEN
    assert "is_failure raised" in caplog.text


async def test_an_is_failure_that_raises_in_a_trial_gives_the_permit_back(
    storage: Storage, clock: FakeClock
) -> None:
    """During a half-open trial, a raising predicate re-opens the breaker; nothing is wedged."""

    def is_failure(error: Exception) -> bool:
        raise AttributeError("response")

    breaker = make(storage, clock, failure_threshold=1, is_failure=is_failure)
    await fail(breaker)
    clock.advance(10.0)
    await fail(breaker)  # the trial
    assert breaker.state is OPEN
    clock.advance(10.0)
    other = make(storage, clock, failure_threshold=1)
    async with other:  # a new trial is admitted: no permit is held for 120 s
        pass


async def test_a_slow_async_listener_never_holds_the_caller_past_its_deadline(
    storage: Storage, clock: FakeClock
) -> None:
    """Listeners run outside the write's shield: the caller's own timeout still applies."""
    heard: list[StateChange] = []
    outside = anyio.CancelScope()

    async def post_to_chat(change: StateChange) -> None:
        heard.append(change)
        outside.cancel()  # the caller's deadline passes while the listener runs
        await anyio.sleep(WEBHOOK_SECONDS)

    breaker = make(storage, clock, failure_threshold=1, listeners=[post_to_chat])
    started = time.monotonic()
    with outside, pytest.raises(Boom):
        async with breaker:
            raise Boom
    assert outside.cancelled_caught
    assert time.monotonic() - started < 5
    assert [change.new_state for change in heard] == [OPEN]
    assert await make(storage, clock).get_state() is OPEN


# -- clocks that step back and forward ------------------------------------------------


async def test_a_clock_stepped_back_does_not_lengthen_an_opening(
    storage: Storage, clock: FakeClock
) -> None:
    """Stepped back an hour right after opening, the breaker still half-opens after timeout."""
    breaker = make(storage, clock, failure_threshold=1)
    await fail(breaker)
    clock.set(clock() - HOUR)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        async with breaker:
            pass
    assert caught.value.time_until_retry <= 10.0
    clock.advance(10.0)
    assert breaker.state is HALF_OPEN
    async with breaker:
        pass


async def test_a_clock_stepped_back_still_reads_what_others_write(
    storage: Storage, clock: FakeClock
) -> None:
    """After a step back the cache is not trusted for the hour: another's opening is seen."""
    shared = Stale(storage, staleness=0.1)
    watcher = make(shared, clock)
    async with watcher:
        pass
    clock.set(clock() - HOUR)
    await fail(make(shared, clock), 2)
    with pytest.raises(CircuitBreakerOpenError):
        async with watcher:
            pytest.fail("a call ran through a breaker another breaker opened")


async def test_a_clock_stepped_forward_ends_openings_and_windows(
    storage: Storage, clock: FakeClock
) -> None:
    """An hour forward: an open breaker is due a trial, and old failures no longer count."""
    breaker = make(storage, clock, failure_threshold=2)
    other = make(storage, clock, failure_threshold=2)
    await fail(breaker)
    clock.advance(HOUR)
    assert (await other.get_window_stats()).failures == 0
    await fail(breaker)
    assert breaker.state is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN
    clock.advance(HOUR)
    assert await other.get_state() is HALF_OPEN


# -- the manual API ---------------------------------------------------------------------


async def test_a_manual_report_from_before_a_reset_does_not_count(
    storage: Storage, clock: FakeClock
) -> None:
    """record_failure() for a call admitted before reset() leaves the new state alone."""
    breaker = make(storage, clock, failure_threshold=1)
    assert await breaker.allow_request()
    await make(storage, clock).reset()
    await breaker.record_failure(Boom())
    assert await breaker.get_state() is CLOSED
    assert (await breaker.get_window_stats()).failures == 0


async def test_a_manual_report_from_before_a_reopening_does_not_count(
    storage: Storage, clock: FakeClock
) -> None:
    """A manual failure admitted closed, reported after open, half-open, closed, is stale."""
    settings: dict[str, Any] = {"failure_threshold": 1, "success_threshold": 1}
    slow = make(storage, clock, **settings)
    assert await slow.allow_request()
    others = make(storage, clock, **settings)
    await fail(others)
    clock.advance(10.0)
    async with others:  # the trial closes it
        pass
    await slow.record_failure(Boom())
    assert await others.get_state() is CLOSED


async def test_manual_reports_pair_with_their_own_task_s_admission(
    storage: Storage, clock: FakeClock
) -> None:
    """Tasks that interleave allow_request() and record_*() each report their own call."""
    breaker = make(storage, clock, failure_threshold=1, half_open_max_calls=2)
    await fail(breaker)
    clock.advance(10.0)
    results: list[bool] = []

    async def trial(outcome: str, admitted: anyio.Event, go: anyio.Event) -> None:
        results.append(await breaker.allow_request())
        admitted.set()
        await go.wait()
        if outcome == "success":
            await breaker.record_success()
        else:
            await breaker.record_failure(Boom())

    first, second, go = anyio.Event(), anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(trial, "success", first, go)
        await first.wait()
        group.start_soon(trial, "failure", second, go)
        await second.wait()
        go.set()
    assert results == [True, True]
    assert await breaker.get_state() is OPEN


# -- outages that look like something else -----------------------------------------------


async def test_a_back_off_that_overflows_says_so(
    storage: Storage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An open period backed off past a float is 'open until reset()', with a warning."""
    breaker = make(storage, clock, failure_threshold=1, backoff_multiplier=1e300)
    await fail(breaker)
    for _ in range(5):
        retry = breaker.get_time_until_retry()
        if math.isinf(retry):
            break
        clock.advance(retry)
        await fail(breaker)
    assert breaker.get_time_until_retry() == math.inf
    with pytest.raises(CircuitBreakerOpenError, match=r"open until reset\(\)"):
        async with breaker:
            pass
    assert "max_timeout" in caplog.text


# -- any exception a driver raises ---------------------------------------------------------

ERRORS: list[Callable[[], BaseException]] = [
    lambda: sqlite3.OperationalError("disk I/O error"),
    lambda: sqlite3.DatabaseError("database disk image is malformed"),
    lambda: OverflowError("Python int too large to convert to SQLite INTEGER"),
    lambda: UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"),
    lambda: ValueError("bad parameter"),
    lambda: AssertionError(),
    lambda: MemoryError(),
    lambda: ConnectionResetError(104, "Connection reset by peer"),
    lambda: TimeoutError(),
]


class Switch:
    """Makes the driver raise ``error`` from its ``at``-th statement on, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.error: Callable[[], BaseException] = ERRORS[0]
        self.at = 0
        self.seen = 0

    def check(self) -> None:
        if self.on:
            self.seen += 1
            if self.seen > self.at:
                raise self.error()


@asynccontextmanager
async def faulty_storage(kind: str, tmp_path: Path, switch: Switch) -> AsyncIterator[Storage]:
    """A storage of ``kind`` whose driver raises when ``switch`` says so."""
    if kind == "sqlite":
        sql = pytest.importorskip("anybreaker.storage.sql", exc_type=ImportError)
        import sqlalchemy as sa

        class Cursor(sqlite3.Cursor):
            def execute(self, *args: Any, **kwargs: Any) -> Any:
                switch.check()
                return super().execute(*args, **kwargs)

        class Connection(sqlite3.Connection):
            def cursor(self, *args: Any, **kwargs: Any) -> Any:
                return super().cursor(Cursor)

        engine = sa.create_engine(
            f"sqlite:///{tmp_path / 'breakers.db'}", connect_args={"factory": Connection}
        )
        try:
            async with sql.SQLAlchemyStorage(engine, staleness=0, lock_timeout=0.05) as storage:
                yield storage
        finally:
            engine.dispose()
    elif kind == "postgresql":
        sql = pytest.importorskip("anybreaker.storage.sql", exc_type=ImportError)
        psycopg = pytest.importorskip("psycopg")
        require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        import sqlalchemy as sa

        base: Any = psycopg.Cursor

        class PgCursor(base):  # type: ignore[misc]
            def execute(self, *args: Any, **kwargs: Any) -> Any:
                switch.check()
                return super().execute(*args, **kwargs)

        engine = sa.create_engine(
            postgres_url("psycopg"), connect_args={"cursor_factory": PgCursor}
        )
        table = unique_name("faults")
        try:
            async with sql.SQLAlchemyStorage(engine, table=table, staleness=0) as storage:
                try:
                    yield storage
                finally:
                    switch.on = False
                    await sql.drop_table(storage)
        finally:
            engine.dispose()
    else:
        module = pytest.importorskip("anybreaker.storage.redis", exc_type=ImportError)
        require_server("Redis", REDIS_HOST, REDIS_PORT)
        async with module.RedisStorage(
            redis_url(), prefix=unique_name("faults"), staleness=0
        ) as storage:
            client = storage._client
            execute = client.execute_command

            async def faulty(*args: Any, **kwargs: Any) -> Any:
                switch.check()
                return await execute(*args, **kwargs)

            client.execute_command = faulty
            try:
                yield storage
            finally:
                switch.on = False
                client.execute_command = execute
                await storage.delete(NAME)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    error=st.sampled_from(ERRORS),
    at=st.integers(0, 3),
    policy=st.sampled_from(["local", "allow", "reject", "raise"]),
)
def test_any_driver_exception_reaches_the_caller_only_as_policy_says(
    anyio_backend: str,
    kind: str,
    tmp_path_factory: pytest.TempPathFactory,
    error: Callable[[], BaseException],
    at: int,
    policy: str,
) -> None:
    """Whatever a driver raises, a guarded call sees its own outcome (or "raise": StorageError)."""
    anyio.run(
        _one_driver_fault,
        kind,
        tmp_path_factory.mktemp(kind),
        error,
        at,
        policy,
        backend=anyio_backend,
    )


async def _one_driver_fault(
    kind: str, tmp_path: Path, error: Callable[[], BaseException], at: int, policy: str
) -> None:
    switch = Switch()
    switch.error, switch.at = error, at
    clock = FakeClock()
    async with faulty_storage(kind, tmp_path, switch) as storage:
        breaker = make(
            storage,
            clock,
            failure_threshold=50,
            on_storage_error=policy,
            storage_retry_interval=0.0,
        )
        await fail(breaker)  # the tables and the record exist before the fault
        switch.on = True
        allowed: tuple[type[BaseException], ...] = {
            "local": (Boom,),
            "allow": (Boom,),
            "reject": (Boom, CircuitBreakerOpenError),
            "raise": (Boom, StorageError),
        }[policy]
        for _ in range(4):
            try:
                async with breaker:
                    raise Boom
            except allowed:
                pass
        if policy == "raise":
            with pytest.raises(StorageError):
                await fail_through(breaker, 5)


async def fail_through(breaker: CircuitBreaker, times: int) -> None:
    """Run ``times`` failing calls, letting whatever else is raised through."""
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom


def test_a_name_that_is_not_text_is_refused_where_it_is_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A name with a lone surrogate (from os.fsdecode) is refused at construction, named."""
    with pytest.raises(ValueError, match=r"name '\\udcff-api' cannot be stored"):
        CircuitBreaker("\udcff-api")


def test_logging_is_quiet_by_default(caplog: pytest.LogCaptureFixture) -> None:
    """Constructing breakers logs nothing."""
    with caplog.at_level(logging.DEBUG, logger="anybreaker"):
        CircuitBreaker(NAME)
    assert caplog.records == []
