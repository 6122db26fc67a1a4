"""``storage_from_url()``: schemes, options, lazy imports and entry points."""

from __future__ import annotations

import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

import anybreaker
from anybreaker import MemoryStorage, Storage, storage_from_url

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

pytestmark = pytest.mark.anyio


class Recorder:
    """Stands in for a storage class and records how it was constructed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


@pytest.fixture
def fake_sql(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Replace ``anybreaker.storage.sql`` by a module whose classes record their arguments."""
    module = types.ModuleType("anybreaker.storage.sql")
    module.SQLiteStorage = type("SQLiteStorage", (Recorder,), {})  # type: ignore[attr-defined]
    module.SQLAlchemyStorage = type("SQLAlchemyStorage", (Recorder,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "anybreaker.storage.sql", module)
    return module


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Replace ``anybreaker.storage.redis`` by a module whose class records its arguments."""
    module = types.ModuleType("anybreaker.storage.redis")
    module.RedisStorage = type("RedisStorage", (Recorder,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "anybreaker.storage.redis", module)
    return module


def constructed(storage: object) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The class name and arguments a ``Recorder`` was made with."""
    assert isinstance(storage, Recorder)
    return type(storage).__name__, storage.args, storage.kwargs


async def test_memory_url_makes_a_new_memory_storage() -> None:
    """``memory://`` gives a fresh MemoryStorage each time."""
    first = storage_from_url("memory://")
    second = storage_from_url("MEMORY://")
    assert type(first) is MemoryStorage
    assert type(second) is MemoryStorage
    assert first is not second


async def test_storage_from_url_is_public() -> None:
    """``anybreaker.storage_from_url`` is the registry's function."""
    assert anybreaker.storage_from_url is storage_from_url


@pytest.mark.parametrize(
    "url",
    ["memory://somewhere", "memory:///path", "memory://?staleness=0"],
)
async def test_memory_url_takes_no_host_path_or_option(url: str) -> None:
    """``memory://`` with a host, a path or an option is refused."""
    with pytest.raises(ValueError, match="memory"):
        storage_from_url(url)


@pytest.mark.usefixtures("fake_sql")
@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///breakers.db", "breakers.db"),
        ("sqlite:///state/breakers.db", "state/breakers.db"),
        ("sqlite:////var/lib/app/breakers.db", "/var/lib/app/breakers.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///with%20space.db", "with space.db"),
    ],
)
async def test_sqlite_url_gives_the_path_after_the_third_slash(url: str, path: str) -> None:
    """``sqlite:///path`` follows SQLAlchemy's convention for relative and absolute paths."""
    assert constructed(storage_from_url(url)) == ("SQLiteStorage", (path,), {})


@pytest.mark.usefixtures("fake_sql")
async def test_sqlite_url_options_are_converted() -> None:
    """Query options of a sqlite URL reach the storage as typed values."""
    storage = storage_from_url(
        "sqlite:///b.db?staleness=0.25&table=app_breakers&lock_timeout=3&journal_mode=wal"
    )
    assert constructed(storage) == (
        "SQLiteStorage",
        ("b.db",),
        {"staleness": 0.25, "table": "app_breakers", "lock_timeout": 3.0, "journal_mode": "wal"},
    )


@pytest.mark.usefixtures("fake_sql")
async def test_keyword_options_join_the_url_options() -> None:
    """Options given as keywords are validated like the URL's."""
    storage = storage_from_url("sqlite:///b.db?table=t", staleness=0)
    assert constructed(storage) == ("SQLiteStorage", ("b.db",), {"table": "t", "staleness": 0.0})


@pytest.mark.usefixtures("fake_sql")
@pytest.mark.parametrize(
    ("url", "keywords", "named"),
    [
        ("sqlite:///b.db?stalenes=0", {}, "stalenes"),
        ("sqlite:///b.db?prefix=x", {}, "prefix"),
        ("sqlite:///b.db", {"prefix": "x"}, "prefix"),
        ("sqlite:///b.db?staleness=soon", {}, "staleness"),
        ("sqlite:///b.db?staleness=-1", {}, "staleness"),
        ("sqlite:///b.db?staleness=nan", {}, "staleness"),
        ("sqlite:///b.db?staleness=inf", {}, "staleness"),
        ("sqlite:///b.db?staleness=", {}, "staleness"),
        ("sqlite:///b.db?table=", {}, "table"),
        ("sqlite:///b.db?lock_timeout=0", {}, "lock_timeout"),
        ("sqlite:///b.db?staleness=1&staleness=2", {}, "staleness"),
        ("sqlite:///b.db?staleness=1", {"staleness": 2}, "staleness"),
        ("sqlite:///b.db", {"staleness": True}, "staleness"),
    ],
)
async def test_a_bad_option_is_named(url: str, keywords: dict[str, Any], named: str) -> None:
    """An unknown option, a bad value or an option given twice is a ValueError naming it."""
    with pytest.raises(ValueError, match=named):
        storage_from_url(url, **keywords)


