"""SQLAlchemyStorage and SQLiteStorage as storages: tables, files, set-up, lifecycle."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from anybreaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    StorageError,
    storage_from_url,
)
from anybreaker.testing import FakeClock

from ._storages import POSTGRES_HOST, POSTGRES_PORT, postgres_url, require_server, unique_name

sql = pytest.importorskip(
    "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
)
sa = pytest.importorskip("sqlalchemy")

pytestmark = pytest.mark.anyio

TABLE = "anybreaker_breakers"


def record(version: int, state: CircuitState = CircuitState.CLOSED) -> BreakerRecord:
    """A record with ``version`` that says something recognisable."""
    return BreakerRecord(state=state, version=version, changed_at=float(version))


def journal_mode(path: Path) -> str:
    """The journal mode stored in the database file at ``path``."""
    with sqlite3.connect(path) as connection:
        mode: str = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    return mode


def tables(path: Path) -> set[str]:
    """The names of the tables in the database file at ``path``."""
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}
    finally:
        connection.close()


def run_sql(path: Path, *statements: str) -> None:
    """Run ``statements`` on the database file at ``path`` and commit."""
    connection = sqlite3.connect(path)
    try:
        for statement in statements:
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` with its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def open_descriptors(path: Path) -> int:
    """How many file descriptors of this process point at ``path``."""
    count = 0
    for entry in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(entry) == str(path):
                count += 1
        except OSError:
            pass
    return count


# -- the Storage protocol on a file -----------------------------------------


async def test_records_survive_reopening_the_file(tmp_path: Path) -> None:
    """A record written through one storage is read back by a new one on the same file."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.compare_and_set("model-api", None, record(1, CircuitState.OPEN))
    async with sql.SQLiteStorage(str(path)) as storage:
        assert await storage.get("model-api") == record(1, CircuitState.OPEN)
        assert await storage.names() == ["model-api"]


async def test_compare_and_set_checks_the_stored_version(tmp_path: Path) -> None:
    """compare_and_set stores only over the expected version, and never over a missing row."""
    async with sql.SQLiteStorage(tmp_path / "breakers.db") as storage:
        assert not await storage.compare_and_set("a", 1, record(2))
        assert await storage.compare_and_set("a", None, record(1))
        assert not await storage.compare_and_set("a", None, record(1))
        assert not await storage.compare_and_set("a", 2, record(3))
        assert await storage.compare_and_set("a", 1, record(2))
        assert await storage.get("a") == record(2)
        with pytest.raises(ValueError, match=r"record\.version must be 3"):
            await storage.compare_and_set("a", 2, record(5))


async def test_one_of_many_racing_writers_wins(tmp_path: Path) -> None:
    """Writers on several storages racing from one version: exactly one compare-and-set wins."""
    path = tmp_path / "breakers.db"
    storages = [sql.SQLiteStorage(path) for _ in range(4)]
    try:
        assert await storages[0].compare_and_set("a", None, record(1))
        wins: list[int] = []

        async def write(index: int) -> None:
            if await storages[index % 4].compare_and_set("a", 1, record(2)):
                wins.append(index)

        async with anyio.create_task_group() as group:
            for index in range(16):
                group.start_soon(write, index)
        assert len(wins) == 1
        assert (await storages[1].get("a")) == record(2)
    finally:
        for storage in storages:
            await storage.aclose()


async def test_names_and_delete(tmp_path: Path) -> None:
    """names() lists exactly the stored names; delete removes one and ignores a missing one."""
    async with sql.SQLiteStorage(tmp_path / "breakers.db") as storage:
        for name in ("b", "a", "c d"):
            assert await storage.compare_and_set(name, None, record(1))
        await storage.delete("b")
        await storage.delete("never-stored")
        assert await storage.names() == ["a", "c d"]
        assert await storage.get("b") is None


async def test_memory_database_is_shared_by_every_worker_thread() -> None:
    """SQLiteStorage(':memory:') is one database, whatever thread runs the statement."""
    async with sql.SQLiteStorage(":memory:") as storage:

        async def write(name: str) -> None:
            assert await storage.compare_and_set(name, None, record(1))

        async with anyio.create_task_group() as group:
            for index in range(20):
                group.start_soon(write, f"breaker-{index:02}")
        assert await storage.names() == [f"breaker-{index:02}" for index in range(20)]


async def test_a_breaker_reopened_on_the_file_is_still_open(tmp_path: Path) -> None:
    """A breaker that opened is open for a new breaker and storage on the same file."""
    clock = FakeClock()
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as storage:
        breaker = CircuitBreaker("api", storage=storage, clock=clock, failure_threshold=1)
        await breaker.record_failure(RuntimeError("down"))
        assert breaker.state is CircuitState.OPEN
    clock.advance(10)
    async with sql.SQLiteStorage(path) as storage:
        again = CircuitBreaker("api", storage=storage, clock=clock, timeout=30)
        assert await again.get_state() is CircuitState.OPEN
        assert again.get_time_until_retry() == pytest.approx(20)


async def test_an_opening_is_seen_through_another_storage_within_staleness(
    tmp_path: Path,
) -> None:
    """Another storage on the file sees an opening once its 0.1 s staleness has passed."""
    clock = FakeClock()
    path = tmp_path / "breakers.db"
    ran: list[str] = []

    async def dependency() -> None:
        ran.append("ran")

    async with sql.SQLiteStorage(path) as first, sql.SQLiteStorage(path) as second:
        opener = CircuitBreaker("api", storage=first, clock=clock, failure_threshold=1)
        other = CircuitBreaker("api", storage=second, clock=clock)
        await other.call(dependency)
        await opener.record_failure(RuntimeError("down"))
        clock.advance(0.05)
        # Within the staleness bound the other breaker may act on its last read...
        await other.call(dependency)
        clock.advance(0.05)
        # ...and no longer after it.
        with pytest.raises(CircuitBreakerOpenError):
            await other.call(dependency)
    assert ran == ["ran", "ran"]


