"""Every shipped storage passes the conformance kit.

Each class builds its storage as ``tests/_storages.py`` does; one whose
driver is not installed, or whose server is not running, is skipped with
the reason.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from anybreaker import MemoryStorage, Storage
from anybreaker.testing import StorageTests

from ._storages import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    REDIS_HOST,
    REDIS_PORT,
    postgres_url,
    redis_url,
    require_server,
    unique_name,
)

# A port nobody listens on: connections to it are refused at once.
_CLOSED_PORT = 1


def _sql() -> Any:
    return pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )


class TestMemoryStorage(StorageTests):
    """MemoryStorage, under both runtimes."""

    async def make_storage(self) -> Storage:
        return MemoryStorage()


class TestSQLiteStorage(StorageTests):
    """SQLiteStorage on a file, shared by processes, on a sync engine in worker threads."""

    async def make_storage(self) -> Storage:
        storage: Storage = _sql().SQLiteStorage(self.tmp_path / "breakers.db", staleness=0)
        return storage

    def shared_storage_factory(self) -> Callable[[], Storage]:
        return functools.partial(_sql().SQLiteStorage, self.tmp_path / "breakers.db", staleness=0)

    async def make_failing_storage(self) -> Storage:
        # A directory where the database file should be: the driver cannot open it.
        path = self.tmp_path / "a-directory.db"
        path.mkdir()
        storage: Storage = _sql().SQLiteStorage(path, staleness=0)
        return storage


class TestSQLiteAiosqliteStorage(StorageTests):
    """SQLAlchemyStorage on an AsyncEngine over aiosqlite."""

    # SQLAlchemy's async engine over aiosqlite needs asyncio.
    runtimes = ("asyncio",)

    @asynccontextmanager
    async def make_storage(self) -> AsyncIterator[Storage]:
        sql = _sql()
        pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(f"sqlite+aiosqlite:///{self.tmp_path / 'breakers.db'}")
        try:
            async with sql.SQLAlchemyStorage(engine, staleness=0) as storage:
                yield storage
        finally:
            await engine.dispose()

    @asynccontextmanager
    async def make_failing_storage(self) -> AsyncIterator[Storage]:
        sql = _sql()
        pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
        from sqlalchemy.ext.asyncio import create_async_engine

        # A directory where the database file should be: the driver cannot open it.
        path = self.tmp_path / "a-directory.db"
        path.mkdir()
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            async with sql.SQLAlchemyStorage(engine, staleness=0) as storage:
                yield storage
        finally:
            await engine.dispose()


class _PostgresTests(StorageTests):
    """SQLAlchemyStorage on PostgreSQL, in a table of its own per test."""

    driver: str

    def _sql(self) -> Any:
        sql = _sql()
        pytest.importorskip(self.driver, reason=f"needs {self.driver}")
        return sql

    @asynccontextmanager
    async def make_storage(self) -> AsyncIterator[Storage]:
        sql = self._sql()
        require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        self.table = unique_name("breakers")
        url: Any = postgres_url(self.driver)
        engine = None
        if self.driver == "asyncpg":
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = url = create_async_engine(url)
        try:
            async with sql.SQLAlchemyStorage(url, table=self.table, staleness=0) as storage:
                yield storage
            # That storage is closed now: drop its table through a new one.
            async with sql.SQLAlchemyStorage(url, table=self.table) as cleaner:
                await sql.drop_table(cleaner)
        finally:
            if engine is not None:
                await engine.dispose()

    async def make_failing_storage(self) -> Storage:
        sql = self._sql()
        url: Any = f"postgresql+{self.driver}://postgres@{POSTGRES_HOST}:{_CLOSED_PORT}/test"
        if self.driver == "asyncpg":
            from sqlalchemy.ext.asyncio import create_async_engine

            url = create_async_engine(url)
        storage: Storage = sql.SQLAlchemyStorage(url)
        return storage


@pytest.mark.server
class TestPostgresPsycopgStorage(_PostgresTests):
    """PostgreSQL through psycopg on a sync engine in worker threads, shared by processes."""

    driver = "psycopg"

    def shared_storage_factory(self) -> Callable[[], Storage]:
        return functools.partial(
            _sql().SQLAlchemyStorage,
            postgres_url(self.driver),
            table=self.table,
            staleness=0,
        )


@pytest.mark.server
class TestPostgresAsyncpgStorage(_PostgresTests):
    """PostgreSQL through asyncpg on an AsyncEngine."""

    # SQLAlchemy's async engine over asyncpg needs asyncio.
    runtimes = ("asyncio",)
    driver = "asyncpg"


def _redis() -> Any:
    return pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )


@pytest.mark.server
class TestRedisStorage(StorageTests):
    """RedisStorage on coredis, under both runtimes, shared by processes."""

    @asynccontextmanager
    async def make_storage(self) -> AsyncIterator[Storage]:
        module = _redis()
        require_server("Redis", REDIS_HOST, REDIS_PORT)
        self.prefix = unique_name("anybreaker-kit")
        async with module.RedisStorage(redis_url(), prefix=self.prefix, staleness=0) as storage:
            yield storage
        # That storage is closed now: clean up through a new one.
        async with module.RedisStorage(redis_url(), prefix=self.prefix) as cleaner:
            for name in await cleaner.names():
                await cleaner.delete(name)

    def shared_storage_factory(self) -> Callable[[], Storage]:
        return functools.partial(
            _redis().RedisStorage, redis_url(), prefix=self.prefix, staleness=0
        )

    async def make_failing_storage(self) -> Storage:
        storage: Storage = _redis().RedisStorage(f"redis://{REDIS_HOST}:{_CLOSED_PORT}/0")
        return storage