@pytest.mark.usefixtures("fake_sql")
@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/b.db"])
async def test_sqlite_url_needs_a_path_and_no_host(url: str) -> None:
    """A sqlite URL without a path, or with a host, is refused with the forms to use."""
    with pytest.raises(ValueError, match=r"sqlite:///"):
        storage_from_url(url)


@pytest.mark.usefixtures("fake_sql")
@pytest.mark.parametrize(
    ("url", "expected_url"),
    [
        ("postgresql://app@db.internal/app", "postgresql://app@db.internal/app"),
        ("postgresql+psycopg://u@h:5433/d", "postgresql+psycopg://u@h:5433/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        (
            "postgresql://u@h/d?sslmode=require&table=b&connect_timeout=3",
            "postgresql://u@h/d?sslmode=require&connect_timeout=3",
        ),
    ],
)
async def test_postgresql_url_goes_to_sqlalchemy_with_driver_parameters_kept(
    url: str, expected_url: str
) -> None:
    """A postgresql URL maps to SQLAlchemyStorage; the driver's own parameters stay in it."""
    name, args, _ = constructed(storage_from_url(url))
    assert (name, args) == ("SQLAlchemyStorage", (expected_url,))


@pytest.mark.usefixtures("fake_sql")
@pytest.mark.parametrize(
    ("url", "expected_url"),
    [
        ("postgres://app@db.internal/app", "postgresql://app@db.internal/app"),
        ("POSTGRES://app@db.internal/app", "postgresql://app@db.internal/app"),
        (
            "postgres+asyncpg://u@h/d?table=b&sslmode=require",
            "postgresql+asyncpg://u@h/d?sslmode=require",
        ),
    ],
)
async def test_postgres_scheme_is_taken_as_postgresql(url: str, expected_url: str) -> None:
    """``postgres://``, as hosting providers and libpq tools write it, means ``postgresql://``."""
    name, args, _ = constructed(storage_from_url(url))
    assert (name, args) == ("SQLAlchemyStorage", (expected_url,))


@pytest.mark.usefixtures("fake_sql", "fake_redis")
@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///breakers.db#main",
        "sqlite:///breakers.db?staleness=0#main",
        "sqlite:///breakers.db#",
        "sqlite:///:memory:#x",
        "memory://#x",
        "redis://h:6379/0#x",
        "redis://h:6379/0?prefix=app#x",
        "postgresql://u@h/d?table=t#x",
    ],
)
async def test_a_fragment_is_refused_wherever_it_is(url: str) -> None:
    """A ``#fragment`` is never silently dropped (nor made part of a file name): ValueError."""
    with pytest.raises(ValueError, match="a storage URL has no #fragment") as caught:
        storage_from_url(url)
    assert repr(url) in str(caught.value)


@pytest.mark.usefixtures("fake_sql")
async def test_a_hash_in_a_sqlite_file_name_is_written_percent_encoded() -> None:
    """``%23`` gives a ``#`` in a SQLite file name, as the fragment error says."""
    with pytest.raises(ValueError, match="write %23"):
        storage_from_url("sqlite:///breakers#1.db")
    assert constructed(storage_from_url("sqlite:///breakers%231.db"))[1] == ("breakers#1.db",)


async def test_a_fragment_error_hides_the_password() -> None:
    """The error for a fragment in a server URL does not show the URL's password."""
    with pytest.raises(ValueError, match="no #fragment") as caught:
        storage_from_url("redis://app:s3cret@h:6379/0#x")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:99999/9", "port '99999' is not a number from 1 to 65535"),
        ("redis://:99999", "has no host"),
        ("redis://127.0.0.1:6379/abc", "database 'abc' is not a non-negative integer"),
        ("rediss://127.0.0.1:6379/1?db=2", "gives the database twice"),
    ],
)
async def test_a_bad_redis_url_is_refused_when_the_storage_is_made(url: str, problem: str) -> None:
    """A Redis URL coredis would fail on (or misread) later is a ValueError naming it and why."""
    pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        storage_from_url(url)
    assert repr(url) in str(caught.value)


