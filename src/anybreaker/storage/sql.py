"""``SQLAlchemyStorage`` and ``SQLiteStorage``: breaker records in a SQL table.

One set of SQLAlchemy Core statements, written as plain functions over a
sync ``Connection``, runs in one of two ways:

- on a sync ``Engine`` in worker threads (``anyio.to_thread.run_sync``):
  the default, under asyncio and trio alike;
- on a user-given ``AsyncEngine`` through ``AsyncConnection.run_sync``:
  asyncio only, because SQLAlchemy's async engine needs an asyncio loop.

Every operation is one statement in autocommit mode, so each
compare-and-set is atomic on its own: ``UPDATE ... WHERE name = :name AND
version = :expected`` when a record is expected, ``INSERT ... ON CONFLICT
(name) DO NOTHING`` when none is (on PostgreSQL both with ``RETURNING``).
Nothing is read first and written later.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import pathlib
import random
import re
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import anyio
import anyio.to_thread

from .._errors import StorageError
from ._base import StorageBase, check_name
from ._protocol import BreakerRecord, check_new_version

try:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql as sa_postgresql
    from sqlalchemy.dialects import sqlite as sa_sqlite
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.sql.compiler import SQLCompiler
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "SQLiteStorage and SQLAlchemyStorage need SQLAlchemy: "
        'pip install "anybreaker[sqlite]" (or "anybreaker[postgres]" for PostgreSQL)'
    ) from error

if TYPE_CHECKING:
    from os import PathLike

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["SQLAlchemyStorage", "SQLiteStorage", "drop_table"]

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
"""The version of the table layout this release writes and reads."""

DEFAULT_TABLE: Final = "anybreaker_breakers"

# PostgreSQL truncates identifiers at 63 bytes; the marker table adds "_meta".
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,57}")
_JOURNAL_MODES: Final = ("wal", "delete", "truncate", "persist")
_DIALECTS: Final = ("sqlite", "postgresql")
# The extra that installs each driver anybreaker knows.
_EXTRAS: Final = {
    "pysqlite": "sqlite",
    "aiosqlite": "aiosqlite",
    "psycopg": "postgres",
    "asyncpg": "asyncpg",
}
# SQLite's INTEGER and PostgreSQL's BIGINT, which hold the version.
_MAX_VERSION: Final = 2**63 - 1

# SQLite's own busy handler waits with growing sleeps (1, 2, 5, 10, ... 100
# ms), so a writer that has waited long polls least often and keeps losing
# the lock to newcomers; and a write that waited long finds the version it
# expected gone, so the breaker must read and try again. Short busy waits,
# each followed by a short random pause (doubling from 0.5 ms up to 5 ms)
# and a fresh attempt, share the lock far more fairly between processes.
_BUSY_TIMEOUT: Final = 0.005
# Without ``lock_timeout`` and without a caller's deadline, an operation
# waits out locks this long (a breaker's default ``storage_timeout``); on
# PostgreSQL each statement waits at most ``_STATEMENT_LOCK_WAIT`` before
# it is tried again.
_LOCK_WAIT: Final = 2.0
_STATEMENT_LOCK_WAIT: Final = 1.0
# PostgreSQL's lock_not_available: a statement waited out the session's lock_timeout.
_LOCK_NOT_AVAILABLE: Final = "55P03"
_FIRST_PAUSE: Final = 0.0005
_MAX_PAUSE: Final = 0.005
# Connections an engine the storage makes keeps, and may add under load: a
# breaker object writes one record at a time, so a few serve many breakers,
# and a fleet of processes stays well within PostgreSQL's 100 clients.
_POOL_SIZE: Final = 4


class _DriverFailure(Exception):
    """An exception the driver raised running a statement that is not one of its errors."""


# What a database or its driver raises when it fails; anything else (a
# CompileError, a TypeError of ours) is a bug and is not dressed up as a
# StorageError. Whatever the driver raises while it runs a statement is
# the driver's failure (``_DriverFailure``).
_FAILURES: Final = (
    _DriverFailure,
    DBAPIError,
    sa.exc.TimeoutError,
    sa.exc.DisconnectionError,
    sqlite3.Error,
    OSError,
)
_CURSOR: Final = "anybreaker_cursor"
_SQLITE_NOTADB: Final = 26
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
# What each operation was doing, for error messages; ``{}``: the breaker's name.
_ACTIONS: Final = {
    "get": "reading {} from",
    "compare_and_set": "writing {} to",
    "compare_and_set_or_get": "writing {} to",
    "delete": "deleting {} from",
    "names": "listing the names in",
    "drop": "dropping the tables of",
}


def _sqlite_url(path: str | PathLike[str]) -> sa.URL:
    return sa.URL.create("sqlite+pysqlite", database=os.fspath(path))


class SQLAlchemyStorage(StorageBase):
    """Keep breaker records in a table of a SQLite or PostgreSQL database.

    ``SQLAlchemyStorage(url_or_engine, *, table="anybreaker_breakers",
    schema=None, staleness=0.1, lock_timeout=None, journal_mode=None)``

    ``url_or_engine`` is a database URL (``sqlite:///path``,
    ``postgresql+psycopg://...``), a SQLAlchemy ``Engine``, or an
    ``AsyncEngine`` (``sqlite+aiosqlite``, ``postgresql+asyncpg``; asyncio
    only). An engine the storage creates from a URL it disposes of on
    ``aclose()``; an engine it is given stays the caller's. While open, the
    storage keeps the connections it has used (never more than the engine's
    pool holds) for its next operations; ``aclose()`` gives them back.

    The storage owns two tables: ``table`` (one row per breaker: ``name``
    primary key, ``version``, ``state`` and ``record``, the record as JSON)
    and ``table + "_meta"`` (the layout's schema version). The first write
    creates them; a read never creates or changes anything (on a database
    without the tables ``get`` finds ``None``, ``names`` ``[]``, and a
    missing SQLite file is not created). Reads and writes refuse, with
    ``StorageError`` and without writing, a file that is not SQLite or a
    table of that name it does not recognise. ``schema`` places them in a
    PostgreSQL schema (which must exist).

    ``staleness``: seconds a breaker may act on a record it read before
    reading it again (0: read on every call). Writes always compare-and-set
    against the database.

    A lock held by another connection is contention, not a failure: an
    operation waits it out (on SQLite in short busy waits retried with
    jitter, on PostgreSQL in statements that each wait up to the session's
    ``lock_timeout``, 1 s by default, and are tried again) until the
    caller's deadline, a breaker's ``storage_timeout``, and only then fails
    with ``StorageError``. ``lock_timeout`` (seconds) bounds that wait
    further; without a caller's deadline an operation waits 2 s unless
    ``lock_timeout`` says otherwise. A given engine's connections keep their
    own wait for each attempt (sqlite3's busy timeout defaults to 5 s;
    PostgreSQL waits without end unless told otherwise).

    SQLite only: ``journal_mode`` ("wal", "delete", "truncate", "persist")
    sets the database's journal mode, on the first write. Without it the
    storage switches to WAL only a database file it creates itself, and
    leaves an existing database's journal mode alone.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | Engine | AsyncEngine,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        staleness: float = 0.1,
        lock_timeout: float | None = None,
        journal_mode: str | None = None,
    ) -> None:
        self.staleness = _seconds("staleness", staleness, allow_zero=True)
        self._lock_timeout = (
            None
            if lock_timeout is None
            else _seconds("lock_timeout", lock_timeout, allow_zero=False)
        )
        _identifier("table", table)
        if schema is not None:
            _identifier("schema", schema)
        if journal_mode is not None:
            if not isinstance(journal_mode, str) or journal_mode.lower() not in (_JOURNAL_MODES):
                raise ValueError(
                    f"journal_mode must be one of {', '.join(_JOURNAL_MODES)} or "
                    f"None, got {journal_mode!r}"
                )
            journal_mode = journal_mode.lower()

        engine, self._async_engine, self._owns_engine = _engine(url_or_engine)
        if self._async_engine is not None:
            url = self._async_engine.url
            dialect = self._async_engine.dialect
        else:
            assert engine is not None
            url = engine.url
            dialect = engine.dialect
        if dialect.name not in _DIALECTS:
            raise ValueError(
                f"SQLAlchemyStorage supports SQLite and PostgreSQL, not {dialect.name!r}"
            )
        self._sqlite = dialect.name == "sqlite"
        if self._sqlite and schema is not None:
            raise ValueError("schema is a PostgreSQL option; SQLite has none")
        if not self._sqlite and journal_mode is not None:
            raise ValueError("journal_mode is a SQLite option")
        database = url.database or ""
        self._memory = self._sqlite and database in ("", ":memory:")
        if self._memory and journal_mode is not None:
            raise ValueError("journal_mode needs a database file, not :memory:")
        # A file path, when the storage reaches a SQLite file by name.
        self._path = (
            database
            if self._sqlite and not self._memory and not database.startswith("file:")
            else None
        )
        if self._path is not None:
            _check_location(self._path)
        self._journal_mode = journal_mode
        self._url = url.render_as_string(hide_password=True)
        located = f"table {schema}.{table}" if schema is not None else f"table {table}"
        if self._memory:
            self._where = f"SQLite database :memory: ({located})"
        elif self._sqlite:
            self._where = f"SQLite database {database} ({located})"
        else:
            self._where = f"PostgreSQL database {self._url} ({located})"
        self._table_name = table
        self._schema = schema
        self._statements = _Statements(table, schema, dialect)

        self._engine = engine
        sync_engine: Any = engine if self._async_engine is None else self._async_engine.sync_engine
        # Every operation runs in autocommit mode: one statement, its own
        # transaction. The set-up opens its own transaction when it needs one.
        # An engine the storage made is in that mode already; a given one is
        # switched per connection, leaving the caller's own use alone.
        ops: Any = self._async_engine if engine is None else engine
        if not self._owns_engine:
            ops = ops.execution_options(isolation_level="AUTOCOMMIT")
        self._ops = ops
        if self._owns_engine and self._sqlite:
            sa.event.listen(sync_engine, "connect", _configure_sqlite_connection)
        elif self._owns_engine:
            milliseconds = max(1, round((self._lock_timeout or _STATEMENT_LOCK_WAIT) * 1000))

            def configure(dbapi_connection: Any, connection_record: Any) -> None:
                _configure_postgresql_connection(dbapi_connection, milliseconds)

            sa.event.listen(sync_engine, "connect", configure)
        # Never run more operations at once than the pool has connections:
        # the others would wait on the pool, holding a worker thread each.
        self._limiter: anyio.CapacityLimiter | None = None
        self._limit = _pool_capacity(sync_engine.pool)

        # Connections kept between operations: taking one from the engine's
        # pool and resetting it on return costs more than the statement.
        self._idle: list[Any] = []
        self._idle_lock = threading.Lock()
        self._generation = 0

        # Writes need the set-up done (tables created or checked, journal
        # mode set); reads only need to know the tables exist and are this
        # library's. Both are learnt once: after that no operation pays for
        # a check.
        self._ready = False
        self._readable = False
        self._identity: tuple[int, int] | None = None
        self._set_up_lock = threading.Lock()
        # A :memory: database is one connection shared by every thread: one
        # thread at a time may use it.
        self._exclusive: AbstractContextManager[Any] = (
            threading.Lock() if self._memory else contextlib.nullcontext()
        )
        self._async_set_up_lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        where = self._table_name if self._schema is None else (f"{self._schema}.{self._table_name}")
        return f"<{type(self).__name__} {self._url} table={where}>"

    # -- the Storage protocol ----------------------------------------------

    async def get(self, name: str) -> BreakerRecord | None:
        """Return the record stored under ``name``, or ``None``."""
        check_name(name)
        return await self._run(self._statements.get, (name,), _nothing)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is ``expected_version``."""
        self._check_write(name, expected_version, record)
        return await self._run(
            self._statements.compare_and_set, (name, expected_version, record), None
        )

    async def compare_and_set_or_get(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> tuple[bool, BreakerRecord | None]:
        """``compare_and_set()``; when it does not store, also what is stored.

        The read follows on the same connection, in the same trip to the
        driver's thread: under contention the loser is no further behind.
        """
        self._check_write(name, expected_version, record)
        return await self._run(
            self._statements.compare_and_set_or_get, (name, expected_version, record), None
        )

    def _check_write(self, name: str, expected_version: int | None, record: BreakerRecord) -> None:
        """Refuse, before any I/O, a write the table could not hold."""
        check_new_version(expected_version, record)
        check_name(name)
        if not -_MAX_VERSION - 1 <= record.version <= _MAX_VERSION:
            what = _ACTIONS["compare_and_set"].format(repr(name))
            raise StorageError(
                f"{what} {self._where} failed: version {record.version}, the one after "
                f"{expected_version}, does not fit the table's version column (a 64-bit "
                "integer). No number of writes reaches a stored version that high: the "
                f"record is corrupt. Delete it to start {name!r} afresh"
            )

    async def delete(self, name: str) -> None:
        """Remove the record stored under ``name``, if any."""
        check_name(name)
        await self._run(self._statements.delete, (name,), _nothing)

    async def names(self) -> list[str]:
        """Return the names that have a record, sorted."""
        return await self._run(self._statements.names, (), list)

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        entered = await super().__aenter__()
        if self._async_engine is not None:
            _require_asyncio()
        return entered

    async def _close(self) -> None:
        idle = self._forget_connections()
        with anyio.CancelScope(shield=True):
            if self._async_engine is not None:
                for connection in idle:
                    await connection.close()
                if self._owns_engine:
                    await self._async_engine.dispose()
            else:
                await anyio.to_thread.run_sync(self._close_sync, idle)

    def _close_sync(self, idle: list[Connection]) -> None:
        for connection in idle:
            connection.close()
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()

    # -- running statements ------------------------------------------------

    async def _run(
        self,
        operation: Callable[..., T],
        args: tuple[Any, ...],
        absent: Callable[[], T] | None,
    ) -> T:
        """Run ``operation``: a write when ``absent`` is ``None``, else a read.

        A write sets the tables up first if need be. A read of a database
        that has no tables yet creates nothing (not even the SQLite file) and
        returns ``absent()``.
        """
        self._check_open()
        if self._limiter is None and self._limit is not None:
            self._limiter = anyio.CapacityLimiter(self._limit)
        deadline = self._lock_deadline()
        if self._async_engine is not None:
            _require_asyncio()
            if self._limiter is None:
                return await self._run_async(operation, args, absent, deadline)
            async with self._limiter:
                return await self._run_async(operation, args, absent, deadline)
        # A timed-out caller (the breaker's ``storage_timeout``) is not held
        # up by a worker thread that is still waiting on a lock; the thread
        # ends on its own by ``deadline``.
        return await anyio.to_thread.run_sync(
            self._run_in_thread,
            operation,
            args,
            absent,
            deadline,
            abandon_on_cancel=True,
            limiter=self._limiter,
        )

    def _lock_deadline(self) -> float:
        """When (``time.monotonic()``) the operation starting now stops waiting out locks.

        Waiting for a lock held by another connection is contention, not a
        failure: it goes on for ``lock_timeout`` if set, and never beyond
        the caller's deadline (a breaker's ``storage_timeout``); with
        neither, for ``_LOCK_WAIT`` seconds.
        """
        remaining = anyio.current_effective_deadline() - anyio.current_time()
        limit = self._lock_timeout
        if limit is None:
            limit = _LOCK_WAIT if remaining == math.inf else remaining
        return time.monotonic() + max(0.0, min(limit, remaining))

    def _run_in_thread(
        self,
        operation: Callable[..., T],
        args: tuple[Any, ...],
        absent: Callable[[], T] | None,
        deadline: float,
    ) -> T:
        attempt = 0
        while True:
            try:
                self._check_file()
                if absent is None:
                    if not self._ready:
                        with self._set_up_lock:
                            if not self._ready:
                                self._set_up_sync()
                elif not self._readable and not self._find_tables_sync():
                    return absent()
                return self._on_kept(operation, *args)
            except _FAILURES as error:
                if _disconnected(error):
                    # The server went away: the other kept connections are
                    # as dead as this one.
                    for idle in self._forget_connections():
                        with contextlib.suppress(*_FAILURES):
                            idle.invalidate()
                pause = self._pause(error, attempt, deadline)
                if pause is None:
                    raise self._storage_error(error, operation, args) from _driver_error(error)
            time.sleep(pause)
            attempt += 1

    def _take(self) -> tuple[Any, int]:
        """A connection for one operation: an idle one kept from before, or a new one."""
        with self._idle_lock:
            generation = self._generation
            if self._idle:
                return self._idle.pop(), generation
        return self._ops.connect(), generation

    def _on_kept(self, work: Callable[..., T], *args: Any, keep: bool = True) -> T:
        """Run ``work(connection, *args)`` on a kept connection (or a new one).

        The connection is kept again after, unless it failed or ``keep`` is
        false: then it goes back to the engine's pool, which resets it (the
        set-up and the table check change its isolation level). They take a
        kept one all the same: the kept connections may be every connection
        the pool hands out, and a new one would then wait for the pool's
        timeout.
        """
        with self._exclusive:
            connection, generation = self._take()
            healthy = False
            try:
                result = work(connection, *args)
                healthy = True
                return result
            except StorageError:
                healthy = True  # A record it cannot read: the connection is fine.
                raise
            except _FAILURES as error:
                healthy = _is_locked(error)
                raise
            finally:
                self._give_back(connection, generation, healthy, keep)

    def _give_back(
        self, connection: Connection, generation: int, healthy: bool, keep: bool = True
    ) -> None:
        with self._idle_lock:
            if keep and healthy and generation == self._generation and not self.closed:
                self._idle.append(connection)
                return
        if not healthy:
            # Resetting a connection that just failed may fail in turn and
            # hide the first error: throw it away instead.
            connection.invalidate()
        with contextlib.suppress(*_FAILURES):
            connection.close()

    def _forget_connections(self) -> list[Any]:
        """Stop reusing the connections kept so far; return the idle ones to close."""
        with self._idle_lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        return idle

    async def _run_async(
        self,
        operation: Callable[..., T],
        args: tuple[Any, ...],
        absent: Callable[[], T] | None,
        deadline: float,
    ) -> T:
        assert self._async_engine is not None
        attempt = 0
        while True:
            try:
                if absent is None:
                    if not self._ready:
                        await self._set_up_async()
                elif not self._readable and not await self._find_tables_async():
                    return absent()
                return await self._on_kept_async(operation, *args)
            except _FAILURES as error:
                if _disconnected(error):
                    with anyio.CancelScope(shield=True):
                        for idle in self._forget_connections():
                            with contextlib.suppress(*_FAILURES):
                                await idle.invalidate()
                pause = self._pause(error, attempt, deadline)
                if pause is None:
                    raise self._storage_error(error, operation, args) from _driver_error(error)
            await anyio.sleep(pause)
            attempt += 1

    async def _on_kept_async(self, work: Callable[..., T], *args: Any, keep: bool = True) -> T:
        """``_on_kept()`` for an async engine."""
        with self._idle_lock:
            generation = self._generation
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = await self._ops.connect()
        healthy = False
        try:
            result: T = await connection.run_sync(work, *args)
            healthy = True
            return result
        except StorageError:
            healthy = True  # A record it cannot read: the connection is fine.
            raise
        except _FAILURES as error:
            healthy = _is_locked(error)
            raise
        finally:
            with self._idle_lock:
                kept = keep and healthy and generation == self._generation and not self.closed
                if kept:
                    self._idle.append(connection)
            if not kept:
                with anyio.CancelScope(shield=True):
                    if not healthy:
                        await connection.invalidate()
                    with contextlib.suppress(*_FAILURES):
                        await connection.close()

    def _pause(self, error: BaseException, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before trying again after ``error``; ``None``: give up."""
        if _disconnected(error):
            # A dead connection was thrown away (a restarted server): one
            # fresh connection may well succeed.
            return 0.0 if attempt == 0 else None
        if not _is_locked(error):
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        return min(
            remaining, random.uniform(0, min(_FIRST_PAUSE * 2 ** min(attempt, 8), _MAX_PAUSE))
        )

    def _storage_error(
        self, error: BaseException, operation: Callable[..., Any], args: tuple[Any, ...]
    ) -> StorageError:
        """One line: what failed, on which database, and the driver's message, once."""
        driver = _driver_error(error)
        kind = type(driver)
        message = str(driver).strip().partition("\n")[0] or "no message"
        what = _ACTIONS[operation.__name__].format(*(repr(arg) for arg in args[:1]))
        if _is_locked(error):
            bound = (
                "the time the caller allowed"
                if self._lock_timeout is None
                else f"lock_timeout={self._lock_timeout} s"
            )
            return StorageError(
                f"{what} {self._where} failed: the database stayed locked by another "
                f"connection for longer than {bound} ({message})"
            )
        if _is_not_a_database(error):
            return StorageError(
                f"{what} {self._where} failed: the file is not a SQLite database; "
                f"left untouched ({message})"
            )
        return StorageError(
            f"{what} {self._where} failed: {message} ({kind.__module__}.{kind.__qualname__})"
        )

    # -- set-up: the library's own tables ----------------------------------

    def _check_file(self) -> None:
        """Start afresh when the database file was replaced or removed under us."""
        if self._path is None or not self._owns_engine:
            return
        identity = _file_identity(self._path)
        if (self._ready or self._readable) and identity != self._identity:
            with self._set_up_lock:
                if (self._ready or self._readable) and identity != self._identity:
                    self._ready = self._readable = False
                    # Kept and pooled connections still point at the old file.
                    self._release_file()

    def _release_file(self) -> None:
        """Close every connection to the file, so the next one opens whatever is there then."""
        for connection in self._forget_connections():
            with contextlib.suppress(*_FAILURES):
                connection.close()
        assert self._engine is not None
        self._engine.dispose()

    def _set_up_sync(self) -> None:
        created = self._sqlite and (self._path is None or _is_new_file(self._path))
        if self._path is not None:
            _check_sqlite_header(self._path)
        try:
            self._on_kept(self._set_up, created, keep=False)
        except BaseException:
            if self._path is not None and self._engine is not None and self._owns_engine:
                # Do not keep a connection to a file that was refused: once
                # it is replaced, the next attempt must open the new one.
                self._release_file()
            raise
        self._identity = _file_identity(self._path) if self._path is not None else None
        self._ready = self._readable = True

    def _find_tables_sync(self) -> bool:
        """Whether the tables exist (refusing ones that are not this library's); writes nothing."""
        if self._path is not None:
            if _is_new_file(self._path):
                # Connecting would create the file.
                return False
            _check_sqlite_header(self._path)
        identity = _file_identity(self._path) if self._path is not None else None
        try:
            version = self._on_kept(self._statements_version, keep=False)
        except BaseException:
            if self._path is not None and self._engine is not None and self._owns_engine:
                self._release_file()
            raise
        if version is not None:
            self._identity = identity
        return self._found(version)

    async def _find_tables_async(self) -> bool:
        if self._path is not None:
            if _is_new_file(self._path):
                return False
            _check_sqlite_header(self._path)
        return self._found(await self._on_kept_async(self._statements_version, keep=False))

    def _found(self, version: int | None) -> bool:
        """Whether a read found tables (at ``version``).

        Tables at the current version, which set-up would leave as they are,
        are ready for writes: the first write does not check them again.
        """
        if version is not None:
            self._readable = True
            if version == SCHEMA_VERSION and not (self._sqlite and self._journal_mode):
                self._ready = True
        return version is not None

    def _statements_version(self, connection: Connection) -> int | None:
        """The tables' schema version, ``None`` without tables; reads only."""
        # One transaction, so that the checks see the tables all before or
        # all after another process creates them.
        if self._sqlite:
            connection.exec_driver_sql("BEGIN")
            try:
                version = self._statements.check(connection)
            finally:
                connection.exec_driver_sql("ROLLBACK")
        else:
            connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin() as transaction:
                version = self._statements.check(connection)
                transaction.rollback()
        return version

    async def _set_up_async(self) -> None:
        assert self._async_engine is not None
        if self._async_set_up_lock is None:
            self._async_set_up_lock = anyio.Lock()
        async with self._async_set_up_lock:
            if self._ready:
                return
            created = self._sqlite and (self._path is None or _is_new_file(self._path))
            if self._path is not None:
                _check_sqlite_header(self._path)
            await self._on_kept_async(self._set_up, created, keep=False)
            self._ready = self._readable = True

    def _set_up(self, connection: Connection, created: bool) -> None:
        """Create the tables, or check that the existing ones are this library's."""
        if self._sqlite:
            # Reads the file's header: a file that is not SQLite fails here,
            # before anything is written.
            connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
            wanted = self._journal_mode or ("wal" if created and not self._memory else None)
            if wanted is not None:
                mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
                if str(mode).lower() != wanted:
                    connection.exec_driver_sql(f"PRAGMA journal_mode={wanted}")
                if self._owns_engine:
                    # This pooled connection was configured before the switch.
                    _configure_sqlite_connection(connection.connection.dbapi_connection, None)
            # Taking the write lock first: two processes starting on one new
            # file create the tables once, and neither sees half of them.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                self._statements.create_or_check(connection)
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")
        else:
            # The DDL and its marker row go in together, or not at all.
            connection.execution_options(isolation_level="READ COMMITTED")
            with connection.begin():
                # Concurrent CREATE TABLE IF NOT EXISTS can collide in the
                # catalog; a transaction-scoped advisory lock serialises them.
                connection.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("key")))),
                    {"key": f"anybreaker:{self._schema}.{self._table_name}"},
                )
                self._statements.create_or_check(connection)

    async def _drop(self) -> None:
        """Drop the storage's tables; the next write creates them again."""
        # Without tables there is nothing to drop, and nothing to create first.
        await self._run(self._statements.drop, (), _nothing)
        self._ready = self._readable = False


