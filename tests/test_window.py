"""The outcome path: counts in buckets, group commit, a cache that never goes back.

Every test runs on every storage, under asyncio and trio, with a fake clock.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from anybreaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    StateChange,
    Storage,
)
from anybreaker.testing import FakeClock

from ._storages import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    InFront,
    postgres_url,
    require_server,
    unique_name,
)

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
NAME = "model-api"


class Boom(Exception):
    """The guarded dependency failed."""


class Watched(InFront):
    """A storage in front of another: counts writes, and can hold reads or writes back."""

    staleness = 0.0

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.writes = 0
        self.hold_writes: anyio.Event | None = None
        self.hold_reads: anyio.Event | None = None
        self.read_held = anyio.Event()
        self.writing = anyio.Event()

    async def get(self, name: str) -> BreakerRecord | None:
        hold = self.hold_reads
        record = await self.inner.get(name)
        if hold is not None:
            # The answer was read now, and arrives when the test lets it.
            self.read_held.set()
            await hold.wait()
        return record

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        self.writes += 1
        self.writing.set()
        if self.hold_writes is not None:
            await self.hold_writes.wait()
        for _ in range(3):  # a write takes a while, as on a server
            await anyio.lowlevel.checkpoint()
        return await self.inner.compare_and_set(name, expected_version, record)


def make(storage: Any, clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """A breaker on ``storage`` and the test's clock.

    Its storage_timeout is long: a write these tests hold back, or one slow
    under load, must not count as an outage.
    """
    defaults: dict[str, Any] = {
        "failure_threshold": 3,
        "timeout": 10.0,
        "window_size": 60.0,
        "storage_timeout": 60.0,
    }
    return CircuitBreaker(NAME, storage=storage, clock=clock, **{**defaults, **settings})


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that raise ``Boom``."""
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom


async def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that succeed."""
    for _ in range(times):
        async with breaker:
            pass


@pytest.mark.parametrize(
    "rules",
    [{"failure_threshold": None, "consecutive_failures": 1000}, {"failure_threshold": 1000}],
    ids=["streak-rule", "count-rule-alone"],
)
async def test_window_stats_add_up_to_what_callers_saw(
    storage: Storage, clock: FakeClock, rules: dict[str, Any]
) -> None:
    """Calls, failures and the failure rate are the sums of every breaker's outcomes."""
    first = make(storage, clock, **rules)
    second = make(storage, clock, **rules)
    await succeed(first, 7)
    await fail(second, 3)
    await fail(first, 2)
    await succeed(second, 4)
    await fail(first)
    await first.get_window_stats()  # writes first's pending successes
    stats = await second.get_window_stats()
    assert (stats.calls, stats.failures, stats.consecutive_failures) == (17, 6, 0)
    assert stats.failure_rate == pytest.approx(6 / 17)


async def test_the_record_stays_small_whatever_the_traffic(
    storage: Storage, clock: FakeClock
) -> None:
    """After thousands of outcomes over many windows the stored record holds at most 10 buckets."""
    breaker = make(storage, clock, failure_threshold=None, consecutive_failures=10**6)
    for _ in range(200):
        await fail(breaker)
        await succeed(breaker)
        clock.advance(1.7)
    await breaker.get_window_stats()
    stored = await storage.get(NAME)
    assert stored is not None
    assert 1 <= len(stored.buckets) <= 10
    assert len(json.dumps(stored.to_dict())) < 1000


async def test_successes_reach_the_storage_within_the_flush_interval(
    storage: Storage, clock: FakeClock
) -> None:
    """A success costs no write; the next call after a second writes every one counted."""
    watched = Watched(storage)
    breaker = make(watched, clock)
    await succeed(breaker, 50)
    assert watched.writes == 0
    clock.advance(1.0)
    await succeed(breaker)
    assert watched.writes == 1
    assert (await make(storage, clock).get_window_stats()).calls == 51


async def test_failures_during_a_write_join_the_next_one(
    storage: Storage, clock: FakeClock
) -> None:
    """While one write is in flight, twenty failures wait for it, then go as one write."""
    watched = Watched(storage)
    breaker = make(watched, clock, failure_threshold=None, consecutive_failures=1000)
    watched.hold_writes = anyio.Event()
    raised = done = 0

    async def failing() -> None:
        nonlocal raised
        raised += 1
        raise Boom

    async def one_failure() -> None:
        nonlocal done
        with pytest.raises(Boom):
            await breaker.call(failing)
        done += 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(one_failure)
            await watched.writing.wait()
            for _ in range(20):
                group.start_soon(one_failure)
            while raised < 21:  # each then waits for the write in flight
                await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            assert done == 0
            watched.hold_writes.set()
    assert done == 21
    assert watched.writes == 2
    assert (await breaker.get_window_stats()).failures == 21


async def test_tasks_failing_in_a_loop_share_their_writes(
    storage: Storage, clock: FakeClock
) -> None:
    """Ten tasks failing over and over: each write carries what arrived during the last one."""
    watched = Watched(storage)
    breaker = make(watched, clock, failure_threshold=None, consecutive_failures=10**6)

    async def keep_failing() -> None:
        await fail(breaker, 20)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(keep_failing)
    assert (await breaker.get_window_stats()).failures == 200
    # One write per failure would be 200; sharing makes it a fraction, however
    # the tasks happen to interleave.
    assert watched.writes <= 200 / 2, f"{watched.writes} writes for 200 failures"


