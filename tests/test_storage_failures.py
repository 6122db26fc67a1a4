"""Real SQLite faults under each on_storage_error policy.

The faults: another process holding SQLite's lock beyond ``lock_timeout``,
the database file replaced under the storage, and a disk I/O error injected
into the driver. Under the default policy, ``"local"``, the guarded call
never sees a driver error, the breaker keeps protecting from what it knows,
and it goes back to the database once the database answers again.
"""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import pytest

from anybreaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    Storage,
    StorageError,
)
from anybreaker.testing import FakeClock

if TYPE_CHECKING:
    from anybreaker.storage.sql import SQLAlchemyStorage

sql = pytest.importorskip(
    "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
)
sa = pytest.importorskip("sqlalchemy")

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("_sqlite_worker.py")
WAIT = 60.0
RETRY_INTERVAL = 1.0
NAME = "model-api"


class Boom(Exception):
    """The guarded dependency failed."""


class Fault:
    """A storage for a breaker, and a real fault that can be switched on and off."""

    message = ""
    """What the StorageError says about this fault."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def storage(self) -> SQLAlchemyStorage:
        raise NotImplementedError

    async def on(self) -> None:
        raise NotImplementedError

    async def off(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Release what the fault holds, however the test ended."""


class LockHeld(Fault):
    """Another process holds an exclusive lock on the file, beyond ``lock_timeout``."""

    message = "locked"
    child: subprocess.Popen[str] | None = None

    def storage(self) -> SQLAlchemyStorage:
        # In rollback-journal mode an exclusive lock keeps readers out too.
        storage: SQLAlchemyStorage = sql.SQLiteStorage(
            self.path, staleness=0, lock_timeout=0.05, journal_mode="delete"
        )
        return storage

    async def on(self) -> None:
        self.child = hold_lock(self.path, "EXCLUSIVE")

    async def off(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.communicate("release\n", timeout=WAIT)
            assert self.child.returncode == 0

    def cleanup(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.communicate(timeout=WAIT)


class FileReplaced(Fault):
    """The database file is replaced by a file that is not SQLite, later removed.

    Replaced as a whole: its ``-wal`` and ``-shm`` files go with it, as they
    must when a live SQLite database is swapped out.
    """

    message = "not a SQLite database"

    def storage(self) -> SQLAlchemyStorage:
        storage: SQLAlchemyStorage = sql.SQLiteStorage(self.path, staleness=0)
        return storage

    async def on(self) -> None:
        garbage = self.path.with_name("garbage")
        garbage.write_bytes(b"not a database, whatever the name says\n" * 64)
        self.content = garbage.read_bytes()
        os.replace(garbage, self.path)
        for suffix in ("-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    async def off(self) -> None:
        assert self.path.read_bytes() == self.content, "the storage wrote into the stranger"
        self.path.unlink()


class InjectedIOError(Fault):
    """The driver fails every statement with SQLite's "disk I/O error"."""

    message = "disk I/O error"

    def storage(self) -> SQLAlchemyStorage:
        fault = self

        class Cursor(sqlite3.Cursor):
            def execute(self, *args: Any, **kwargs: Any) -> Any:
                if fault.failing:
                    raise sqlite3.OperationalError("disk I/O error")
                return super().execute(*args, **kwargs)

        class Connection(sqlite3.Connection):
            def cursor(self, *args: Any, **kwargs: Any) -> Any:
                return super().cursor(Cursor)

        self.failing = False
        self.engine = sa.create_engine(
            f"sqlite:///{self.path}", connect_args={"factory": Connection}
        )
        storage: SQLAlchemyStorage = sql.SQLAlchemyStorage(
            self.engine, staleness=0, lock_timeout=0.05
        )
        return storage

    async def on(self) -> None:
        self.failing = True

    async def off(self) -> None:
        self.failing = False

    def cleanup(self) -> None:
        self.engine.dispose()


def hold_lock(path: Path, lock: str) -> subprocess.Popen[str]:
    """Start a process that holds SQLite's ``lock`` on ``path`` until its stdin closes."""
    child = subprocess.Popen(
        [sys.executable, str(WORKER), "hold-lock", json.dumps({"path": str(path), "lock": lock})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    readable, _, _ = select.select([child.stdout], [], [], WAIT)
    line = child.stdout.readline() if readable else ""
    if line.strip() != "locked":
        child.kill()
        pytest.fail(f"the lock holder did not start: {child.communicate()[1]}")
    return child


FAULTS: dict[str, Callable[[Path], Fault]] = {
    "lock held": LockHeld,
    "file replaced": FileReplaced,
    "I/O error": InjectedIOError,
}


@pytest.fixture(params=FAULTS)
async def fault(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Fault]:
    """Each fault in turn, switched off again however the test ends."""
    made = FAULTS[request.param](tmp_path / "breakers.db")
    try:
        yield made
    finally:
        made.cleanup()


@asynccontextmanager
async def other_process_view(path: Path) -> AsyncIterator[Storage]:
    """A second storage on the file: what another process would see and write."""
    async with sql.SQLiteStorage(path, staleness=0, journal_mode=None) as storage:
        yield storage


class Guarded:
    """A breaker and a record of what its guarded calls ran and raised."""

    def __init__(self, storage: Storage, policy: str, clock: FakeClock) -> None:
        self.breaker = CircuitBreaker(
            NAME,
            storage=storage,
            clock=clock,
            failure_threshold=2,
            on_storage_error=policy,
            storage_timeout=10.0,
            storage_retry_interval=RETRY_INTERVAL,
        )
        self.ran = 0
        self.raised: Exception | None = None

    async def call(self) -> type[BaseException]:
        """Call a failing dependency through the breaker; return what was raised."""

        async def dependency() -> None:
            self.ran += 1
            raise Boom

        try:
            await self.breaker.call(dependency)
        except Exception as error:
            self.raised = error
            return type(error)
        raise AssertionError("the dependency always fails")


def scene(fault: Fault, policy: str) -> AbstractAsyncContextManager[tuple[Guarded, FakeClock]]:
    """A breaker under ``policy`` on the fault's storage, with one failure stored."""

    @asynccontextmanager
    async def make() -> AsyncIterator[tuple[Guarded, FakeClock]]:
        clock = FakeClock()
        storage = fault.storage()
        async with storage:
            guarded = Guarded(storage, policy, clock)
            assert await guarded.call() is Boom
            async with other_process_view(fault.path) as view:
                breaker = CircuitBreaker(NAME, storage=view, clock=clock)
                assert (await breaker.get_window_stats()).failures == 1
            yield guarded, clock

    return make()


async def resynced(guarded: Guarded, fault: Fault, clock: FakeClock) -> None:
    """Once the fault is gone, the breaker acts on what another process writes."""
    await fault.off()
    async with other_process_view(fault.path) as view:
        await CircuitBreaker(NAME, storage=view).force_open()
    clock.advance(RETRY_INTERVAL + 0.5)
    ran = guarded.ran
    assert await guarded.call() is CircuitBreakerOpenError
    assert guarded.ran == ran
    assert guarded.breaker.get_time_until_retry() == float("inf")


async def test_local_policy_keeps_protecting_and_resyncs(fault: Fault) -> None:
    """Policy "local": no driver error reaches the call, it keeps protecting, then re-syncs."""
    async with scene(fault, "local") as (guarded, clock):
        await fault.on()
        raised = [await guarded.call() for _ in range(4)]
        # One failure was stored before the fault; the first one during it
        # opens the breaker from what this process knows.
        assert raised == [
            Boom,
            CircuitBreakerOpenError,
            CircuitBreakerOpenError,
            CircuitBreakerOpenError,
        ]
        assert guarded.ran == 2
        assert guarded.breaker.state is CircuitState.OPEN
        await resynced(guarded, fault, clock)


async def test_allow_policy_lets_calls_through(fault: Fault) -> None:
    """Policy "allow": while the database fails every call runs, past the failure threshold."""
    async with scene(fault, "allow") as (guarded, clock):
        await fault.on()
        raised = [await guarded.call() for _ in range(4)]
        assert raised == [Boom] * 4
        assert guarded.ran == 5
        await resynced(guarded, fault, clock)


async def test_reject_policy_refuses_calls(fault: Fault) -> None:
    """Policy "reject": while the database fails, calls are refused without running."""
    async with scene(fault, "reject") as (guarded, clock):
        await fault.on()
        raised = [await guarded.call() for _ in range(3)]
        assert raised == [CircuitBreakerOpenError] * 3
        assert guarded.ran == 1
        await resynced(guarded, fault, clock)


async def test_raise_policy_raises_the_storage_error(fault: Fault) -> None:
    """Policy "raise": the StorageError reaches the caller, saying what failed, and where, once."""
    async with scene(fault, "raise") as (guarded, clock):
        await fault.on()
        assert await guarded.call() is StorageError
        assert guarded.ran == 1
        assert guarded.raised is not None
        message = str(guarded.raised)
        assert fault.message in message
        assert str(fault.path) in message
        # The driver's own exception, its words said once in the message.
        cause = guarded.raised.__cause__
        assert isinstance(cause, sqlite3.Error)
        assert message.count(str(cause)) == 1
        await resynced(guarded, fault, clock)


async def test_a_write_lock_beyond_lock_timeout_fails_writes_only(tmp_path: Path) -> None:
    """In WAL a write lock held elsewhere fails writes, not reads; "local" still opens it."""
    path = tmp_path / "breakers.db"
    lock = LockHeld(path)
    clock = FakeClock()
    async with sql.SQLiteStorage(path, staleness=0, lock_timeout=0.05) as storage:
        guarded = Guarded(storage, "local", clock)
        assert await guarded.call() is Boom
        holder = hold_lock(path, "IMMEDIATE")
        lock.child = holder
        try:
            # Readers are not blocked in WAL: the record is there to read.
            assert await storage.get(NAME) is not None
            started = time.monotonic()
            with pytest.raises(StorageError, match=r"lock_timeout=0\.05"):
                await storage.delete(NAME)
            assert time.monotonic() - started < 5
            assert [await guarded.call() for _ in range(2)] == [Boom, CircuitBreakerOpenError]
            await lock.off()
        finally:
            lock.cleanup()
        clock.advance(RETRY_INTERVAL + 0.5)
        async with other_process_view(path) as view:
            await CircuitBreaker(NAME, storage=view).force_open()
        assert await guarded.call() is CircuitBreakerOpenError
        assert guarded.breaker.get_time_until_retry() == float("inf")


async def test_a_lock_released_within_lock_timeout_is_waited_out(tmp_path: Path) -> None:
    """A write lock held elsewhere for less than lock_timeout delays a write, not fails it."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path, lock_timeout=5.0) as storage:
        assert await storage.compare_and_set(NAME, None, BreakerRecord(version=1))
        holder = hold_lock(path, "IMMEDIATE")
        try:
            async with anyio.create_task_group() as group:

                async def release_soon() -> None:
                    # Longer than SQLite's busy wait per attempt (50 ms).
                    await anyio.sleep(0.3)
                    await anyio.to_thread.run_sync(release, holder)

                group.start_soon(release_soon)
                started = time.monotonic()
                assert await storage.compare_and_set(NAME, 1, BreakerRecord(version=2))
                assert time.monotonic() - started >= 0.25
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.communicate(timeout=WAIT)
        assert await storage.get(NAME) == BreakerRecord(version=2)


async def test_a_lock_held_past_a_second_is_waited_out_within_storage_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A busy database is not a failing one: a failure waits for a 1.2 s lock, no outage."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path, staleness=0) as storage:
        breaker = CircuitBreaker(NAME, storage=storage, failure_threshold=10)
        with pytest.raises(Boom):
            async with breaker:
                raise Boom
        holder = hold_lock(path, "IMMEDIATE")
        try:
            async with anyio.create_task_group() as group:

                async def release_later() -> None:
                    await anyio.sleep(1.2)  # longer than a second, within storage_timeout (2 s)
                    await anyio.to_thread.run_sync(release, holder)

                group.start_soon(release_later)
                started = time.monotonic()
                with pytest.raises(Boom):
                    async with breaker:
                        raise Boom
                assert time.monotonic() - started >= 1.0
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.communicate(timeout=WAIT)
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
        assert (await breaker.get_window_stats()).failures == 2


def release(holder: subprocess.Popen[str]) -> None:
    """Tell a lock holder to let go, and wait for it to end."""
    holder.communicate("release\n", timeout=WAIT)


async def test_failures_counted_while_writes_fail_reach_the_file_afterwards(
    tmp_path: Path,
) -> None:
    """Reads answer, writes fail: it opens locally, waits on the lock once, then tells the file."""
    path = tmp_path / "breakers.db"
    lock = LockHeld(path)
    clock = FakeClock()
    async with sql.SQLiteStorage(path, staleness=0, lock_timeout=0.2) as storage:
        guarded = Guarded(storage, "local", clock)
        guarded.breaker = CircuitBreaker(
            NAME,
            storage=storage,
            clock=clock,
            failure_threshold=3,
            storage_timeout=10.0,
            storage_retry_interval=RETRY_INTERVAL,
        )
        assert await guarded.call() is Boom
        lock.child = hold_lock(path, "IMMEDIATE")
        try:
            started = time.monotonic()
            outcomes = [await guarded.call() for _ in range(4)]
            elapsed = time.monotonic() - started
            assert outcomes == [Boom, Boom, CircuitBreakerOpenError, CircuitBreakerOpenError]
            # Only the first failed write waited out lock_timeout; the rest went local.
            assert elapsed < 3 * 0.2 + 1.0
            await lock.off()
        finally:
            lock.cleanup()
        clock.advance(RETRY_INTERVAL)
        assert await guarded.call() is CircuitBreakerOpenError  # the probe writes what it counted
        async with other_process_view(path) as view:
            stored = await view.get(NAME)
            assert stored is not None
            assert stored.state is CircuitState.OPEN
            observer = CircuitBreaker(NAME, storage=view, clock=clock)
            assert (await observer.get_window_stats()).failures == 3