async def test_stored_record_it_cannot_read_is_a_storage_error(tmp_path: Path) -> None:
    """A row whose record is not valid JSON of a record fails with StorageError, not ValueError."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.compare_and_set("a", None, record(1))
        run_sql(path, f"UPDATE {TABLE} SET record = '{{not json' WHERE name = 'a'")
        with pytest.raises(StorageError, match="'a'") as caught:
            await storage.get("a")
        assert isinstance(caught.value.__cause__, ValueError)


# -- the library's own schema -------------------------------------------------


async def test_creates_its_tables_with_a_schema_version(tmp_path: Path) -> None:
    """The first write creates the breakers table and a marker table holding the schema version."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.compare_and_set("a", None, record(1))
    assert tables(path) == {TABLE, f"{TABLE}_meta"}
    connection = sqlite3.connect(path)
    try:
        assert connection.execute(f"SELECT key, value FROM {TABLE}_meta").fetchall() == [
            ("schema_version", "1")
        ]
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({TABLE})")}
    finally:
        connection.close()
    assert columns == {"name", "version", "state", "record"}


async def test_coexists_with_the_applications_tables(tmp_path: Path) -> None:
    """In an application's database the storage adds its tables and leaves the rest alone."""
    path = tmp_path / "app.db"
    run_sql(
        path,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO users (name) VALUES ('ada')",
    )
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.compare_and_set("a", None, record(1))
    assert tables(path) == {"users", TABLE, f"{TABLE}_meta"}
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT name FROM users").fetchall() == [("ada",)]
    finally:
        connection.close()


async def test_table_name_is_configurable(tmp_path: Path) -> None:
    """Storages with different table names on one file keep separate records."""
    path = tmp_path / "breakers.db"
    async with (
        sql.SQLiteStorage(path, table="team_a") as first,
        sql.SQLiteStorage(path, table="team_b") as second,
    ):
        assert await first.compare_and_set("api", None, record(1))
        assert await second.names() == []
        assert await second.compare_and_set("api", None, record(1, CircuitState.OPEN))
        assert await first.get("api") == record(1)
    assert tables(path) == {"team_a", "team_a_meta", "team_b", "team_b_meta"}


async def test_a_file_it_creates_uses_wal(tmp_path: Path) -> None:
    """A database file the storage creates itself is switched to WAL."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.compare_and_set("a", None, record(1))
    assert journal_mode(path) == "wal"


async def test_an_existing_database_keeps_its_journal_mode(tmp_path: Path) -> None:
    """An existing database keeps its journal mode, a persistent setting it did not choose."""
    path = tmp_path / "app.db"
    run_sql(path, "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    assert journal_mode(path) == "delete"
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.compare_and_set("a", None, record(1))
    assert journal_mode(path) == "delete"


async def test_journal_mode_is_switched_when_asked(tmp_path: Path) -> None:
    """journal_mode= switches an existing database, and keeps a new one out of WAL."""
    existing = tmp_path / "app.db"
    run_sql(existing, "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    async with sql.SQLiteStorage(existing, journal_mode="wal") as storage:
        assert await storage.compare_and_set("a", None, record(1))
    assert journal_mode(existing) == "wal"
    new = tmp_path / "new.db"
    async with sql.SQLiteStorage(new, journal_mode="delete") as storage:
        assert await storage.compare_and_set("a", None, record(1))
    assert journal_mode(new) == "delete"


FOREIGN_SHAPES = {
    "same name, other columns": [
        f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, payload BLOB)",
        f"INSERT INTO {TABLE} (payload) VALUES (x'00ff')",
    ],
    "same columns, no schema marker": [
        f"CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, version INTEGER, state TEXT, record TEXT)",
        f"INSERT INTO {TABLE} VALUES ('a', 1, 'closed', '{{}}')",
    ],
    "a marker table of another shape": [
        f"CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, version INTEGER, state TEXT, record TEXT)",
        f"CREATE TABLE {TABLE}_meta (id INTEGER PRIMARY KEY)",
    ],
    "a newer schema version": [
        f"CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, version INTEGER, state TEXT, record TEXT)",
        f"CREATE TABLE {TABLE}_meta (key TEXT PRIMARY KEY, value TEXT)",
        f"INSERT INTO {TABLE}_meta VALUES ('schema_version', '99')",
    ],
    "an unknown schema version": [
        f"CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, version INTEGER, state TEXT, record TEXT)",
        f"CREATE TABLE {TABLE}_meta (key TEXT PRIMARY KEY, value TEXT)",
        f"INSERT INTO {TABLE}_meta VALUES ('schema_version', '0')",
    ],
    "our marker, other columns": [
        f"CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, version INTEGER)",
        f"CREATE TABLE {TABLE}_meta (key TEXT PRIMARY KEY, value TEXT)",
        f"INSERT INTO {TABLE}_meta VALUES ('schema_version', '1')",
    ],
    "only a marker table": [
        f"CREATE TABLE {TABLE}_meta (key TEXT PRIMARY KEY, value TEXT)",
        f"INSERT INTO {TABLE}_meta VALUES ('schema_version', '1')",
    ],
}


@pytest.mark.parametrize("shape", FOREIGN_SHAPES)
async def test_a_table_it_does_not_know_is_refused_untouched(tmp_path: Path, shape: str) -> None:
    """A table of its name with an unknown shape: StorageError, and not one byte changed."""
    path = tmp_path / "app.db"
    run_sql(path, *FOREIGN_SHAPES[shape])
    before = snapshot(tmp_path)
    async with sql.SQLiteStorage(path) as storage:
        for operation in (storage.names(), storage.get("a"), storage.delete("a")):
            with pytest.raises(StorageError, match=TABLE):
                await operation
        with pytest.raises(StorageError):
            await storage.compare_and_set("a", None, record(1))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "content",
    [b"this is my shopping list\n" * 100, b"SQLite format 3\x00" + b"\xff" * 200, os.urandom(4096)],
    ids=["text", "bad header", "random"],
)
async def test_a_file_that_is_not_sqlite_is_refused_untouched(
    tmp_path: Path, content: bytes
) -> None:
    """A file that is not SQLite: StorageError with the driver's cause, bytes unchanged."""
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    before = snapshot(tmp_path)
    async with sql.SQLiteStorage(path) as storage:
        with pytest.raises(StorageError, match=r"not a (SQLite )?database"):
            await storage.names()
        with pytest.raises(StorageError):
            await storage.compare_and_set("a", None, record(1))
    assert snapshot(tmp_path) == before


