"""Every storage the behaviour tests run against, each made fresh and empty.

A kind whose driver is not installed, or whose server is not running, is
skipped with the reason; with ``ANYBREAKER_REQUIRE_SERVERS=1`` (as CI sets
it) a missing server fails instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from anybreaker import BreakerRecord, MemoryStorage, Storage

POSTGRES_HOST = os.environ.get("ANYBREAKER_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("ANYBREAKER_POSTGRES_PORT", "5432"))
POSTGRES_DATABASE = os.environ.get("ANYBREAKER_POSTGRES_DATABASE", "test")
POSTGRES_USER = os.environ.get("ANYBREAKER_POSTGRES_USER", "postgres")
REDIS_HOST = os.environ.get("ANYBREAKER_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("ANYBREAKER_REDIS_PORT", "6379"))


def postgres_url(driver: str) -> str:
    """The URL of the test PostgreSQL database through ``driver``."""
    return (
        f"postgresql+{driver}://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{POSTGRES_DATABASE}"
    )


def redis_url() -> str:
    """The URL of the test Redis server."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def require_server(name: str, host: str, port: int) -> None:
    """Skip (or, where servers are required, fail) unless ``host:port`` answers."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as error:
        reason = f"{name} is not running on {host}:{port} ({error})"
        if os.environ.get("ANYBREAKER_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{reason}; ANYBREAKER_REQUIRE_SERVERS=1 demands it")
        pytest.skip(reason)


def unique_name(prefix: str) -> str:
    """A name no other test uses, for tables and key prefixes on shared servers."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def memory(tmp_path: Path) -> AsyncIterator[Storage]:
    async with MemoryStorage() as storage:
        yield storage


@asynccontextmanager
async def sqlite(tmp_path: Path) -> AsyncIterator[Storage]:
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )
    async with sql.SQLiteStorage(tmp_path / "breakers.db", staleness=0) as storage:
        yield storage


@asynccontextmanager
async def sqlite_aiosqlite(tmp_path: Path) -> AsyncIterator[Storage]:
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )
    pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'breakers.db'}")
    try:
        async with sql.SQLAlchemyStorage(engine, staleness=0) as storage:
            yield storage
    finally:
        await engine.dispose()


def _postgres(driver: str) -> Callable[[Path], AbstractAsyncContextManager[Storage]]:
    @asynccontextmanager
    async def make(tmp_path: Path) -> AsyncIterator[Storage]:
        sql = pytest.importorskip(
            "anybreaker.storage.sql", reason="needs anybreaker[postgres]", exc_type=ImportError
        )
        pytest.importorskip(driver, reason=f"needs {driver}")
        require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        table = unique_name("breakers")
        engine: object = postgres_url(driver)
        if driver == "asyncpg":
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(postgres_url(driver))
        async with sql.SQLAlchemyStorage(engine, table=table, staleness=0) as storage:
            try:
                yield storage
            finally:
                await sql.drop_table(storage)
        if driver == "asyncpg":
            await engine.dispose()  # type: ignore[attr-defined]

    return make


@asynccontextmanager
async def redis(tmp_path: Path) -> AsyncIterator[Storage]:
    module = pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    prefix = unique_name("anybreaker-test")
    async with module.RedisStorage(redis_url(), prefix=prefix, staleness=0) as storage:
        try:
            yield storage
        finally:
            for name in await storage.names():
                await storage.delete(name)


StorageFactory = Callable[[Path], AbstractAsyncContextManager[Storage]]

# kind -> (factory, whether it runs under trio)
STORAGES: dict[str, tuple[StorageFactory, bool]] = {
    "memory": (memory, True),
    "sqlite": (sqlite, True),
    # SQLAlchemy's async engine over aiosqlite needs asyncio.
    "sqlite+aiosqlite": (sqlite_aiosqlite, False),
    "postgresql+psycopg": (_postgres("psycopg"), True),
    # SQLAlchemy's async engine over asyncpg needs asyncio.
    "postgresql+asyncpg": (_postgres("asyncpg"), False),
    "redis": (redis, True),
}


class InFront:
    """A storage in front of another, passing every operation on; subclasses change some."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    async def get(self, name: str) -> BreakerRecord | None:
        return await self.inner.get(name)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        return await self.inner.compare_and_set(name, expected_version, record)

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)

    async def names(self) -> list[str]:
        return await self.inner.names()

    async def aclose(self) -> None:
        await self.inner.aclose()
