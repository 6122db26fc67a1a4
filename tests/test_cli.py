"""The command line: ``status``, ``reset`` and ``force-open`` (the demo: ``test_demo.py``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from anybreaker import BreakerRecord, CircuitBreaker, CircuitBreakerOpenError, CircuitState
from anybreaker.__main__ import main

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

SUBPROCESS_TIMEOUT = 30


def _sql() -> ModuleType:
    sql: ModuleType = pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )
    return sql


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A SQLite file holding breakers in every state, written through CircuitBreaker.

    - ``model-api``: opened by two failures, 60 s until retry;
    - ``mcp-server``: closed, one failure just now;
    - ``search-tool``: closed, one failure 100 s ago;
    - ``vector-db``: forced open;
    - ``web-fetch``: opened with a zero timeout, so half-open now.
    """
    sql = _sql()
    path = tmp_path / "breakers.db"

    async def write() -> None:
        async with sql.SQLiteStorage(path, staleness=0) as storage:
            model = CircuitBreaker("model-api", storage=storage, failure_threshold=2, timeout=60.0)
            await model.record_failure()
            await model.record_failure()
            await CircuitBreaker("mcp-server", storage=storage).record_failure()
            search = CircuitBreaker(
                "search-tool", storage=storage, clock=lambda: time.time() - 100.0
            )
            await search.record_failure()
            await CircuitBreaker("vector-db", storage=storage).force_open()
            fetch = CircuitBreaker("web-fetch", storage=storage, failure_threshold=1, timeout=0.0)
            await fetch.record_failure()

    anyio.run(write)
    return path


def _state(path: Path, name: str) -> tuple[CircuitState, float]:
    """Read a breaker's state and time until retry from the file, as a new process would."""
    sql = _sql()

    async def read() -> tuple[CircuitState, float]:
        async with sql.SQLiteStorage(path, staleness=0) as storage:
            breaker = CircuitBreaker(name, storage=storage)
            return await breaker.get_state(), breaker.get_time_until_retry()

    result: tuple[CircuitState, float] = anyio.run(read)
    return result


def _table(output: str) -> dict[str, list[str]]:
    """Split ``status``'s table into cells (two or more spaces apart), keyed by name."""
    lines = output.strip().splitlines()
    rows = [[cell for cell in line.split("  ") if cell.strip()] for line in lines]
    return {row[0]: [cell.strip() for cell in row[1:]] for row in rows}


def _error_line(captured: pytest.CaptureFixture[str]) -> str:
    """The one line a command wrote to stderr (no traceback)."""
    err = captured.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("anybreaker: error: ")
    return err


@pytest.mark.processes
def test_python_m_anybreaker_shows_help() -> None:
    """``python -m anybreaker --help`` lists every command and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "anybreaker", "--help"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("status", "reset", "force-open", "demo"):
        assert command in result.stdout


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``anybreaker`` alone prints usage and exits 2."""
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: anybreaker" in capsys.readouterr().err