async def test_a_refused_table_is_accepted_once_it_is_gone(tmp_path: Path) -> None:
    """A refusal is not remembered: once the foreign table is dropped, the storage sets up."""
    path = tmp_path / "app.db"
    run_sql(path, f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY)")
    async with sql.SQLiteStorage(path) as storage:
        with pytest.raises(StorageError):
            await storage.names()
        run_sql(path, f"DROP TABLE {TABLE}")
        assert await storage.compare_and_set("a", None, record(1))


# -- reads write nothing --------------------------------------------------------


async def test_reads_of_a_missing_file_create_nothing(tmp_path: Path, anyio_backend: str) -> None:
    """get, names, delete and drop_table on a missing file answer empty and create no file."""
    path = tmp_path / "breakers.db"
    urls = [f"sqlite:///{path}"]
    if anyio_backend == "asyncio" and importlib.util.find_spec("aiosqlite") is not None:
        urls.append(f"sqlite+aiosqlite:///{path}")
    for storage in [sql.SQLiteStorage(path), *map(sql.SQLAlchemyStorage, urls)]:
        async with storage:
            assert await storage.get("a") is None
            assert await storage.names() == []
            await storage.delete("a")
            await sql.drop_table(storage)
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("mode", ["delete", "wal"])
async def test_reads_of_an_applications_database_change_no_byte(tmp_path: Path, mode: str) -> None:
    """Reads on a database without the storage's tables leave its bytes and tables as they were."""
    path = tmp_path / "app.db"
    run_sql(
        path,
        f"PRAGMA journal_mode={mode}",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO users (name) VALUES ('ada')",
    )
    before = path.read_bytes()
    # journal_mode= is applied by the first write, not by a read.
    async with sql.SQLiteStorage(path, journal_mode="truncate") as storage:
        assert await storage.get("a") is None
        assert await storage.names() == []
        await storage.delete("a")
    assert path.read_bytes() == before
    assert tables(path) == {"users"}
    assert journal_mode(path) == mode


async def test_reads_check_its_tables_once_they_exist(tmp_path: Path) -> None:
    """A read finds tables another storage created later; once found, a read is one statement."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as reader, sql.SQLiteStorage(path) as writer:
        assert await reader.names() == []
        assert not path.exists()
        assert await writer.compare_and_set("a", None, record(1))
        assert await reader.names() == ["a"]

        statements: list[str] = []

        def trace(dbapi_connection: Any, connection_record: Any) -> None:
            dbapi_connection.set_trace_callback(statements.append)

        # Connections made from now on report every statement they run.
        sa.event.listen(reader._engine, "connect", trace)
        reader._release_file()
        assert await reader.get("a") == record(1)
        assert await reader.get("a") == record(1)
        reads = [" ".join(text.split()) for text in statements if not text.startswith("PRAGMA")]
        assert len(reads) == 2, reads
        assert all(f"FROM {TABLE} WHERE" in read for read in reads), reads


@pytest.mark.parametrize("kind", ["SQLiteStorage", "sqlite URL"])
async def test_an_error_names_the_operation_and_file_and_says_the_drivers_message_once(
    tmp_path: Path, kind: str
) -> None:
    """A driver failure reads as one sentence: what, where, the driver's words once."""
    path = tmp_path / "broken.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    storage = (
        sql.SQLiteStorage(path)
        if kind == "SQLiteStorage"
        else storage_from_url(f"sqlite:///{path}")
    )
    async with storage:
        with pytest.raises(StorageError) as caught:
            await storage.get("model-api")
    message = str(caught.value)
    assert message.startswith("reading 'model-api' from SQLite database ")
    assert str(path) in message
    assert message.count("file is not a database") == 1
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert str(caught.value.__cause__) == "file is not a database"


