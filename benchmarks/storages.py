"""The storage benchmarks: SQLite, PostgreSQL and Redis against memory and raw drivers.

Two measurements per storage kind:

- a closed-state call at default settings (default staleness), against the
  same call on the in-memory breaker;
- a recorded failure (one compare-and-set write), against one raw
  compare-and-set sent through the same driver the same way (a worker
  thread for the sync drivers).

Several processes failing on one breaker at once are measured by
``contention.py``. A kind whose storage module or driver is not importable,
or whose server is not running, is skipped with the reason.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from libraries import NEVER, Boom, fail, noop
from timing import RUNTIMES, median, paired_ratio, per_call

BREAKER = "bench"
POSTGRES_HOST = os.environ.get("ANYBREAKER_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("ANYBREAKER_POSTGRES_PORT", "5432"))
POSTGRES_DATABASE = os.environ.get("ANYBREAKER_POSTGRES_DATABASE", "test")
POSTGRES_USER = os.environ.get("ANYBREAKER_POSTGRES_USER", "postgres")
REDIS_HOST = os.environ.get("ANYBREAKER_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("ANYBREAKER_REDIS_PORT", "6379"))

# Failures are recorded one after the other and must never open the breaker:
# a huge threshold, the default window. The record keeps the window as at
# most ten buckets of counts, so it stays the same size however many
# failures it holds.
FAILURE_SETTINGS: dict[str, Any] = {"failure_threshold": NEVER}

# What a raw compare-and-set writes: a record of the size the breaker writes
# while failures keep coming (one bucket of counts in the window).
PAYLOAD = json.dumps(
    {
        "format": 2,
        "state": "closed",
        "version": 1,
        "generation": 0,
        "changed_at": 0.0,
        "open_duration": 0.0,
        "openings": 0,
        "forced": False,
        "window_size": 60.0,
        "buckets": [[1764316800.0, 812, 812, 0]],
        "consecutive_failures": 812,
        "successes": 0,
        "trials": [],
    },
    separators=(",", ":"),
)


def postgres_url(driver: str | None = None) -> str:
    """The URL of the benchmark's PostgreSQL database, through ``driver`` if given."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{POSTGRES_DATABASE}"