async def test_a_late_read_never_replaces_a_newer_record(
    storage: Storage, clock: FakeClock
) -> None:
    """A read answered after a newer write was adopted is ignored: the breaker stays open."""
    watched = Watched(storage)
    breaker = make(watched, clock, failure_threshold=1)
    changes: list[StateChange] = []
    breaker.add_listener(changes.append)
    late = watched.hold_reads = anyio.Event()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(breaker.get_state)  # reads "closed" now, answers later
            await watched.read_held.wait()
            watched.hold_reads = None
            await fail(breaker)  # opens it
            assert breaker.state is OPEN
            late.set()
    assert breaker.state is OPEN
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            pytest.fail("a call ran through an open breaker")
    assert [(c.old_state, c.new_state) for c in changes] == [(CLOSED, OPEN)]


async def test_listeners_hear_only_possible_changes_in_time_order(
    storage: Storage, clock: FakeClock
) -> None:
    """A breaker that missed an opening and its end hears closed -> open -> half_open."""
    watcher = make(storage, clock)
    changes: list[StateChange] = []
    watcher.add_listener(changes.append)
    assert await watcher.get_state() is CLOSED
    await fail(make(storage, clock), 3)
    clock.advance(10.0)
    assert await watcher.get_state() is HALF_OPEN
    assert [(c.old_state, c.new_state) for c in changes] == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    assert changes[0].at <= changes[1].at


async def test_refused_for_taken_trials_says_half_open_and_soon(
    storage: Storage, clock: FakeClock
) -> None:
    """With every permit taken, the refusal says HALF_OPEN and a short retry, not the lease."""
    breaker = make(storage, clock, failure_threshold=1, trial_lease=120.0)
    await fail(breaker)
    clock.advance(10.0)
    assert await breaker.allow_request()
    other = make(storage, clock, failure_threshold=1, trial_lease=120.0)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        async with other:
            pytest.fail("a second trial ran")
    assert caught.value.state is HALF_OPEN
    assert 0 < caught.value.time_until_retry <= 1.0
    assert "trial permit" in str(caught.value)
    assert other.get_time_until_retry() == 0.0


# -- records written by release 0.1 ------------------------------------------------------

OLD_RECORD: dict[str, Any] = {
    "format": 1,
    "state": "closed",
    "version": 3,
    "generation": 0,
    "changed_at": 0.0,
    "open_duration": 0.0,
    "openings": 0,
    "forced": False,
    "failures": [999_990.0, 999_995.0],
    "successes": 0,
    "trials": [],
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
async def test_a_record_of_release_0_1_keeps_its_failures(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    """A closed record stored by release 0.1 reads with its failures, and the next one opens it."""
    clock = FakeClock()
    async with _old_record_in(kind, tmp_path) as storage:
        breaker = make(storage, clock)
        assert (await breaker.get_window_stats()).failures == 2
        await fail(breaker)
        assert breaker.state is OPEN
        stored = await storage.get(NAME)
        assert stored is not None
        assert stored.version == 4


def _old_record_in(kind: str, tmp_path: Path) -> Any:
    """A storage holding OLD_RECORD under NAME, written the way release 0.1 wrote it."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def opened() -> Any:
        text = json.dumps(OLD_RECORD)
        if kind == "sqlite":
            sql = pytest.importorskip("anybreaker.storage.sql", exc_type=ImportError)
            path = tmp_path / "old.db"
            async with sql.SQLiteStorage(path, staleness=0) as storage:
                assert await storage.compare_and_set(NAME, None, BreakerRecord(version=1))
                connection = sqlite3.connect(path)
                try:
                    with connection:
                        connection.execute(
                            "UPDATE anybreaker_breakers SET version = 3, record = ?", (text,)
                        )
                finally:
                    connection.close()
                yield storage
        elif kind == "postgresql":
            sql = pytest.importorskip("anybreaker.storage.sql", exc_type=ImportError)
            psycopg = pytest.importorskip("psycopg")
            require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
            table = unique_name("old")
            async with sql.SQLAlchemyStorage(
                postgres_url("psycopg"), table=table, staleness=0
            ) as storage:
                try:
                    assert await storage.compare_and_set(NAME, None, BreakerRecord(version=1))
                    dsn = postgres_url("psycopg").replace("postgresql+psycopg", "postgresql")
                    with psycopg.connect(dsn, autocommit=True) as connection:
                        connection.execute(f"UPDATE {table} SET version = 3, record = %s", (text,))
                    yield storage
                finally:
                    await sql.drop_table(storage)
        else:
            redis = pytest.importorskip("anybreaker.storage.redis", exc_type=ImportError)
            from ._storages import REDIS_HOST, REDIS_PORT, redis_url

            require_server("Redis", REDIS_HOST, REDIS_PORT)
            prefix = unique_name("old")
            async with redis.RedisStorage(redis_url(), prefix=prefix, staleness=0) as storage:
                try:
                    assert await storage.compare_and_set(NAME, None, BreakerRecord(version=1))
                    await storage._client.set(storage.key(NAME), text)
                    yield storage
                finally:
                    await storage.delete(NAME)

    return opened()