class SQLiteStorage(SQLAlchemyStorage):
    """Keep breaker records in a SQLite database file, shared by the processes of a host.

    ``SQLiteStorage(path, *, table="anybreaker_breakers", staleness=0.1,
    lock_timeout=None, journal_mode=None)``: ``SQLAlchemyStorage`` on
    ``sqlite:///path`` (``":memory:"`` for a database private to this
    storage). A file the storage creates is set to WAL, which lets readers
    and one writer work at once; a file that already exists keeps its
    journal mode unless ``journal_mode`` asks otherwise.

    A path whose directory does not exist, or a file that does not exist in
    a directory this process cannot write, raises ``ValueError`` here: no
    write could ever succeed there.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        table: str = DEFAULT_TABLE,
        staleness: float = 0.1,
        lock_timeout: float | None = None,
        journal_mode: str | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or PathLike, got {path!r}")
        super().__init__(
            _sqlite_url(path),
            table=table,
            staleness=staleness,
            lock_timeout=lock_timeout,
            journal_mode=journal_mode,
        )


async def drop_table(storage: SQLAlchemyStorage) -> None:
    """Drop ``storage``'s tables, and with them every breaker record it holds."""
    if not isinstance(storage, SQLAlchemyStorage):
        raise TypeError(f"drop_table needs a SQLAlchemyStorage, got {storage!r}")
    await storage._drop()