async def test_an_older_schema_is_upgraded_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later release's first write upgrades an older layout once, in place, keeping records."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.compare_and_set("a", None, record(1, CircuitState.OPEN))
    upgraded: list[str] = []

    def upgrade(statements: Any, connection: Any) -> None:
        upgraded.append(statements.table.name)
        connection.exec_driver_sql(f"CREATE INDEX {TABLE}_state ON {TABLE} (state)")

    # A release whose schema version 2 adds an index to version 1's table.
    monkeypatch.setattr(sql, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(sql, "_LAYOUTS", {**sql._LAYOUTS, 2: sql._LAYOUTS[1]})
    monkeypatch.setattr(sql, "_UPGRADES", [upgrade])
    async with sql.SQLiteStorage(path) as storage:
        # A read works on the older layout and leaves it as it is.
        assert await storage.get("a") == record(1, CircuitState.OPEN)
    assert upgraded == []
    for version in (2, 3):
        async with sql.SQLiteStorage(path) as storage:
            assert await storage.compare_and_set("a", version - 1, record(version))
            assert await storage.get("a") == record(version)
    assert upgraded == [TABLE]
    connection = sqlite3.connect(path)
    try:
        assert connection.execute(
            f"SELECT value FROM {TABLE}_meta WHERE key = 'schema_version'"
        ).fetchall() == [("2",)]
    finally:
        connection.close()


# -- constructor arguments --------------------------------------------------


@pytest.mark.parametrize(
    "table",
    ["", "1st", "has-dash", "has space", "x" * 59, "a;DROP TABLE users", "é", 42],
)
def test_table_must_be_an_identifier(tmp_path: Path, table: Any) -> None:
    """A table name that is not a plain identifier is refused before any SQL runs."""
    with pytest.raises(ValueError, match="table"):
        sql.SQLiteStorage(tmp_path / "b.db", table=table)
    with pytest.raises(ValueError, match="table"):
        sql.SQLAlchemyStorage(postgres_url("psycopg"), table=table)


@pytest.mark.parametrize("schema", ["", "a.b", "public; --", "x" * 59])
def test_schema_must_be_an_identifier(schema: str) -> None:
    """A PostgreSQL schema name that is not a plain identifier is refused."""
    with pytest.raises(ValueError, match="schema"):
        sql.SQLAlchemyStorage(postgres_url("psycopg"), schema=schema)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"staleness": -1}, ValueError, "staleness"),
        ({"staleness": float("nan")}, ValueError, "staleness"),
        ({"staleness": "0.1"}, TypeError, "staleness"),
        ({"lock_timeout": 0}, ValueError, "lock_timeout"),
        ({"lock_timeout": float("inf")}, ValueError, "lock_timeout"),
        ({"journal_mode": "off"}, ValueError, "journal_mode"),
        ({"journal_mode": "memory"}, ValueError, "journal_mode"),
    ],
)
def test_bad_options_are_refused(
    tmp_path: Path, arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Bad option values raise ValueError or TypeError naming the option."""
    with pytest.raises(error, match=match):
        sql.SQLiteStorage(tmp_path / "b.db", **arguments)


def test_bad_targets_are_refused(tmp_path: Path) -> None:
    """Not a path, not a URL, an unsupported database, options of another database: refused."""
    with pytest.raises(TypeError, match="path"):
        sql.SQLiteStorage(42)
    with pytest.raises(TypeError, match="url_or_engine"):
        sql.SQLAlchemyStorage(42)
    with pytest.raises(ValueError, match="not a database URL"):
        sql.SQLAlchemyStorage("no scheme here")
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        sql.SQLAlchemyStorage("mysql://user@localhost/app")
    with pytest.raises(ValueError, match="schema"):
        sql.SQLAlchemyStorage(f"sqlite:///{tmp_path / 'b.db'}", schema="public")
    with pytest.raises(ValueError, match="journal_mode"):
        sql.SQLiteStorage(":memory:", journal_mode="wal")


def test_journal_mode_is_refused_for_postgresql() -> None:
    """journal_mode is a SQLite option: given for PostgreSQL it is refused."""
    pytest.importorskip("psycopg", reason="needs anybreaker[postgres]")
    with pytest.raises(ValueError, match="journal_mode is a SQLite option"):
        sql.SQLAlchemyStorage(postgres_url("psycopg"), journal_mode="wal")


def test_staleness_defaults_to_a_tenth_of_a_second(tmp_path: Path) -> None:
    """staleness is 0.1 s unless set, and can be set down to 0."""
    assert sql.SQLiteStorage(tmp_path / "b.db").staleness == 0.1
    assert sql.SQLiteStorage(tmp_path / "b.db", staleness=0).staleness == 0.0
    assert sql.SQLAlchemyStorage(f"sqlite:///{tmp_path / 'b.db'}", staleness=2).staleness == 2.0


def test_missing_sqlalchemy_names_the_extra() -> None:
    """Without SQLAlchemy, importing the module says which extra to install."""
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "try:\n"
        "    import anybreaker.storage.sql\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert 'pip install "anybreaker[sqlite]"' in result.stdout


# -- where a database can be kept ---------------------------------------------


def sqlite_storages() -> dict[str, Callable[[Path], object]]:
    """Every way to make a storage on a SQLite file path, by name."""
    return {
        "SQLiteStorage": lambda path: sql.SQLiteStorage(path),
        "SQLiteStorage(str)": lambda path: sql.SQLiteStorage(str(path)),
        "SQLAlchemyStorage": lambda path: sql.SQLAlchemyStorage(f"sqlite:///{path}"),
        "storage_from_url": lambda path: storage_from_url(f"sqlite:///{path}"),
    }


@pytest.mark.parametrize("make", sqlite_storages())
@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("missing/breakers.db", "its directory '{directory}' does not exist"),
        ("missing/deeper/breakers.db", "its directory '{directory}' does not exist"),
        ("a-file/breakers.db", "'{directory}' is not a directory"),
    ],
)
def test_a_path_no_database_can_be_kept_at_is_refused_at_construction(
    tmp_path: Path, make: str, where: str, problem: str
) -> None:
    """A directory that is missing, or a file: ValueError naming the path, nothing created."""
    (tmp_path / "a-file").write_text("notes\n")
    before = sorted(tmp_path.rglob("*"))
    path = tmp_path / where
    with pytest.raises(ValueError, match="no SQLite database can be kept at") as caught:
        sqlite_storages()[make](path)
    message = str(caught.value)
    assert repr(str(path)) in message
    assert problem.format(directory=path.parent) in message
    assert sorted(tmp_path.rglob("*")) == before


def test_an_async_driver_url_on_a_missing_directory_is_refused_too(tmp_path: Path) -> None:
    """sqlite+aiosqlite:// on a missing directory is refused as sqlite:// is."""
    pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
    path = tmp_path / "missing" / "breakers.db"
    with pytest.raises(ValueError, match="does not exist") as caught:
        sql.SQLAlchemyStorage(f"sqlite+aiosqlite:///{path}")
    assert repr(str(path)) in str(caught.value)


async def test_a_memory_database_needs_no_directory() -> None:
    """``:memory:`` (by path or URL) involves no file, and works."""
    for storage in (sql.SQLiteStorage(":memory:"), storage_from_url("sqlite:///:memory:")):
        async with storage:
            assert await storage.compare_and_set("api", None, record(1))
            assert await storage.get("api") == record(1)


# Root writes wherever it likes: only another user sees a directory read-only.
binds_permissions = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="file permissions do not bind root"
)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    """A directory the test may make read-only; made writable again for clean-up."""
    made = tmp_path / "state"
    made.mkdir()
    try:
        yield made
    finally:
        made.chmod(0o755)