def redis_url() -> str:
    """The URL of the benchmark's Redis server."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def server_down(name: str, host: str, port: int) -> str | None:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as error:
        return f"{name} is not running on {host}:{port} ({error})"
    return None


def missing(*modules: str) -> str | None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            return f"{module} is not importable ({error})"
    return None


# -- the storage kinds -------------------------------------------------------------


@dataclass
class Kind:
    """One storage kind: how to open it and how to send a raw compare-and-set."""

    key: str
    label: str
    runtimes: tuple[str, ...]
    modules: tuple[str, ...]
    server: tuple[str, str, int] | None
    raw_label: str

    def unavailable(self) -> str | None:
        """Why this kind cannot be measured here, or ``None``."""
        reason = missing(*self.modules)
        if reason is None and self.server is not None:
            reason = server_down(*self.server)
        return reason


KINDS: list[Kind] = [
    Kind(
        "sqlite",
        "SQLite",
        RUNTIMES,
        ("anybreaker.storage.sql",),
        None,
        "sqlite3 BEGIN IMMEDIATE CAS in a worker thread",
    ),
    Kind(
        "sqlite+aiosqlite",
        "SQLite via aiosqlite",
        ("asyncio",),
        ("anybreaker.storage.sql", "aiosqlite", "sqlalchemy.ext.asyncio"),
        None,
        "aiosqlite BEGIN IMMEDIATE CAS",
    ),
    Kind(
        "postgresql+psycopg",
        "PostgreSQL via psycopg",
        RUNTIMES,
        ("anybreaker.storage.sql", "psycopg"),
        ("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT),
        "psycopg UPDATE ... WHERE version CAS in a worker thread",
    ),
    Kind(
        "postgresql+asyncpg",
        "PostgreSQL via asyncpg",
        ("asyncio",),
        ("anybreaker.storage.sql", "asyncpg", "sqlalchemy.ext.asyncio"),
        ("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT),
        "asyncpg UPDATE ... WHERE version CAS",
    ),
    Kind(
        "redis",
        "Redis via coredis",
        RUNTIMES,
        ("anybreaker.storage.redis", "coredis"),
        ("Redis", REDIS_HOST, REDIS_PORT),
        "coredis Lua CAS script",
    ),
]
KINDS_BY_KEY = {kind.key: kind for kind in KINDS}


@dataclass
class Place:
    """Where one run of one kind keeps its breakers: a file, a table or a prefix."""

    kind: str
    path: str = ""
    table: str = ""
    prefix: str = ""

    @classmethod
    def new(cls, kind: str, directory: str) -> Place:
        """A fresh place that no other run uses."""
        tag = uuid.uuid4().hex[:12]
        return cls(
            kind,
            path=str(Path(directory) / f"breakers-{tag}.db"),
            table=f"anybreaker_bench_{tag}",
            prefix=f"anybreaker-bench-{tag}",
        )


@asynccontextmanager
async def open_storage(place: Place) -> AsyncIterator[Any]:
    """Open the storage of ``place`` at its default settings."""
    if place.kind == "sqlite":
        from anybreaker.storage.sql import SQLiteStorage

        storage: Any = SQLiteStorage(place.path)
    elif place.kind == "sqlite+aiosqlite":
        from anybreaker.storage.sql import SQLAlchemyStorage

        storage = SQLAlchemyStorage(f"sqlite+aiosqlite:///{place.path}")
    elif place.kind == "postgresql+psycopg":
        from anybreaker.storage.sql import SQLAlchemyStorage

        storage = SQLAlchemyStorage(postgres_url("psycopg"), table=place.table)
    elif place.kind == "postgresql+asyncpg":
        from anybreaker.storage.sql import SQLAlchemyStorage

        storage = SQLAlchemyStorage(postgres_url("asyncpg"), table=place.table)
    elif place.kind == "redis":
        from anybreaker.storage.redis import RedisStorage

        storage = RedisStorage(redis_url(), prefix=place.prefix)
    else:
        raise ValueError(f"unknown storage kind {place.kind!r}")
    async with storage:
        yield storage


async def drop(place: Place) -> None:
    """Remove what a run left in the database or on the server."""
    if place.kind.startswith("postgresql"):
        from anybreaker.storage import sql

        async with open_storage(Place("postgresql+psycopg", table=place.table)) as storage:
            await sql.drop_table(storage)  # type: ignore[attr-defined]
    elif place.kind == "redis":
        async with open_storage(place) as storage:
            for name in await storage.names():
                await storage.delete(name)
    else:
        _remove(place.path)


def _remove(path: str) -> None:
    """Delete an SQLite database file and its companions."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)


# -- raw compare-and-set, the baseline of a recorded failure --------------------------------

Cas = Callable[[int], Awaitable[bool]]