# -- the statements ---------------------------------------------------------


class _Compiled:
    """A Core statement compiled once for a dialect, run on the driver's own cursor.

    SQLAlchemy's execution layer (cache lookup, parameter processing, result
    objects) costs several times what SQLite takes to run these one-row
    statements; they need none of it. The SQL is still SQLAlchemy's,
    compiled for the dialect, and driver errors are wrapped as SQLAlchemy
    wraps them, with a dead connection invalidated.
    """

    __slots__ = ("order", "sql")

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        # The driver's parameter style: a tuple in bind order, or a mapping.
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )

    def run(self, connection: Connection, values: dict[str, Any], fetch: str | None = None) -> Any:
        """Execute; return the row count, or ``fetch`` ("one", "all") rows."""
        parameters: Any = values if self.order is None else tuple(values[n] for n in self.order)
        driver_connection: Any = connection.connection.dbapi_connection
        dialect = connection.dialect
        # One cursor per connection, kept: with an async driver making and
        # closing one are round trips to its thread or server.
        kept = connection.info.get(_CURSOR)
        if kept is not None and kept[0] is driver_connection:
            cursor = kept[1]
        else:
            cursor = driver_connection.cursor()
            connection.info[_CURSOR] = (driver_connection, cursor)
        try:
            cursor.execute(self.sql, parameters)
            if fetch == "one":
                return cursor.fetchone()
            if fetch == "all":
                return cursor.fetchall()
            return cursor.rowcount
        except Exception as error:
            connection.info.pop(_CURSOR, None)
            if not isinstance(error, dialect.loaded_dbapi.Error):
                # Not the database's answer: the connection is thrown away after.
                raise _DriverFailure(f"{type(error).__name__}: {error}") from error
            disconnected = dialect.is_disconnect(error, driver_connection, cursor)
            if disconnected:
                connection.invalidate(error)
            else:
                with contextlib.suppress(Exception):
                    cursor.close()
            raise DBAPIError.instance(
                self.sql,
                parameters,
                error,
                dialect.loaded_dbapi.Error,
                connection_invalidated=disconnected,
                dialect=dialect,
            ) from error


