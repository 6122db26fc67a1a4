"""The command line, as an operator uses it, on SQLite, PostgreSQL and Redis.

Each test runs ``anybreaker`` against a storage URL under the runtime under
test (``--backend``), and checks what it prints, its exit code, and what
every other process sharing the storage then sees. The demo has its own
tests in ``test_demo.py``.
"""

from __future__ import annotations

import json
import math
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from anybreaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    Storage,
)
from anybreaker.__main__ import main
from anybreaker.testing import FakeClock

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

SUBPROCESS_TIMEOUT = 60
KINDS = ["sqlite", "postgresql", "redis"]
T = TypeVar("T")


# -- storages ---------------------------------------------------------------


def _sql() -> Any:
    return pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
    )


def _url_of(kind: str, tmp_path: Path) -> str:
    """A URL of a fresh, empty storage of ``kind``; skip if it cannot be had here."""
    if kind == "sqlite":
        _sql()
        return f"sqlite:///{tmp_path / 'breakers.db'}"
    if kind == "postgresql":
        _sql()
        pytest.importorskip("psycopg", reason="needs anybreaker[postgres]")
        require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        return f"{postgres_url('psycopg')}?table={unique_name('breakers')}"
    pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    return f"{redis_url()}?prefix={unique_name('anybreaker-cli')}"


def _on(url: str, backend: str, use: Callable[[Storage], Awaitable[T]]) -> T:
    """Open the storage at ``url``, as another process would, and ``use`` it."""
    from anybreaker import storage_from_url

    async def run() -> T:
        async with storage_from_url(url, staleness=0) as storage:
            return await use(storage)

    result: T = anyio.run(run, backend=backend)
    return result


async def _remove_all(storage: Storage) -> None:
    sql = sys.modules.get("anybreaker.storage.sql")
    if sql is not None and isinstance(storage, sql.SQLAlchemyStorage):
        await sql.drop_table(storage)
    else:
        for name in await storage.names():
            await storage.delete(name)


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str) -> Iterator[str]:
    """The URL of an empty storage of each kind; what the test stored is removed after."""
    made = _url_of(request.param, tmp_path)
    yield made
    if request.param != "sqlite":
        _on(made, anyio_backend, _remove_all)


async def _store_breakers(storage: Storage) -> None:
    """Breakers in every state an operator meets, written as applications write them.

    - ``mcp-server``: closed; 3 successes and 1 failure in its window;
    - ``model-api``: opened by 2 failures, 60 s until retry;
    - ``search-tool``: closed; 2 calls, 1 of them slow (over 1 s);
    - ``vector-db``: forced open;
    - ``web-fetch``: half-open, its one trial permit held.
    """
    mcp = CircuitBreaker("mcp-server", storage=storage)
    for _ in range(3):
        assert await mcp.allow_request()
        await mcp.record_success()
    assert await mcp.allow_request()
    await mcp.record_failure()
    await mcp.get_window_stats()  # writes the successes it holds

    model = CircuitBreaker("model-api", storage=storage, failure_threshold=2, timeout=60.0)
    for _ in range(2):
        assert await model.allow_request()
        await model.record_failure()

    clock = FakeClock(time.time())
    search = CircuitBreaker(
        "search-tool",
        storage=storage,
        clock=clock,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.9,  # not met: 2 calls are fewer than minimum_calls
    )
    for seconds in (0.5, 1.5):
        async with search:
            clock.advance(seconds)
    await search.get_window_stats()

    await CircuitBreaker("vector-db", storage=storage).force_open()

    fetch = CircuitBreaker("web-fetch", storage=storage, failure_threshold=1, timeout=0.0)
    assert await fetch.allow_request()
    await fetch.record_failure()
    assert await fetch.allow_request()  # the trial permit, never reported


@pytest.fixture
def breakers(url: str, anyio_backend: str) -> str:
    """The URL of a storage holding ``_store_breakers``'s breakers."""
    _on(url, anyio_backend, _store_breakers)
    return url


def _state(url: str, backend: str, name: str) -> tuple[CircuitState, float]:
    """A breaker's state and time until retry, read from the storage by a new breaker object."""

    async def read(storage: Storage) -> tuple[CircuitState, float]:
        breaker = CircuitBreaker(name, storage=storage)
        return await breaker.get_state(), breaker.get_time_until_retry()

    return _on(url, backend, read)