@asynccontextmanager
async def raw_cas(place: Place) -> AsyncIterator[Cas]:
    """Yield ``cas(expected_version)``: one raw compare-and-set through the kind's driver.

    The row starts at version 0; each successful call moves it one up.
    """
    if place.kind == "sqlite":
        import sqlite3

        path = place.path + ".raw"
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute(
                "CREATE TABLE raw (name TEXT PRIMARY KEY, version INTEGER, data TEXT)"
            )
            connection.execute("INSERT INTO raw VALUES (?, 0, ?)", (BREAKER, PAYLOAD))

            def write(expected: int) -> bool:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    cursor = connection.execute(
                        "UPDATE raw SET version = ?, data = ? WHERE name = ? AND version = ?",
                        (expected + 1, PAYLOAD, BREAKER, expected),
                    )
                    stored = cursor.rowcount == 1
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                return stored

            async def cas(expected: int) -> bool:
                return await anyio.to_thread.run_sync(write, expected)

            yield cas
        finally:
            connection.close()
            _remove(path)
    elif place.kind == "sqlite+aiosqlite":
        import aiosqlite

        path = place.path + ".raw"
        async with aiosqlite.connect(path, isolation_level=None) as db:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("CREATE TABLE raw (name TEXT PRIMARY KEY, version INTEGER, data TEXT)")
            await db.execute("INSERT INTO raw VALUES (?, 0, ?)", (BREAKER, PAYLOAD))

            async def cas(expected: int) -> bool:
                await db.execute("BEGIN IMMEDIATE")
                cursor = await db.execute(
                    "UPDATE raw SET version = ?, data = ? WHERE name = ? AND version = ?",
                    (expected + 1, PAYLOAD, BREAKER, expected),
                )
                await db.execute("COMMIT")
                return cursor.rowcount == 1

            try:
                yield cas
            finally:
                _remove(path)
    elif place.kind == "postgresql+psycopg":
        import psycopg

        table = place.table + "_raw"
        connection = psycopg.connect(
            host=POSTGRES_HOST,
            port=POSTGRES_PORT,
            user=POSTGRES_USER,
            dbname=POSTGRES_DATABASE,
            autocommit=True,
        )
        try:
            connection.execute(
                f"CREATE TABLE {table} (name TEXT PRIMARY KEY, version BIGINT, data TEXT)"
            )
            connection.execute(f"INSERT INTO {table} VALUES (%s, 0, %s)", (BREAKER, PAYLOAD))
            update = f"UPDATE {table} SET version = %s, data = %s WHERE name = %s AND version = %s"

            def write(expected: int) -> bool:
                cursor = connection.execute(update, (expected + 1, PAYLOAD, BREAKER, expected))
                return cursor.rowcount == 1

            async def cas(expected: int) -> bool:
                return await anyio.to_thread.run_sync(write, expected)

            yield cas
        finally:
            connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.close()
    elif place.kind == "postgresql+asyncpg":
        import asyncpg

        table = place.table + "_raw"
        connection = await asyncpg.connect(
            host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database=POSTGRES_DATABASE
        )
        try:
            await connection.execute(
                f"CREATE TABLE {table} (name TEXT PRIMARY KEY, version BIGINT, data TEXT)"
            )
            await connection.execute(f"INSERT INTO {table} VALUES ($1, 0, $2)", BREAKER, PAYLOAD)
            update = f"UPDATE {table} SET version = $1, data = $2 WHERE name = $3 AND version = $4"

            async def cas(expected: int) -> bool:
                status = await connection.execute(update, expected + 1, PAYLOAD, BREAKER, expected)
                return bool(status == "UPDATE 1")

            yield cas
        finally:
            await connection.execute(f"DROP TABLE IF EXISTS {table}")
            await connection.close()
    elif place.kind == "redis":
        import coredis
        from coredis.commands.script import Script

        key = f"{{{place.prefix}}}:raw"
        script: Any = Script(
            script="""
            if redis.call('HGET', KEYS[1], 'version') == ARGV[1] then
              redis.call('HSET', KEYS[1], 'version', ARGV[2], 'data', ARGV[3])
              return 1
            end
            return 0
            """
        )
        client: Any = coredis.Redis.from_url(redis_url())
        async with client:
            await client.hset(key, {"version": "0", "data": PAYLOAD})

            async def cas(expected: int) -> bool:
                result = await script(
                    keys=[key], args=[str(expected), str(expected + 1), PAYLOAD], client=client
                )
                return bool(result == 1)

            try:
                yield cas
            finally:
                await client.delete([key])
    else:
        raise ValueError(f"unknown storage kind {place.kind!r}")


# -- measurements ----------------------------------------------------------------


@dataclass
class StorageResults:
    """Every storage measurement, per kind and runtime, one entry per round."""

    costs: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    """(runtime, series, "closed" | "failure") -> seconds per call, per round.

    A series is a storage kind, "raw:<kind>" (the raw compare-and-set) or
    "memory:<kind>" (the in-memory breaker measured in the same rounds).
    """
    skipped: dict[str, str] = field(default_factory=dict)
    """kind (or "kind/part") -> why it was not measured."""
    kinds: list[str] = field(default_factory=list)

    def cost(self, runtime: str, series: str, part: str) -> float:
        """Median seconds per call over the rounds."""
        return median(self.costs.get((runtime, series, part), []))

    def memory_cost(self, runtime: str, part: str) -> float:
        """Median seconds per call of the in-memory breaker, over every round."""
        pooled = [
            cost
            for (at, series, of), costs in self.costs.items()
            if at == runtime and of == part and series.startswith("memory:")
            for cost in costs
        ]
        return median(pooled)

    def ratio(self, runtime: str, series: str, base: str, part: str) -> float:
        """Median over rounds of (series cost / base cost) for ``part``."""
        mine = self.costs.get((runtime, series, part), [])
        theirs = self.costs.get((runtime, base, part), [])
        if not mine or len(mine) != len(theirs):
            return float("nan")
        return paired_ratio(mine, theirs)