class _Statements:
    """The SQL of one storage: plain functions over a sync ``Connection``."""

    def __init__(self, table: str, schema: str | None, dialect: sa.Dialect) -> None:
        metadata = sa.MetaData(schema=schema)
        self.table = sa.Table(
            table,
            metadata,
            sa.Column("name", sa.String(), primary_key=True),
            sa.Column("version", sa.BigInteger(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("record", sa.Text(), nullable=False),
        )
        self.meta = sa.Table(
            f"{table}_meta",
            metadata,
            sa.Column("key", sa.String(), primary_key=True),
            sa.Column("value", sa.String(), nullable=False),
        )
        self.metadata = metadata
        self.schema = schema
        breakers = self.table
        postgresql = dialect.name == "postgresql"
        update: Any = (
            sa.update(breakers)
            .where(breakers.c.name == sa.bindparam("b_name"))
            .where(breakers.c.version == sa.bindparam("b_expected"))
            .values(
                version=sa.bindparam("b_version"),
                state=sa.bindparam("b_state"),
                record=sa.bindparam("b_record"),
            )
        )
        insert = sa_postgresql.insert if postgresql else sa_sqlite.insert
        create: Any = (
            insert(breakers)
            .values(
                name=sa.bindparam("b_name"),
                version=sa.bindparam("b_version"),
                state=sa.bindparam("b_state"),
                record=sa.bindparam("b_record"),
            )
            .on_conflict_do_nothing(index_elements=["name"])
        )
        # PostgreSQL drivers do not all report a row count for INSERT ... ON
        # CONFLICT DO NOTHING; RETURNING says plainly whether a row was
        # written. sqlite3's row count is exact, and SQLite before 3.35 has
        # no RETURNING.
        self._returning = postgresql
        if postgresql:
            update = update.returning(breakers.c.version)
            create = create.returning(breakers.c.version)
        self._get = _Compiled(
            sa.select(breakers.c.version, breakers.c.record).where(
                breakers.c.name == sa.bindparam("b_name")
            ),
            dialect,
        )
        self._update = _Compiled(update, dialect)
        self._insert = _Compiled(create, dialect)
        self._delete = _Compiled(
            sa.delete(breakers).where(breakers.c.name == sa.bindparam("b_name")), dialect
        )
        self._names = _Compiled(sa.select(breakers.c.name).order_by(breakers.c.name), dialect)

    def get(self, connection: Connection, name: str) -> BreakerRecord | None:
        row = self._get.run(connection, {"b_name": name}, "one")
        if row is None:
            return None
        version, text = row
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            # The column is what compare-and-set checks: it is the truth.
            data["version"] = version
            return BreakerRecord.from_dict(data)
        except ValueError as error:
            raise StorageError(
                f"the record stored for {name!r} is not one this release can read: {error}"
            ) from error

    def compare_and_set(
        self,
        connection: Connection,
        name: str,
        expected_version: int | None,
        record: BreakerRecord,
    ) -> bool:
        values = {
            "b_name": name,
            "b_version": record.version,
            "b_state": record.state.value,
            "b_record": json.dumps(record.to_dict(), separators=(",", ":")),
        }
        if expected_version is None:
            statement = self._insert
        else:
            statement = self._update
            values["b_expected"] = expected_version
        if self._returning:
            return statement.run(connection, values, "one") is not None
        return bool(statement.run(connection, values) == 1)

    def compare_and_set_or_get(
        self,
        connection: Connection,
        name: str,
        expected_version: int | None,
        record: BreakerRecord,
    ) -> tuple[bool, BreakerRecord | None]:
        if self.compare_and_set(connection, name, expected_version, record):
            return True, None
        return False, self.get(connection, name)

    def delete(self, connection: Connection, name: str) -> None:
        self._delete.run(connection, {"b_name": name})

    def names(self, connection: Connection) -> list[str]:
        return [name for (name,) in self._names.run(connection, {}, "all")]

    def drop(self, connection: Connection) -> None:
        self.metadata.drop_all(connection, checkfirst=True)
        connection.commit()

    def create_or_check(self, connection: Connection) -> None:
        """Create both tables, or refuse tables that are not this library's."""
        version = self.check(connection)
        if version is None:
            self.metadata.create_all(connection, checkfirst=False)
            connection.execute(
                sa.insert(self.meta).values(key="schema_version", value=str(SCHEMA_VERSION))
            )
            return
        for upgrade in _UPGRADES[version - 1 :]:
            upgrade(self, connection)
        if version < SCHEMA_VERSION:
            connection.execute(
                sa.update(self.meta)
                .where(self.meta.c.key == "schema_version")
                .values(value=str(SCHEMA_VERSION))
            )

    def check(self, connection: Connection) -> int | None:
        """Return the tables' schema version (``None``: no tables); refuse foreign ones.

        Reads only: it writes nothing, whatever it finds.
        """
        inspector = sa.inspect(connection)
        if self.schema is not None and self.schema not in inspector.get_schema_names():
            raise StorageError(f"PostgreSQL schema {self.schema!r} does not exist; create it first")
        has_table = inspector.has_table(self.table.name, schema=self.schema)
        has_meta = inspector.has_table(self.meta.name, schema=self.schema)
        where = self.table.name if self.schema is None else f"{self.schema}.{self.table.name}"
        if not has_table and not has_meta:
            return None
        if has_table and not has_meta:
            raise StorageError(
                f"a table {where!r} exists that anybreaker did not create "
                f"(it has no {self.meta.name!r} table); left untouched. "
                "Choose another table name with table=..."
            )
        if not self._has_columns(inspector, self.meta.name, _META_COLUMNS):
            raise StorageError(
                f"table {self.meta.name!r} exists but is not anybreaker's; left "
                "untouched. Choose another table name with table=..."
            )
        version_text = connection.execute(
            sa.select(self.meta.c.value).where(self.meta.c.key == "schema_version")
        ).scalar()
        try:
            version = int(version_text) if version_text is not None else None
        except ValueError:
            version = None
        if version is None:
            raise StorageError(
                f"table {self.meta.name!r} holds no valid schema_version; left untouched"
            )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"table {where!r} has schema version {version}, written by a newer "
                f"anybreaker; this one reads up to version {SCHEMA_VERSION}. Upgrade "
                "anybreaker"
            )
        if version not in _LAYOUTS:
            raise StorageError(
                f"table {where!r} has schema version {version}, which anybreaker never "
                "wrote; left untouched"
            )
        if not has_table or not self._has_columns(inspector, self.table.name, _LAYOUTS[version]):
            raise StorageError(
                f"table {where!r} does not have the layout of anybreaker schema "
                f"version {version}; left untouched"
            )
        return version

    def _has_columns(self, inspector: Any, table: str, expected: frozenset[str]) -> bool:
        try:
            found = {column["name"] for column in inspector.get_columns(table, schema=self.schema)}
        except sa.exc.NoSuchTableError:
            return False
        return found == expected


# The columns of the breakers table in each schema version this release can
# read (and upgrade from), and the in-place upgrades: ``_UPGRADES[n - 1]``
# turns version n into n + 1 inside the set-up transaction, so every process
# sees the table either before or after. Version 1 is the first. Only a write
# upgrades (a read writes nothing), so this release's reads must work on every
# layout listed here.
_LAYOUTS: Final[dict[int, frozenset[str]]] = {
    1: frozenset({"name", "version", "state", "record"}),
}
_UPGRADES: list[Callable[[_Statements, Connection], None]] = []
_META_COLUMNS: Final = frozenset({"key", "value"})


# -- helpers ------------------------------------------------------------------


def _engine(
    url_or_engine: object,
) -> tuple[Engine | None, AsyncEngine | None, bool]:
    """Return (sync engine, async engine, whether the storage created it)."""
    if isinstance(url_or_engine, Engine):
        return url_or_engine, None, False
    async_engine_type = _async_engine_type()
    if async_engine_type is not None and isinstance(url_or_engine, async_engine_type):
        return None, url_or_engine, False
    if not isinstance(url_or_engine, str | sa.URL):
        raise TypeError(
            "url_or_engine must be a database URL, a SQLAlchemy Engine or an "
            f"AsyncEngine, got {url_or_engine!r}"
        )
    try:
        url = sa.make_url(url_or_engine)
    except sa.exc.ArgumentError as error:
        raise ValueError(f"not a database URL: {url_or_engine!r}") from error
    backend, plus, driver = url.drivername.partition("+")
    if backend == "postgres":
        # The name Heroku and libpq-style tools use; SQLAlchemy knows only
        # "postgresql".
        backend = "postgresql"
        url = url.set(drivername=f"{backend}{plus}{driver}")
    if backend not in _DIALECTS:
        raise ValueError(f"SQLAlchemyStorage supports SQLite and PostgreSQL, not {backend!r}")
    if not driver and backend == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; the extra
        # anybreaker[postgres] installs psycopg 3.
        url = url.set(drivername="postgresql+psycopg")
    try:
        dialect_class = url.get_dialect()
    except sa.exc.NoSuchModuleError as error:
        raise ImportError(_no_driver(url.drivername, error)) from error
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}
    if url.get_backend_name() == "sqlite" and (url.database or "") in ("", ":memory:"):
        # One shared connection: each thread of SingletonThreadPool would
        # see a different, empty database.
        options["poolclass"] = sa.pool.StaticPool
        options["connect_args"] = {"check_same_thread": False}
    else:
        options["pool_size"] = _POOL_SIZE
        options["max_overflow"] = _POOL_SIZE
    try:
        if getattr(dialect_class, "is_async", False):
            from sqlalchemy.ext.asyncio import create_async_engine

            return None, create_async_engine(url, **options), True
        return sa.create_engine(url, **options), None, True
    except ImportError as error:
        raise ImportError(_no_driver(url.drivername, error)) from error