@pytest.mark.parametrize("make", ["storage_from_url", "SQLAlchemyStorage"])
@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql+nodriver://u@h/d", "knows no postgresql driver named 'nodriver'"),
        ("postgres+nodriver://u@h/d", "knows no postgresql driver named 'nodriver'"),
        ("postgresql+psycopg2cffi://u@h/d", "'postgresql+psycopg2cffi' is not installed"),
    ],
)
async def test_a_driver_that_is_not_there_is_an_import_error_saying_what_to_install(
    make: str, url: str, named: str
) -> None:
    """An unknown or missing PostgreSQL driver is an ImportError naming it and the extras."""
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )
    with pytest.raises(ImportError, match=re.escape(named)) as caught:
        storage_from_url(url) if make == "storage_from_url" else sql.SQLAlchemyStorage(url)
    assert 'pip install "anybreaker[postgres]"' in str(caught.value)


async def test_an_unknown_sqlite_driver_is_an_import_error_saying_what_to_install() -> None:
    """``sqlite+nodriver://`` is an ImportError naming the driver and the SQLite extras."""
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )
    with pytest.raises(ImportError, match="knows no sqlite driver named 'nodriver'") as caught:
        sql.SQLAlchemyStorage("sqlite+nodriver:///breakers.db")
    assert 'pip install "anybreaker[sqlite]"' in str(caught.value)


@pytest.mark.usefixtures("fake_sql")
async def test_postgresql_url_options() -> None:
    """``staleness``, ``table`` and ``schema`` of a postgresql URL reach SQLAlchemyStorage."""
    storage = storage_from_url("postgresql://u@h/d?schema=ops&table=breakers&staleness=0.5")
    assert constructed(storage) == (
        "SQLAlchemyStorage",
        ("postgresql://u@h/d",),
        {"schema": "ops", "table": "breakers", "staleness": 0.5},
    )


@pytest.mark.usefixtures("fake_sql")
async def test_postgresql_url_refuses_a_bad_value_of_its_options() -> None:
    """A bad value of an option the storage takes is refused, naming it."""
    with pytest.raises(ValueError, match="schema"):
        storage_from_url("postgresql://u@h/d?schema=")


@pytest.mark.usefixtures("fake_redis")
@pytest.mark.parametrize("scheme", ["redis", "rediss"])
async def test_redis_url_options(scheme: str) -> None:
    """A redis URL maps to RedisStorage with its options; other parameters stay in the URL."""
    storage = storage_from_url(f"{scheme}://h:6380/2?prefix=app&idle_expiry=3600&protocol=3")
    assert constructed(storage) == (
        "RedisStorage",
        (f"{scheme}://h:6380/2?protocol=3",),
        {"prefix": "app", "idle_expiry": 3600.0},
    )


@pytest.mark.usefixtures("fake_redis")
@pytest.mark.parametrize("value", ["0", "-5", "never"])
async def test_redis_idle_expiry_must_be_positive(value: str) -> None:
    """``idle_expiry`` is a number of seconds greater than zero."""
    with pytest.raises(ValueError, match="idle_expiry"):
        storage_from_url(f"redis://h?idle_expiry={value}")


@pytest.mark.parametrize("url", ["dynamo://table", "http://example.com", "breakers.db", ""])
async def test_unknown_scheme_lists_the_known_ones(url: str) -> None:
    """An unknown scheme, or none, is a ValueError that lists the schemes there are."""
    with pytest.raises(ValueError, match="known schemes") as caught:
        storage_from_url(url)
    for scheme in ("memory://", "sqlite://", "postgresql://", "redis://", "rediss://"):
        assert scheme in str(caught.value)


async def test_url_must_be_a_string() -> None:
    """A URL of another type is a TypeError."""
    with pytest.raises(TypeError, match="url must be a str"):
        storage_from_url(Path("breakers.db"))  # type: ignore[arg-type]