def _closed_loop(breaker: Any) -> Callable[[int], Awaitable[None]]:
    async def loop(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    return loop


def _failure_loop(breaker: Any) -> Callable[[int], Awaitable[None]]:
    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await fail()
            except Boom:
                pass

    return loop


async def _round(
    kind: Kind, runtime: str, directory: str, n_closed: int, n_failures: int
) -> dict[tuple[str, str, str], float]:
    """One round for one kind under one runtime: closed calls, failures, raw CAS."""
    from anybreaker import CircuitBreaker

    costs: dict[tuple[str, str, str], float] = {}
    memory_closed = CircuitBreaker(BREAKER)
    memory_failing = CircuitBreaker(BREAKER, **FAILURE_SETTINGS)
    place = Place.new(kind.key, directory)
    try:
        async with open_storage(place) as storage:
            closed = CircuitBreaker(BREAKER, storage=storage)
            failing = CircuitBreaker(BREAKER + "-failing", storage=storage, **FAILURE_SETTINGS)
            costs[runtime, "memory:" + kind.key, "closed"] = await per_call(
                _closed_loop(memory_closed), n_closed
            )
            costs[runtime, kind.key, "closed"] = await per_call(_closed_loop(closed), n_closed)
            costs[runtime, "memory:" + kind.key, "failure"] = await per_call(
                _failure_loop(memory_failing), n_failures
            )
            costs[runtime, kind.key, "failure"] = await per_call(_failure_loop(failing), n_failures)
            stats = failing.get_stats()
            if stats.failed_calls < n_failures:
                raise RuntimeError(f"{kind.key}: failures were not recorded: {stats}")
        async with raw_cas(place) as cas:
            version = 0

            async def raw_loop(n: int) -> None:
                nonlocal version
                for _ in range(n):
                    if not await cas(version):
                        raise RuntimeError("raw compare-and-set lost its row")
                    version += 1

            costs[runtime, "raw:" + kind.key, "failure"] = await per_call(raw_loop, n_failures)
    finally:
        await drop(place)
    return costs


def measure_storages(
    rounds: int,
    n_closed: int,
    n_failures: dict[str, int],
    kinds: list[str] | None = None,
    runtimes: tuple[str, ...] = RUNTIMES,
) -> StorageResults:
    """Measure every available storage kind; print a skip line for the others."""
    results = StorageResults()
    chosen = [KINDS_BY_KEY[key] for key in kinds] if kinds else KINDS
    with tempfile.TemporaryDirectory(prefix="anybreaker-bench-") as directory:
        runnable: list[Kind] = []
        for kind in chosen:
            reason = kind.unavailable()
            if reason is not None:
                results.skipped[kind.key] = reason
                print(f"  skip {kind.key}: {reason}", flush=True)
            else:
                runnable.append(kind)
                results.kinds.append(kind.key)
        for index in range(rounds):
            for kind in runnable:
                for runtime in kind.runtimes:
                    if runtime not in runtimes:
                        continue
                    try:
                        costs = anyio.run(
                            _round,
                            kind,
                            runtime,
                            directory,
                            n_closed,
                            n_failures[kind.key],
                            backend=runtime,
                        )
                    except Exception as error:  # report a broken storage, keep going
                        key = f"{kind.key}/{runtime}"
                        results.skipped[key] = f"{type(error).__name__}: {error}"
                        print(f"  {key} failed in round {index + 1}: {error!r}", flush=True)
                        continue
                    for key, cost in costs.items():
                        results.costs.setdefault(key, []).append(cost)
    return results