@binds_permissions
def test_a_new_file_in_a_read_only_directory_is_refused_at_construction(directory: Path) -> None:
    """Where the file does not exist and cannot be created, the storage is a ValueError."""
    directory.chmod(0o555)
    path = directory / "breakers.db"
    with pytest.raises(ValueError, match="no SQLite database can be kept at") as caught:
        storage_from_url(f"sqlite:///{path}")
    message = str(caught.value)
    assert repr(str(path)) in message
    assert f"its directory {str(directory)!r} is not writable" in message


@binds_permissions
async def test_an_existing_database_in_a_read_only_directory_is_still_read(
    directory: Path,
) -> None:
    """An existing database there is read; a write fails per operation, as StorageError."""
    path = directory / "breakers.db"
    # A rollback journal: reading needs no file beside the database.
    async with sql.SQLiteStorage(path, journal_mode="delete") as storage:
        assert await storage.compare_and_set("api", None, BreakerRecord(version=1))
    await anyio.Path(directory).chmod(0o555)
    async with sql.SQLiteStorage(path) as storage:
        assert await storage.get("api") == BreakerRecord(version=1)
        with pytest.raises(StorageError, match="writing 'api' to SQLite database") as caught:
            await storage.compare_and_set("api", 1, BreakerRecord(version=2))
        assert str(path) in str(caught.value)
    assert [item.name async for item in anyio.Path(directory).iterdir()] == ["breakers.db"]


# -- what no SQL database can store -------------------------------------------


Behind = Callable[[str], None]
"""Runs a statement (``{table}`` for the storage's table) on its database, behind its back."""