def _no_driver(drivername: str, error: BaseException) -> str:
    """Say which driver is missing for ``drivername``, and how to install it."""
    backend, _, driver = drivername.partition("+")
    extra = _EXTRAS.get(driver or ("pysqlite" if backend == "sqlite" else "psycopg"))
    if extra is not None:
        return (
            f"the driver for {drivername!r} is not installed: "
            f'pip install "anybreaker[{extra}]" ({error})'
        )
    if backend == "sqlite":
        ours = 'pip install "anybreaker[sqlite]" (sqlite3) or "anybreaker[aiosqlite]"'
    else:
        ours = 'pip install "anybreaker[postgres]" (psycopg) or "anybreaker[asyncpg]"'
    if isinstance(error, sa.exc.NoSuchModuleError):
        missing = f"SQLAlchemy knows no {backend} driver named {driver!r}"
    else:
        missing = f"the driver for {drivername!r} is not installed"
    return (
        f"{missing}: install the package that provides it, or use a driver "
        f"anybreaker's extras install: {ours} ({error})"
    )


def _async_engine_type() -> type[AsyncEngine] | None:
    """SQLAlchemy's ``AsyncEngine``, if anything imported it; else no object is one.

    Importing it (and with it SQLAlchemy's ORM) only to find that a URL is
    not an engine would cost a tenth of a second, in the event loop when
    the storage is made there.
    """
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    engine_type: type[AsyncEngine] | None = getattr(module, "AsyncEngine", None)
    return engine_type