async def test_optional_modules_are_imported_only_for_their_scheme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``memory://`` works with the SQL and Redis modules unimportable; their schemes say so."""
    # A None entry in sys.modules makes importing that module fail.
    monkeypatch.setitem(sys.modules, "anybreaker.storage.sql", None)
    monkeypatch.setitem(sys.modules, "anybreaker.storage.redis", None)
    assert type(storage_from_url("memory://")) is MemoryStorage
    with pytest.raises(ImportError):
        storage_from_url("sqlite:///b.db")
    with pytest.raises(ImportError):
        storage_from_url("postgresql://u@h/d")
    with pytest.raises(ImportError):
        storage_from_url("redis://h")


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install a distribution that registers the ``kv`` and ``redis`` storage schemes."""
    (tmp_path / "anybreaker_kv_plugin.py").write_text(
        textwrap.dedent(
            """
            from anybreaker import MemoryStorage

            class KeyValueStorage(MemoryStorage):
                def __init__(self, url, **options):
                    super().__init__()
                    self.url = url
                    self.options = options

            def hijack(url, **options):
                raise AssertionError("a built-in scheme must not be replaced")
            """
        )
    )
    dist_info = tmp_path / "anybreaker_kv_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: anybreaker-kv-plugin\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[anybreaker.storages]\n"
        "kv = anybreaker_kv_plugin:KeyValueStorage\n"
        "redis = anybreaker_kv_plugin:hijack\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "anybreaker_kv_plugin", raising=False)


@pytest.mark.usefixtures("plugin")
async def test_entry_point_scheme_gets_the_url_and_keyword_options() -> None:
    """A scheme registered in ``anybreaker.storages`` is called with the whole URL and keywords."""
    made = storage_from_url("kv://cluster-1/breakers?consistency=strong", timeout=3)
    assert isinstance(made, Storage)
    assert type(made).__name__ == "KeyValueStorage"
    storage: Any = made
    assert storage.url == "kv://cluster-1/breakers?consistency=strong"
    assert storage.options == {"timeout": 3}


@pytest.mark.usefixtures("plugin")
async def test_entry_point_scheme_is_listed_as_known() -> None:
    """The error for an unknown scheme lists registered schemes too."""
    with pytest.raises(ValueError, match=r"kv://"):
        storage_from_url("nope://")


@pytest.mark.usefixtures("plugin", "fake_redis")
async def test_entry_point_cannot_replace_a_built_in_scheme() -> None:
    """A built-in scheme keeps its storage even when a plugin registers the same name."""
    assert constructed(storage_from_url("redis://h"))[0] == "RedisStorage"


async def test_sqlite_url_makes_a_working_sqlite_storage(tmp_path: Path) -> None:
    """A real ``sqlite:///`` URL opens a SQLiteStorage on that file with its options."""
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )
    path = tmp_path / "breakers.db"
    storage = storage_from_url(f"sqlite:///{path}?staleness=0")
    assert isinstance(storage, sql.SQLiteStorage)
    async with storage:
        assert storage.staleness == 0
        assert await storage.names() == []
        assert not path.exists(), "a read created the file"
        assert await storage.compare_and_set("a", None, anybreaker.BreakerRecord(version=1))
    assert path.exists()


async def test_sqlite_memory_url_makes_a_working_storage() -> None:
    """``sqlite:///:memory:`` opens a SQLite storage that keeps records while open."""
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )
    storage = storage_from_url("sqlite:///:memory:")
    assert isinstance(storage, sql.SQLiteStorage)
    async with storage:
        assert await storage.compare_and_set("a", None, anybreaker.BreakerRecord(version=1))
        assert await storage.names() == ["a"]


@pytest.mark.server
async def test_redis_url_makes_a_working_redis_storage() -> None:
    """A real ``redis://`` URL opens a RedisStorage with its prefix."""
    module = pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    prefix = unique_name("anybreaker-url")
    storage = storage_from_url(f"{redis_url()}?prefix={prefix}&staleness=0")
    assert isinstance(storage, module.RedisStorage)
    async with storage:
        assert storage.prefix == prefix
        assert storage.staleness == 0
        assert await storage.names() == []


@pytest.mark.server
async def test_postgres_url_makes_a_working_storage() -> None:
    """A real ``postgres://`` URL opens a SQLAlchemyStorage on psycopg, as postgresql:// does."""
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[postgres]", exc_type=ImportError
    )
    pytest.importorskip("psycopg", reason="needs psycopg")
    require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    table = unique_name("breakers_url")
    url = postgres_url("psycopg").replace("postgresql+psycopg://", "postgres://")
    storage = storage_from_url(f"{url}?table={table}&staleness=0")
    assert isinstance(storage, sql.SQLAlchemyStorage)
    assert "postgresql+psycopg://" in repr(storage)
    async with storage:
        try:
            assert await storage.compare_and_set("a", None, anybreaker.BreakerRecord(version=1))
            assert await storage.names() == ["a"]
        finally:
            await sql.drop_table(storage)


@pytest.mark.server
async def test_postgresql_url_makes_a_working_storage() -> None:
    """A real ``postgresql+psycopg://`` URL opens a SQLAlchemyStorage on its table and schema."""
    sql = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[postgres]", exc_type=ImportError
    )
    pytest.importorskip("psycopg", reason="needs psycopg")
    require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    table = unique_name("breakers_url")
    storage = storage_from_url(
        f"{postgres_url('psycopg')}?schema=public&table={table}&staleness=0&connect_timeout=5"
    )
    assert isinstance(storage, sql.SQLAlchemyStorage)
    async with storage:
        try:
            assert storage.staleness == 0
            assert await storage.compare_and_set("a", None, anybreaker.BreakerRecord(version=1))
            assert await storage.names() == ["a"]
        finally:
            await sql.drop_table(storage)