@pytest.fixture(params=["sqlite", "sqlite+aiosqlite", "postgresql+psycopg", "postgresql+asyncpg"])
async def sql_storage(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[tuple[Any, Behind]]:
    """Each SQL storage (by driver), empty, with a way to change its table behind its back."""
    kind: str = request.param
    backend, _, driver = kind.partition("+")
    if driver in ("aiosqlite", "asyncpg"):
        pytest.importorskip(driver, reason=f"needs {driver}")
        if anyio_backend == "trio":
            pytest.skip(f"SQLAlchemy's async engine over {driver} needs asyncio")
    if backend == "sqlite":
        path = tmp_path / "breakers.db"

        def behind_sqlite(statement: str) -> None:
            run_sql(path, statement.format(table=TABLE))

        made = sql.SQLAlchemyStorage(f"{kind}:///{path}", staleness=0)
        async with made as storage:
            yield storage, behind_sqlite
        return
    engine = postgres_engine()
    table = unique_name("breakers")

    def behind_postgresql(statement: str) -> None:
        with engine.connect() as connection:
            connection.execute(sa.text(statement.format(table=table)))

    try:
        async with sql.SQLAlchemyStorage(postgres_url(driver), table=table) as storage:
            try:
                yield storage, behind_postgresql
            finally:
                await sql.drop_table(storage)
    finally:
        engine.dispose()


async def test_a_version_at_the_top_of_its_column_is_a_storage_error_naming_it(
    sql_storage: tuple[Any, Behind],
) -> None:
    """A corrupt row at version 2**63 - 1: the next write is a StorageError that says so."""
    storage, behind = sql_storage
    top = 2**63 - 1
    assert await storage.compare_and_set("api", None, BreakerRecord(version=1))
    behind(f"UPDATE {{table}} SET version = {top} WHERE name = 'api'")
    assert await storage.get("api") == BreakerRecord(version=top)
    with pytest.raises(StorageError) as caught:
        await storage.compare_and_set("api", top, BreakerRecord(version=top + 1))
    message = str(caught.value)
    assert message.startswith("writing 'api' to ")
    assert f"version {top + 1}, the one after {top}, does not fit" in message
    assert "the record is corrupt. Delete it" in message
    assert await storage.get("api") == BreakerRecord(version=top)
    # As the message says: deleting it lets the breaker start afresh.
    await storage.delete("api")
    assert await storage.compare_and_set("api", None, BreakerRecord(version=1))


async def test_a_name_that_is_not_valid_unicode_is_a_storage_error_naming_it(
    sql_storage: tuple[Any, Behind],
) -> None:
    """A name with a lone surrogate is refused by every operation, naming it; nothing is stored."""
    storage, _ = sql_storage
    name = "api-" + os.fsdecode(b"\xff")
    for operation in (
        storage.get(name),
        storage.compare_and_set(name, None, BreakerRecord(version=1)),
        storage.delete(name),
    ):
        with pytest.raises(StorageError, match="cannot be stored") as caught:
            await operation
        assert f"breaker name {name!r}" in str(caught.value)
        assert isinstance(caught.value.__cause__, UnicodeEncodeError)
    assert await storage.names() == []


def test_making_a_sqlite_storage_imports_nothing(tmp_path: Path) -> None:
    """Made from a path or a URL, a SQLite storage imports no module: the event loop never waits.

    SQLAlchemy's asyncio extension (and its ORM) took a tenth of a second to
    import, in the event loop when the storage was made there.
    """
    code = (
        "import sys\n"
        "import anybreaker.storage.sql as sql\n"
        "from anybreaker import storage_from_url\n"
        "before = set(sys.modules)\n"
        "sql.SQLiteStorage(sys.argv[1])\n"
        "storage_from_url('sqlite:///' + sys.argv[1])\n"
        "sql.SQLAlchemyStorage('sqlite:///' + sys.argv[1])\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "breakers.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# -- lifecycle --------------------------------------------------------------


async def test_entering_touches_no_file(tmp_path: Path) -> None:
    """Creating and entering a storage opens nothing: the file appears on the first write."""
    path = tmp_path / "breakers.db"
    async with sql.SQLiteStorage(path) as storage:
        assert not path.exists()
        assert await storage.compare_and_set("a", None, record(1))
        assert path.exists()


async def test_usable_without_async_with_and_closed_idempotently(tmp_path: Path) -> None:
    """Used directly the storage opens lazily; aclose() twice is fine; then use is refused."""
    storage = sql.SQLiteStorage(tmp_path / "breakers.db")
    assert await storage.compare_and_set("a", None, record(1))
    await storage.aclose()
    await storage.aclose()
    for operation in (
        storage.get("a"),
        storage.names(),
        storage.delete("a"),
        storage.compare_and_set("a", 1, record(2)),
    ):
        with pytest.raises(StorageError, match="closed"):
            await operation
    with pytest.raises(StorageError, match="closed"):
        async with storage:
            pass


async def test_closing_releases_the_file(tmp_path: Path) -> None:
    """aclose() disposes of the engine the storage created: no descriptor on the file remains."""
    path = tmp_path / "breakers.db"
    storage = sql.SQLiteStorage(path)
    assert await storage.compare_and_set("a", None, record(1))
    assert open_descriptors(path) >= 1
    await storage.aclose()
    assert open_descriptors(path) == 0


async def test_an_engine_it_was_given_stays_the_callers(tmp_path: Path) -> None:
    """A given Engine still works after the storage closes, in the caller's own isolation level."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        async with sql.SQLAlchemyStorage(engine) as storage:

            async def write(name: str) -> None:
                assert await storage.compare_and_set(name, None, record(1))

            async with anyio.create_task_group() as group:
                for name in ("a", "b", "c"):
                    group.start_soon(write, name)
            assert engine.pool.checkedout() >= 1
        # Every connection the storage kept is back in the caller's pool.
        assert engine.pool.checkedout() == 0
        with engine.connect() as connection:
            names = connection.execute(sa.text(f"SELECT name FROM {TABLE} ORDER BY name"))
            assert names.scalars().all() == ["a", "b", "c"]
            assert connection.get_isolation_level() != "AUTOCOMMIT"
    finally:
        engine.dispose()


async def test_unreachable_server_fails_per_operation(tmp_path: Path) -> None:
    """Entering with a server that does not answer works; each operation raises StorageError."""
    psycopg = pytest.importorskip("psycopg", reason="needs anybreaker[postgres]")
    with socket_nobody_listens_on() as port:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        async with sql.SQLAlchemyStorage(url) as storage:
            with pytest.raises(StorageError) as caught:
                await storage.get("a")
            cause = caught.value.__cause__
            assert isinstance(cause, psycopg.OperationalError)
            assert f"127.0.0.1:{port}" in str(caught.value)
            assert str(caught.value).count(str(cause).partition("\n")[0]) == 1
            with pytest.raises(StorageError):
                await storage.compare_and_set("a", None, record(1))


def socket_nobody_listens_on() -> Any:
    """A context giving a local TCP port with nothing listening on it."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def reserve() -> Iterator[int]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            yield probe.getsockname()[1]

    return reserve()


# -- AsyncEngine --------------------------------------------------------------


async def test_async_engine_is_refused_under_trio(tmp_path: Path, anyio_backend: str) -> None:
    """Under trio an AsyncEngine is refused saying why and what to pass; under asyncio it works."""
    pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'breakers.db'}")
    storage = sql.SQLAlchemyStorage(engine)
    if anyio_backend == "trio":
        with pytest.raises(RuntimeError, match=r"asyncio.*trio.*URL or a sync Engine"):
            async with storage:
                pass
        with pytest.raises(RuntimeError, match="AsyncEngine"):
            await storage.get("a")
        await storage.aclose()
        engine.sync_engine.dispose()
        return
    try:
        async with storage:
            assert await storage.compare_and_set("a", None, record(1))
            assert await storage.get("a") == record(1)
        # The caller's engine is still open and holds the record.
        async with engine.connect() as connection:
            result = await connection.execute(sa.text(f"SELECT version FROM {TABLE}"))
            assert result.scalars().all() == [1]
    finally:
        await engine.dispose()


async def test_async_url_makes_and_disposes_its_own_engine(
    tmp_path: Path, anyio_backend: str
) -> None:
    """An async driver URL gets an AsyncEngine of the storage's own, closed with it."""
    pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
    if anyio_backend == "trio":
        pytest.skip("SQLAlchemy's async engine needs asyncio")
    path = tmp_path / "breakers.db"
    async with sql.SQLAlchemyStorage(f"sqlite+aiosqlite:///{path}") as storage:
        assert await storage.compare_and_set("a", None, record(1))
        assert journal_mode(path) == "wal"
    assert open_descriptors(path) == 0


# -- PostgreSQL ---------------------------------------------------------------


def postgres_engine() -> Any:
    """A sync engine on the test database, skipping the test when the server is absent."""
    pytest.importorskip("psycopg", reason="needs anybreaker[postgres]")
    require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    return sa.create_engine(postgres_url("psycopg"), isolation_level="AUTOCOMMIT")


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped with everything in it afterwards."""
    engine = postgres_engine()
    schema = unique_name("anybreaker_schema")
    with engine.connect() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield schema
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.mark.server
async def test_postgres_schema_and_table_are_configurable(postgres_schema: str) -> None:
    """schema= and table= place the storage's tables; other schemas do not see its records."""
    table = unique_name("breakers")
    async with (
        sql.SQLAlchemyStorage(postgres_url("psycopg"), schema=postgres_schema, table=table) as ours,
        sql.SQLAlchemyStorage(postgres_url("psycopg"), table=table) as public,
    ):
        try:
            assert await ours.compare_and_set("api", None, record(1, CircuitState.OPEN))
            assert await public.names() == []
            assert await ours.get("api") == record(1, CircuitState.OPEN)
            engine = postgres_engine()
            try:
                inspector = sa.inspect(engine)
                assert set(inspector.get_table_names(schema=postgres_schema)) == {
                    table,
                    f"{table}_meta",
                }
            finally:
                engine.dispose()
        finally:
            await sql.drop_table(public)


@pytest.mark.server
async def test_postgres_missing_schema_is_a_storage_error() -> None:
    """A schema that does not exist is reported, not created."""
    postgres_engine().dispose()
    schema = unique_name("missing")
    async with sql.SQLAlchemyStorage(postgres_url("psycopg"), schema=schema) as storage:
        with pytest.raises(StorageError, match=f"{schema}.*does not exist"):
            await storage.names()


@pytest.mark.server
async def test_postgres_foreign_table_is_refused_untouched(postgres_schema: str) -> None:
    """A PostgreSQL table of its name with another shape: StorageError, rows unchanged."""
    engine = postgres_engine()
    try:
        with engine.connect() as connection:
            connection.execute(
                sa.text(f"CREATE TABLE {postgres_schema}.{TABLE} (id int PRIMARY KEY, note text)")
            )
            connection.execute(sa.text(f"INSERT INTO {postgres_schema}.{TABLE} VALUES (1, 'x')"))
        async with sql.SQLAlchemyStorage(
            postgres_url("psycopg"), schema=postgres_schema
        ) as storage:
            with pytest.raises(StorageError, match=TABLE):
                await storage.compare_and_set("a", None, record(1))
        with engine.connect() as connection:
            rows = connection.execute(sa.text(f"SELECT * FROM {postgres_schema}.{TABLE}")).all()
            assert [tuple(row) for row in rows] == [(1, "x")]
            assert sa.inspect(connection).get_table_names(schema=postgres_schema) == [TABLE]
    finally:
        engine.dispose()


@pytest.mark.server
async def test_postgres_storages_starting_together_create_the_tables_once(
    postgres_schema: str,
) -> None:
    """Several storages set up one new table at once; all succeed and one record wins."""
    storages = [
        sql.SQLAlchemyStorage(postgres_url("psycopg"), schema=postgres_schema) for _ in range(6)
    ]
    wins: list[bool] = []
    try:

        async def write(storage: Any) -> None:
            wins.append(await storage.compare_and_set("a", None, record(1)))

        async with anyio.create_task_group() as group:
            for storage in storages:
                group.start_soon(write, storage)
        assert sorted(wins) == [False] * 5 + [True]
    finally:
        for storage in storages:
            await storage.aclose()


def driver_url(driver: str, anyio_backend: str) -> str:
    """The test database's URL through ``driver``; skip where the driver cannot run."""
    if driver == "asyncpg":
        pytest.importorskip("asyncpg", reason="needs anybreaker[asyncpg]")
        if anyio_backend == "trio":
            pytest.skip("asyncpg needs asyncio")
    return postgres_url(driver)


@pytest.mark.server
@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_postgres_lock_timeout_bounds_the_wait_for_a_locked_table(
    postgres_schema: str, driver: str, anyio_backend: str
) -> None:
    """A table locked by another connection fails an operation after lock_timeout, not later."""
    url = driver_url(driver, anyio_backend)
    async with sql.SQLAlchemyStorage(url, schema=postgres_schema, lock_timeout=0.2) as storage:
        assert await storage.compare_and_set("a", None, record(1))
        # Not in autocommit mode: the lock lasts until the transaction ends.
        engine = sa.create_engine(postgres_url("psycopg"))
        try:
            with engine.connect() as connection, connection.begin():
                connection.execute(
                    sa.text(f"LOCK TABLE {postgres_schema}.{TABLE} IN ACCESS EXCLUSIVE MODE")
                )
                started = time.monotonic()
                # Without the bound the write would wait as long as the lock.
                with anyio.fail_after(5), pytest.raises(StorageError, match="lock timeout"):
                    await storage.compare_and_set("a", 1, record(2))
                assert 0.15 <= time.monotonic() - started < 2.0
        finally:
            engine.dispose()
        assert await storage.compare_and_set("a", 1, record(2))


@pytest.mark.server
@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_postgres_row_locked_past_a_statement_wait_is_waited_out(
    postgres_schema: str, driver: str, anyio_backend: str
) -> None:
    """A row locked for 1.2 s by another transaction delays a write past one statement's wait."""
    url = driver_url(driver, anyio_backend)
    async with sql.SQLAlchemyStorage(url, schema=postgres_schema) as storage:
        assert await storage.compare_and_set("a", None, record(1))
        engine = sa.create_engine(postgres_url("psycopg"))
        try:
            with engine.connect() as connection:
                transaction = connection.begin()
                connection.execute(
                    sa.text(f"SELECT * FROM {postgres_schema}.{TABLE} WHERE name = 'a' FOR UPDATE")
                )

                async def release_later() -> None:
                    # Longer than a statement's lock_timeout (1 s), within the 2 s wait.
                    await anyio.sleep(1.2)
                    await anyio.to_thread.run_sync(transaction.commit)

                async with anyio.create_task_group() as group:
                    group.start_soon(release_later)
                    started = time.monotonic()
                    with anyio.fail_after(5):
                        assert await storage.compare_and_set("a", 1, record(2))
                    assert time.monotonic() - started >= 1.0
        finally:
            engine.dispose()
        assert await storage.get("a") == record(2)


@pytest.mark.server
async def test_postgres_plain_url_uses_psycopg(postgres_schema: str) -> None:
    """A postgresql:// URL without a driver runs on psycopg 3, the driver of the extra."""
    url = postgres_url("psycopg").replace("postgresql+psycopg://", "postgresql://")
    async with sql.SQLAlchemyStorage(url, schema=postgres_schema) as storage:
        assert await storage.compare_and_set("a", None, record(1))
        assert await storage.names() == ["a"]


@pytest.mark.server
async def test_drop_table_removes_both_tables(postgres_schema: str) -> None:
    """drop_table() drops the table and its marker; the next write creates them again."""
    async with sql.SQLAlchemyStorage(postgres_url("psycopg"), schema=postgres_schema) as storage:
        assert await storage.compare_and_set("a", None, record(1))
        await sql.drop_table(storage)
        engine = postgres_engine()
        try:
            assert sa.inspect(engine).get_table_names(schema=postgres_schema) == []
            assert await storage.names() == []
            assert sa.inspect(engine).get_table_names(schema=postgres_schema) == []
            assert await storage.compare_and_set("a", None, record(1))
            assert await storage.names() == ["a"]
        finally:
            engine.dispose()


@pytest.mark.server
async def test_postgres_connections_the_server_dropped_are_replaced(postgres_schema: str) -> None:
    """After the server drops every connection the storage kept, the next operation succeeds."""
    application = unique_name("anybreaker_test")
    url = f"{postgres_url('psycopg')}?application_name={application}"
    async with sql.SQLAlchemyStorage(url, schema=postgres_schema) as storage:

        async def write(name: str) -> None:
            assert await storage.compare_and_set(name, None, record(1))

        # Several operations at once, so that several connections are kept.
        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(write, f"breaker-{index}")
        engine = postgres_engine()
        try:
            with engine.connect() as connection:
                dropped = connection.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :application"
                    ),
                    {"application": application},
                ).scalar()
        finally:
            engine.dispose()
        assert dropped >= 1
        assert await storage.names() == [f"breaker-{index}" for index in range(4)]
        assert await storage.compare_and_set("breaker-0", 1, record(2))