def _configure_sqlite_connection(dbapi_connection: Any, record: Any) -> None:
    """Per-connection settings for engines the storage creates (none persist)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")
        try:
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()
        except sqlite3.Error:
            return  # Not a database: the operation itself reports it.
        if mode is not None and str(mode[0]).lower() == "wal":
            # In WAL mode NORMAL cannot corrupt the database; it only risks
            # the last commits on power loss, and spares an fsync per write.
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _configure_postgresql_connection(dbapi_connection: Any, lock_timeout_ms: int) -> None:
    """Bound how long a statement waits for a lock (a table locked by a migration, say)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"SET SESSION lock_timeout = {int(lock_timeout_ms)}")
    finally:
        cursor.close()
    # A SET inside a transaction would end with it: keep it.
    dbapi_connection.commit()


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            import sniffio

            runtime = sniffio.current_async_library()
        except Exception:
            runtime = "another runtime"
        raise RuntimeError(
            "SQLAlchemyStorage was given an AsyncEngine, which needs asyncio, but "
            f"this code runs under {runtime}. Pass a database URL or a sync Engine "
            "instead: the storage then runs its statements in worker threads, "
            "under any runtime."
        ) from None


def _pool_capacity(pool: sa.pool.Pool) -> int | None:
    """How many connections ``pool`` hands out at most; ``None``: no bound known."""
    size = getattr(pool, "size", None)
    overflow = getattr(pool, "_max_overflow", None)
    if isinstance(pool, sa.pool.StaticPool):
        return 1
    if callable(size) and isinstance(overflow, int) and overflow >= 0:
        return max(1, int(size()) + overflow)
    return None