# -- running the command ------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], backend: str, *argv: str) -> tuple[int, str, str]:
    """Run ``anybreaker ARGV --backend BACKEND``; return the exit code, stdout and stderr."""
    code = main([*argv, "--backend", backend])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _table(output: str) -> dict[str, list[str]]:
    """Split ``status``'s table into cells (two or more spaces apart), keyed by name."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]
    return {row[0]: row[1:] for row in rows}


def _error_line(err: str) -> str:
    """The one line a failed command wrote to stderr (no traceback)."""
    assert err.count("\n") == 1, err
    assert err.startswith("anybreaker: error: ")
    return err


# -- status ---------------------------------------------------------------------


def test_status_shows_state_retry_window_and_trials(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` prints one aligned row per breaker: state, retry, window counts, trials."""
    code, out, _ = _cli(capsys, anyio_backend, "status", "--url", breakers)
    assert code == 0
    table = _table(out)
    assert table.pop("NAME") == [
        "STATE",
        "RETRY IN",
        "WINDOW",
        "CALLS",
        "FAILURES",
        "RATE",
        "SLOW",
        "TRIALS",
    ]
    assert list(table) == ["mcp-server", "model-api", "search-tool", "vector-db", "web-fetch"]
    assert table["mcp-server"] == ["closed", "-", "60s", "4", "1", "25%", "0", "-"]
    assert table["search-tool"] == ["closed", "-", "60s", "2", "0", "0%", "1", "-"]
    assert table["vector-db"][:2] == ["open (forced)", "until reset"]
    state, retry_in, *window = table["model-api"]
    assert state == "open"
    assert 50.0 < float(retry_in.removesuffix("s")) <= 60.0
    assert window == ["60s", "2", "2", "100%", "0", "-"]
    state, retry_in, *_, trials = table["web-fetch"]
    assert (state, retry_in) == ("half_open", "-")
    held = re.fullmatch(r"1 \(expires in (?P<seconds>[\d.]+)s\)", trials)
    assert held is not None, trials
    assert 110.0 < float(held["seconds"]) <= 120.0
    header, *lines = out.splitlines()
    assert {line.index(line.split()[1]) for line in lines} == {header.index("STATE")}