def test_status_lists_every_breaker_with_its_state(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` prints one aligned row per breaker: state, failures, time until retry."""
    assert main(["status", "--url", _url(database)]) == 0
    output = capsys.readouterr().out
    table = _table(output)
    assert table.pop("NAME") == ["STATE", "FAILURES (60s)", "RETRY IN"]
    assert list(table) == ["mcp-server", "model-api", "search-tool", "vector-db", "web-fetch"]
    assert table["mcp-server"] == ["closed", "1", "-"]
    assert table["search-tool"] == ["closed", "0", "-"]
    assert table["vector-db"] == ["open (forced)", "0", "until reset"]
    assert table["web-fetch"] == ["half_open", "0", "-"]
    state, failures, retry_in = table["model-api"]
    assert (state, failures) == ("open", "0")
    assert 50.0 < float(retry_in.removesuffix("s")) <= 60.0
    header, *rows = output.splitlines()
    assert {row.index(row.split()[1]) for row in rows} == {header.index("STATE")}


def test_status_window_decides_which_failures_count(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--window`` widens the failure count to older failures."""
    assert main(["status", "--url", _url(database), "--window", "200"]) == 0
    table = _table(capsys.readouterr().out)
    assert table["NAME"][1] == "FAILURES (200s)"
    assert table["search-tool"] == ["closed", "1", "-"]


def test_status_json(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``status --json`` prints the same facts as JSON, null time for a forced breaker."""
    assert main(["status", "--url", _url(database), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["mcp-server"] == {
        "name": "mcp-server",
        "state": "closed",
        "forced": False,
        "failures": 1,
        "time_until_retry": 0.0,
    }
    assert rows["vector-db"]["state"] == "open"
    assert rows["vector-db"]["forced"] is True
    assert rows["vector-db"]["time_until_retry"] is None
    assert rows["web-fetch"]["state"] == "half_open"
    assert 50.0 < rows["model-api"]["time_until_retry"] <= 60.0


def test_status_of_an_empty_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``status`` on a database with no breakers says so."""
    sql = _sql()
    path = tmp_path / "empty.db"

    async def create() -> None:
        async with sql.SQLiteStorage(path) as storage:
            await storage.compare_and_set("x", None, BreakerRecord(version=1))
            await storage.delete("x")

    anyio.run(create)
    assert main(["status", "--url", _url(path)]) == 0
    assert capsys.readouterr().out == f"no breakers in {_url(path)}\n"


def test_status_under_trio(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--backend trio`` talks to the storage under trio."""
    pytest.importorskip("trio")
    assert main(["status", "--url", _url(database), "--backend", "trio"]) == 0
    assert _table(capsys.readouterr().out)["vector-db"][0] == "open (forced)"


def test_url_comes_from_the_environment(
    database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--url``, ``$ANYBREAKER_URL`` names the storage."""
    monkeypatch.setenv("ANYBREAKER_URL", _url(database))
    assert main(["status"]) == 0
    assert "model-api" in capsys.readouterr().out


def test_default_url_is_the_demo_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--url`` or the variable, the demo's file is used, and not created."""
    monkeypatch.delenv("ANYBREAKER_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 2
    assert "anybreaker-demo.db" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_reset_closes_the_breaker_for_everyone(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reset NAME`` closes an open breaker in the storage and says what it was."""
    assert main(["reset", "model-api", "--url", _url(database)]) == 0
    assert capsys.readouterr().out == "model-api: open -> closed (history cleared)\n"
    assert _state(database, "model-api") == (CircuitState.CLOSED, 0.0)


def test_reset_clears_failures(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``reset`` of a closed breaker clears the failures it counted."""
    assert main(["reset", "mcp-server", "--url", _url(database)]) == 0
    assert main(["status", "--url", _url(database)]) == 0
    assert _table(capsys.readouterr().out)["mcp-server"] == ["closed", "0", "-"]


def test_force_open_opens_until_reset(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``force-open NAME`` opens the breaker with no time limit; calls are rejected."""
    assert main(["force-open", "mcp-server", "--url", _url(database)]) == 0
    assert capsys.readouterr().out.startswith("mcp-server: closed -> forced open until")
    assert _state(database, "mcp-server") == (CircuitState.OPEN, math.inf)

    sql = _sql()

    async def call() -> None:
        async with (
            sql.SQLiteStorage(database) as storage,
            CircuitBreaker("mcp-server", storage=storage),
        ):
            pytest.fail("the guarded code ran while the breaker was forced open")

    with pytest.raises(CircuitBreakerOpenError) as error:
        anyio.run(call)
    assert error.value.time_until_retry == math.inf


def test_unknown_url_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown URL scheme is one line on stderr naming the known schemes; exit 2."""
    assert main(["status", "--url", "nosuchscheme://somewhere"]) == 2
    error = _error_line(capsys)
    assert "nosuchscheme" in error
    for known in ("memory", "sqlite", "redis", "postgresql"):
        assert known in error


@pytest.mark.parametrize(
    "command", [["status"], ["reset", "model-api"], ["force-open", "model-api"]]
)
def test_missing_sqlite_file_is_not_created(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SQLite URL whose file does not exist is an error; the file is not created."""
    path = tmp_path / "missing.db"
    assert main([*command, "--url", _url(path)]) == 2
    assert str(path) in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["reset", "force-open"])
def test_unknown_breaker_name(
    command: str, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Naming a breaker the storage does not hold is an error listing those it holds."""
    before = database.read_bytes()
    assert main([command, "model-apii", "--url", _url(database)]) == 2
    error = _error_line(capsys)
    assert "'model-apii'" in error
    assert "model-api, search-tool" in error
    assert _state(database, "model-api")[0] is CircuitState.OPEN
    assert database.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_a_storage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a SQLite database fails with one line and exit 1, untouched."""
    _sql()
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    assert main(["status", "--url", _url(path)]) == 1
    assert "storage failed" in _error_line(capsys)
    assert path.read_text() == "not a database\n" * 100


@pytest.mark.server
@pytest.mark.parametrize("kind", ["postgresql+psycopg", "redis"])
def test_status_and_reset_on_a_server_storage(
    kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` and ``reset`` work on the server storages, by URL."""
    from anybreaker import storage_from_url

    if kind == "redis":
        pytest.importorskip(
            "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
        )
        require_server("Redis", REDIS_HOST, REDIS_PORT)
        url = f"{redis_url()}?prefix={unique_name('anybreaker-cli')}"
    else:
        pytest.importorskip(
            "anybreaker.storage.sql", reason="needs anybreaker[postgres]", exc_type=ImportError
        )
        pytest.importorskip("psycopg", reason="needs psycopg")
        require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        url = f"{postgres_url('psycopg')}?table={unique_name('breakers')}"

    async def open_breaker() -> None:
        async with storage_from_url(url) as storage:
            await CircuitBreaker("model-api", storage=storage).force_open()

    async def clean_up() -> None:
        async with storage_from_url(url) as storage:
            if kind == "redis":
                await storage.delete("model-api")
            else:
                from anybreaker.storage.sql import SQLAlchemyStorage, drop_table

                assert isinstance(storage, SQLAlchemyStorage)
                await drop_table(storage)

    anyio.run(open_breaker)
    try:
        assert main(["status", "--url", url]) == 0
        assert _table(capsys.readouterr().out)["model-api"] == [
            "open (forced)",
            "0",
            "until reset",
        ]
        assert main(["reset", "model-api", "--url", url, "--backend", "trio"]) == 0
        assert capsys.readouterr().out == "model-api: open -> closed (history cleared)\n"
    finally:
        anyio.run(clean_up)