def _driver_error(error: BaseException) -> BaseException:
    """The driver's own exception behind SQLAlchemy's wrapper (whose text repeats it)."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        return error.orig
    if isinstance(error, _DriverFailure) and error.__cause__ is not None:
        return error.__cause__
    return error


def _nothing() -> None:
    """What a read of a record or a deletion finds when the tables do not exist yet."""


def _disconnected(error: BaseException) -> bool:
    return isinstance(error, DBAPIError) and error.connection_invalidated


def _is_locked(error: BaseException) -> bool:
    """Whether ``error`` says a lock held by another connection was not released in time."""
    cause = error.orig if isinstance(error, DBAPIError) else error
    if not isinstance(cause, sqlite3.Error):
        return getattr(cause, "sqlstate", None) == _LOCK_NOT_AVAILABLE
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    message = str(cause).lower()
    return "locked" in message or "busy" in message


def _is_new_file(path: str) -> bool:
    """Whether ``path`` holds no database yet (SQLite treats an empty file as new)."""
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:
        return True


def _check_sqlite_header(path: str) -> None:
    """Refuse a file that does not start as a SQLite database does, before SQLite opens it.

    SQLite itself refuses such a file, except when a ``-wal`` file is left
    next to it (by a database that stood at this path before): it would
    then read, and could checkpoint, the old database's pages over it.

    The header is read through SQLite, never with ``open()``: closing any
    descriptor of the file drops every POSIX lock this process holds on it,
    those of SQLite's connections included, and another process would then
    think itself the file's last user and delete the WAL under them. SQLite
    keeps a descriptor it closes open while the process holds locks on the
    file. ``immutable=1`` reads the main file alone (never the ``-wal``) and
    takes no lock; ``mode=ro`` creates nothing.

    What is not a regular file (a directory, a FIFO that would block the
    reader) is refused before any driver tries to open it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file", path)
    uri = f"{pathlib.Path(path).absolute().as_uri()}?mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error:
        return  # No file (or none SQLite can open): the operation itself reports it.
    try:
        # Reads the header of page 1 and nothing else.
        connection.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as error:
        if _is_not_a_database(error):
            raise
    finally:
        connection.close()