def test_status_json(breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``status --json`` prints the same facts for scripts, in the documented shape."""
    code, out, _ = _cli(capsys, anyio_backend, "status", "--url", breakers, "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert list(rows) == ["mcp-server", "model-api", "search-tool", "vector-db", "web-fetch"]
    assert rows["mcp-server"] == {
        "name": "mcp-server",
        "state": "closed",
        "forced": False,
        "time_until_retry": 0.0,
        "window": {
            "seconds": 60.0,
            "calls": 4,
            "failures": 1,
            "failure_rate": 0.25,
            "slow_calls": 0,
            "consecutive_failures": 1,
        },
        "trials": [],
    }
    assert rows["search-tool"]["window"]["slow_calls"] == 1
    assert rows["vector-db"]["state"] == "open"
    assert rows["vector-db"]["forced"] is True
    assert rows["vector-db"]["time_until_retry"] is None
    assert 50.0 < rows["model-api"]["time_until_retry"] <= 60.0
    (trial,) = rows["web-fetch"]["trials"]
    assert rows["web-fetch"]["state"] == "half_open"
    assert 110.0 < trial["expires_in"] <= 120.0
    assert abs(trial["granted_at"] - time.time()) < 10.0


def test_status_fail_if_open(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status --fail-if-open`` exits 3 while some breaker is open, and 0 once none is."""
    assert _cli(capsys, anyio_backend, "status", "--url", breakers, "--fail-if-open")[0] == 3
    for name in ("model-api", "vector-db"):
        assert _cli(capsys, anyio_backend, "reset", name, "--url", breakers)[0] == 0
    code, out, _ = _cli(capsys, anyio_backend, "status", "--url", breakers, "--fail-if-open")
    assert code == 0
    assert "open" not in [row[0] for row in _table(out).values()]


def test_status_trial_lease_option(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--trial-lease`` says when the breakers' trial permits expire."""
    code, out, _ = _cli(
        capsys, anyio_backend, "status", "--url", breakers, "--json", "--trial-lease", "30"
    )
    assert code == 0
    (web_fetch,) = [row for row in json.loads(out) if row["name"] == "web-fetch"]
    assert 20.0 < web_fetch["trials"][0]["expires_in"] <= 30.0


def test_status_of_an_empty_storage(
    url: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` on a storage with no breakers says so, and ``--json`` prints ``[]``."""

    async def create_empty(storage: Storage) -> None:
        await storage.compare_and_set("x", None, BreakerRecord(version=1))
        await storage.delete("x")

    _on(url, anyio_backend, create_empty)
    assert _cli(capsys, anyio_backend, "status", "--url", url) == (0, f"no breakers in {url}\n", "")
    assert _cli(capsys, anyio_backend, "status", "--url", url, "--json") == (0, "[]\n", "")


# -- open-for, force-open, reset ---------------------------------------------------


def test_open_for_opens_for_exactly_that_long(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``open-for NAME SECONDS`` opens the breaker for that long, for every process."""
    code, out, err = _cli(capsys, anyio_backend, "open-for", "mcp-server", "300", "--url", breakers)
    assert (code, err) == (0, "")
    assert re.fullmatch(r"mcp-server: closed -> open for 300 s, until \d\d:\d\d:\d\d\n", out)
    state, retry = _state(breakers, anyio_backend, "mcp-server")
    assert state is CircuitState.OPEN
    assert 290.0 < retry <= 300.0

    async def call_at(seconds_from_now: float, storage: Storage) -> bool:
        clock = FakeClock(time.time() + seconds_from_now)
        return await CircuitBreaker("mcp-server", storage=storage, clock=clock).allow_request()

    assert not _on(breakers, anyio_backend, lambda storage: call_at(290.0, storage))
    assert _on(breakers, anyio_backend, lambda storage: call_at(301.0, storage))


def test_open_for_shows_in_status(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A breaker opened with ``open-for`` shows as open with its time until retry."""
    assert _cli(capsys, anyio_backend, "open-for", "web-fetch", "90", "--url", breakers)[0] == 0
    code, out, _ = _cli(capsys, anyio_backend, "status", "--url", breakers)
    assert code == 0
    state, retry_in, *_ = _table(out)["web-fetch"]
    assert state == "open"
    assert 80.0 < float(retry_in.removesuffix("s")) <= 90.0


@pytest.mark.parametrize("command", [["force-open"], ["open-for", "300"]], ids=lambda c: c[0])
def test_opening_a_new_name_notes_it(
    command: list[str], breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening a breaker no process has used yet works, with a note on stderr naming it."""
    name, *seconds = ["gpt-4o", *command[1:]]
    code, out, err = _cli(capsys, anyio_backend, command[0], name, *seconds, "--url", breakers)
    assert code == 0
    assert out.startswith("gpt-4o: closed -> ")
    assert err == (
        f"anybreaker: note: 'gpt-4o' is a new breaker name in {breakers} (breakers: "
        "mcp-server, model-api, search-tool, vector-db, web-fetch); "
        "every process that uses this name will find it open\n"
    )
    state, retry = _state(breakers, anyio_backend, "gpt-4o")
    assert state is CircuitState.OPEN
    assert retry == (math.inf if command == ["force-open"] else pytest.approx(300.0, abs=10.0))


def test_force_open_opens_until_reset(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``force-open NAME`` opens the breaker with no time limit: its calls are rejected."""
    code, out, err = _cli(capsys, anyio_backend, "force-open", "mcp-server", "--url", breakers)
    assert (code, err) == (0, "")
    assert out == "mcp-server: closed -> forced open until `anybreaker reset mcp-server`\n"
    assert _state(breakers, anyio_backend, "mcp-server") == (CircuitState.OPEN, math.inf)

    async def call(storage: Storage) -> None:
        async with CircuitBreaker("mcp-server", storage=storage):
            pytest.fail("the guarded code ran while the breaker was forced open")

    with pytest.raises(CircuitBreakerOpenError) as error:
        _on(breakers, anyio_backend, call)
    assert error.value.time_until_retry == math.inf


def test_reset_closes_and_clears_the_window(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reset NAME`` closes the breaker for every process and clears its counts."""
    code, out, _ = _cli(capsys, anyio_backend, "reset", "model-api", "--url", breakers)
    assert (code, out) == (0, "model-api: open -> closed (history cleared)\n")
    assert _state(breakers, anyio_backend, "model-api") == (CircuitState.CLOSED, 0.0)
    code, out, _ = _cli(capsys, anyio_backend, "status", "--url", breakers, "--json")
    (model,) = [row for row in json.loads(out) if row["name"] == "model-api"]
    assert model["window"]["calls"] == model["window"]["failures"] == 0


def test_reset_of_an_unknown_name_is_an_error(
    breakers: str, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reset`` of a name the storage does not hold is an error listing those it holds."""
    code, _, err = _cli(capsys, anyio_backend, "reset", "model-apii", "--url", breakers)
    assert code == 2
    assert _error_line(err) == (
        f"anybreaker: error: no breaker named 'model-apii' in {breakers} (breakers: "
        "mcp-server, model-api, search-tool, vector-db, web-fetch)\n"
    )
    assert "model-apii" not in _on(breakers, anyio_backend, lambda storage: storage.names())


# -- watch ---------------------------------------------------------------------


class _Terminal:
    """What a process wrote to a pseudo-terminal or a pipe, read as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def read_until(self, done: Callable[[str], bool], timeout: float = SUBPROCESS_TIMEOUT) -> None:
        """Read until ``done(text)`` or the end of the output; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.text):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; the terminal shows:\n{self.text}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # a pseudo-terminal whose process ended
                    data = b""
                if not data:
                    return
                self.text += data.decode()


def _watch(url: str, backend: str, *, tty: bool) -> tuple[subprocess.Popen[bytes], _Terminal]:
    """Start ``anybreaker watch`` redrawing every 0.05 s, on a pseudo-terminal or a pipe."""
    command = [sys.executable, "-m", "anybreaker", "watch", "--url", url]
    command += ["--backend", backend, "--interval", "0.05"]
    if tty:
        reader, writer = pty.openpty()
    else:
        reader, writer = os.pipe()
    process = subprocess.Popen(
        command,
        stdout=writer,
        stderr=writer,
        stdin=subprocess.DEVNULL,
        preexec_fn=_ctrl_c_heard,
    )
    os.close(writer)
    return process, _Terminal(reader)


def _ctrl_c_heard() -> None:
    """Let the child hear SIGINT as a program started from a terminal does.

    A runner started in the background (``make test &``, ``nohup``) ignores
    SIGINT, its children inherit that, and Python then installs no
    KeyboardInterrupt handler.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(process: subprocess.Popen[bytes], terminal: _Terminal) -> int:
    """Press Ctrl-C (SIGINT); return the exit code."""
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=SUBPROCESS_TIMEOUT)
    terminal.read_until(lambda text: False)  # the rest, until the end
    os.close(terminal.fd)
    return code


async def _force_open(name: str, storage: Storage) -> None:
    await CircuitBreaker(name, storage=storage).force_open()


@pytest.mark.processes
def test_watch_redraws_until_ctrl_c(breakers: str, anyio_backend: str) -> None:
    """``watch`` redraws the table in place, shows a change made meanwhile; Ctrl-C exits 0."""
    clear = "\x1b[H\x1b[2J"
    process, terminal = _watch(breakers, anyio_backend, tty=True)
    try:
        terminal.read_until(lambda text: text.count(clear) >= 2)
        title, *rows = terminal.text.split(clear)[1].strip().splitlines()
        assert re.fullmatch(
            re.escape(breakers) + r" at \d\d:\d\d:\d\d, every 0\.05s \(Ctrl-C to stop\)", title
        )
        assert _table("\n".join(rows))["mcp-server"][0] == "closed"

        _on(breakers, anyio_backend, lambda storage: _force_open("mcp-server", storage))

        def mcp_server_forced_open(text: str) -> bool:
            *_, last, _ = text.split(clear)  # the last frame drawn in full
            return _table("\n".join(last.strip().splitlines()[1:]))["mcp-server"][0] == (
                "open (forced)"
            )

        terminal.read_until(mcp_server_forced_open)
    finally:
        code = _stop(process, terminal)
    assert code == 0
    assert "Traceback" not in terminal.text


@pytest.mark.processes
def test_watch_into_a_pipe_and_through_a_storage_outage(anyio_backend: str, tmp_path: Path) -> None:
    """Into a pipe, ``watch`` appends frames; a storage that fails is shown, and retried."""
    pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )
    url = "redis://127.0.0.1:1/0"  # nobody listens on port 1
    process, terminal = _watch(url, anyio_backend, tty=False)
    try:
        terminal.read_until(lambda text: text.count("storage failed") >= 2)
    finally:
        code = _stop(process, terminal)
    assert code == 0
    frames = terminal.text.strip().split("\n\n")
    assert len(frames) >= 2
    for frame in frames[:2]:
        title, message = frame.splitlines()
        assert title.startswith(f"{url} at ")
        assert message.startswith("storage failed: ")
        assert message.endswith(" (trying again)")
    assert "\x1b" not in terminal.text


@pytest.mark.parametrize(
    ("command", "runs", "code"), [("watch", "_watch", 0), ("status", "_read", 130)]
)
def test_ctrl_c_inside_a_task_group_is_still_ctrl_c(
    command: str,
    runs: str,
    code: int,
    anyio_backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C while a driver runs a task group ends the command as Ctrl-C, with no traceback."""

    async def interrupted(*args: object) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep_forever)
            raise KeyboardInterrupt

    monkeypatch.setattr(f"anybreaker.__main__.{runs}", interrupted)
    url = f"sqlite:///{tmp_path / 'breakers.db'}"
    assert _cli(capsys, anyio_backend, command, "--url", url)[::2] == (code, "")


# -- which storage, and errors --------------------------------------------------


def test_url_comes_from_the_environment(
    breakers: str,
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without ``--url``, ``$ANYBREAKER_URL`` names the storage."""
    monkeypatch.setenv("ANYBREAKER_URL", breakers)
    code, out, _ = _cli(capsys, anyio_backend, "status")
    assert code == 0
    assert "model-api" in _table(out)


def test_default_url_is_the_demo_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--url`` or the variable, the demo's file is used, and not created."""
    monkeypatch.delenv("ANYBREAKER_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 2
    assert _error_line(capsys.readouterr().err) == (
        "anybreaker: error: no SQLite database at anybreaker-demo.db (not creating one); "
        "run `anybreaker demo` first, or give --url\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [["status"], ["watch"], ["reset", "x"], ["force-open", "x"], ["open-for", "x", "60"]],
    ids=lambda command: command[0],
)
def test_missing_sqlite_file_is_not_created(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SQLite URL whose file does not exist is an error (exit 2); the file is not created."""
    path = tmp_path / "missing.db"
    assert main([*command, "--url", f"sqlite:///{path}"]) == 2
    assert str(path) in _error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_unknown_url_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown URL scheme is one line on stderr naming the known schemes; exit 2."""
    assert main(["status", "--url", "nosuchscheme://somewhere"]) == 2
    error = _error_line(capsys.readouterr().err)
    assert "nosuchscheme" in error
    for known in ("memory", "sqlite", "redis", "postgresql"):
        assert known in error


def test_a_file_that_is_not_sqlite_is_a_storage_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a SQLite database fails with one line and exit 1, untouched."""
    _sql()
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    assert main(["status", "--url", f"sqlite:///{path}"]) == 1
    assert _error_line(capsys.readouterr().err).startswith("anybreaker: error: storage failed: ")
    assert path.read_text() == "not a database\n" * 100


def test_an_unreachable_server_is_a_storage_failure(capsys: pytest.CaptureFixture[str]) -> None:
    """A server nobody answers at fails ``status`` with one line and exit 1."""
    pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )
    assert main(["status", "--url", "redis://127.0.0.1:1/0"]) == 1
    assert _error_line(capsys.readouterr().err).startswith("anybreaker: error: storage failed: ")


@pytest.mark.processes
def test_a_password_in_the_url_is_not_shown(anyio_backend: str) -> None:
    """Where the command prints the storage URL, the URL's password is hidden."""
    pytest.importorskip(
        "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
    )
    process, terminal = _watch("redis://ops:s3cret@127.0.0.1:1/0", anyio_backend, tty=False)
    try:
        terminal.read_until(lambda text: "storage failed" in text)
    finally:
        _stop(process, terminal)
    assert "s3cret" not in terminal.text
    assert terminal.text.strip().startswith("redis://ops:***@127.0.0.1:1/0 at ")


@pytest.mark.parametrize("seconds", ["0", "-5", "nan", "inf", "soon"])
def test_open_for_needs_a_finite_positive_duration(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``open-for`` refuses a duration that is not a finite number above 0 (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["open-for", "model-api", seconds])
    assert exit_info.value.code == 2
    assert "SECONDS" in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``anybreaker`` alone prints usage and exits 2."""
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: anybreaker" in capsys.readouterr().err


@pytest.mark.processes
def test_help_is_the_one_the_docs_show() -> None:
    """``anybreaker --help`` lists every command, as docs/cli.md shows it."""
    result = subprocess.run(
        [sys.executable, "-m", "anybreaker", "--help"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    for command in ("status", "watch", "reset", "force-open", "open-for", "demo"):
        assert f"    {command}" in result.stdout
    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    shown = docs.partition("$ anybreaker --help\n")[2].partition("```")[0]
    # Python versions lay the help out differently, with the same words.
    assert shown.split() == result.stdout.split()