# -- a pool that the kept connections fill --------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "aiosqlite"])
async def test_the_first_write_sets_up_on_a_pool_the_reads_filled(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    """Reads keep every connection of a one-connection pool; the first write still sets up.

    The write is committed: another storage on the database reads it back.
    """
    table = unique_name("anybreaker_pool")
    pool = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 5}
    if kind == "postgresql":
        postgres_engine().dispose()  # skips without the server
        url = postgres_url("psycopg")
    else:
        url = f"sqlite:///{tmp_path / 'breakers.db'}"
    # The tables and a record exist: the reads keep their connection.
    async with sql.SQLAlchemyStorage(url, table=table) as storage:
        assert await storage.compare_and_set("model-api", None, record(1))
    engine: Any
    if kind == "aiosqlite":
        pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
        if anyio_backend == "trio":
            pytest.skip("an AsyncEngine needs asyncio")
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'breakers.db'}", **pool)
    else:
        engine = sa.create_engine(url, **pool)
    try:
        async with sql.SQLAlchemyStorage(engine, table=table) as storage:
            assert await storage.get("model-api") == record(1)
            assert await storage.compare_and_set("model-api", 1, record(2))
            assert await storage.compare_and_set("model-api", 2, record(3))
        async with sql.SQLAlchemyStorage(url, table=table) as other:
            assert await other.get("model-api") == record(3)
            if kind == "postgresql":
                await sql.drop_table(other)
    finally:
        if kind == "aiosqlite":
            await engine.dispose()
        else:
            engine.dispose()