def _is_not_a_database(error: BaseException) -> bool:
    cause = error.orig if isinstance(error, DBAPIError) else error
    # An error made in Python (not by SQLite) has no error code.
    code = getattr(cause, "sqlite_errorcode", None) if isinstance(cause, sqlite3.Error) else None
    return code == _SQLITE_NOTADB


def _check_location(path: str) -> None:
    """Refuse a SQLite path where no database can ever be read or written.

    Found at the first write, it would look like an outage, and the breaker
    would quietly keep its state in the process alone. Whatever stands at
    the path itself is the operations' to judge, as a file that is not
    SQLite is: an existing file is accepted even where it cannot be written
    (a read-only file, or one in a read-only directory), since reading it
    may be all that is wanted.
    """
    directory = os.path.dirname(path) or os.curdir
    problem = None
    if not os.path.exists(directory):
        problem = f"its directory {directory!r} does not exist"
    elif not os.path.isdir(directory):
        problem = f"{directory!r} is not a directory"
    elif not os.path.exists(path) and not os.access(directory, os.W_OK | os.X_OK):
        problem = f"the file does not exist, and its directory {directory!r} is not writable"
    if problem is not None:
        raise ValueError(f"no SQLite database can be kept at {path!r}: {problem}")


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _identifier(name: str, value: object) -> None:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{name} must be an identifier of letters, digits and underscores, "
            f"starting with a letter or underscore, at most 58 characters; got {value!r}"
        )


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite seconds {bound}, got {value!r}")
    return float(value)
