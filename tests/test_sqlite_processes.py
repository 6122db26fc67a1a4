"""Real processes sharing breakers through one SQLite file: restarts, crowds, crashes."""

from __future__ import annotations

import json
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from anybreaker import BreakerRecord, CircuitBreaker, CircuitState

sql = pytest.importorskip(
    "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
)

pytestmark = pytest.mark.processes

WORKER = Path(__file__).with_name("_sqlite_worker.py")
WAIT = 60.0
"""Seconds the test waits for any one child before it fails."""


def start(command: str, settings: dict[str, Any]) -> subprocess.Popen[str]:
    """Start a worker child running ``command``."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), command, json.dumps(settings)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(child: subprocess.Popen[str], expected: str) -> None:
    """Read the child's output until ``expected``; fail if it takes longer than ``WAIT``."""
    assert child.stdout is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
        if not readable:
            break
        line = child.stdout.readline()
        if line.strip() == expected:
            return
        if not line:
            break
    child.kill()
    _, errors = child.communicate(timeout=WAIT)
    pytest.fail(f"worker did not say {expected!r}: {errors}")


def ask(child: subprocess.Popen[str], request: str) -> Any:
    """Send a ``serve`` worker one request; return its answer."""
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(request + "\n")
    child.stdin.flush()
    readable, _, _ = select.select([child.stdout], [], [], WAIT)
    line = child.stdout.readline() if readable else ""
    if not line:
        child.kill()
        _, errors = child.communicate(timeout=WAIT)
        pytest.fail(f"worker did not answer {request!r}: {errors}")
    return json.loads(line)


def finish(child: subprocess.Popen[str]) -> dict[str, Any]:
    """Let the child end; return the JSON it printed last."""
    output, errors = child.communicate(timeout=WAIT)
    assert child.returncode == 0, errors
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def run(command: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Run a worker to the end and return what it saw."""
    return finish(start(command, settings))


@contextmanager
def children(command: str, settings: list[dict[str, Any]]) -> Iterator[list[Any]]:
    """Start one child per settings, wait until each is ready, then let them all go.

    Yields the list their results are put in once every child has finished.
    """
    started = [start(command, each) for each in settings]
    results: list[Any] = []
    try:
        for child in started:
            wait_for_line(child, "ready")
        for child in started:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results.extend(finish(child) for child in started)
        yield results
    finally:
        for child in started:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=WAIT)


def stored(path: Path, name: str) -> Any:
    """The record stored under ``name`` in the file at ``path``."""

    async def read() -> Any:
        async with sql.SQLiteStorage(path) as storage:
            return await storage.get(name)

    return anyio.run(read)


def test_a_restarted_process_finds_the_breaker_open_then_half_open(tmp_path: Path) -> None:
    """A process trips the breaker and exits; the next finds it open, then half-open on time."""
    path = str(tmp_path / "breakers.db")
    common = {"path": path, "timeout": 30.0, "failure_threshold": 3}
    tripped = run("trip", {**common, "runtime": "trio"})
    assert tripped["state"] == "open"

    restarted = run("inspect", common)
    assert restarted["state"] == "open"
    # The open period counts from the first process's failure, not from the restart.
    assert 20 < restarted["time_until_retry"] <= 30
    assert restarted["trial"] == "rejected"
    assert restarted["state_after"] == "open"

    later = run("inspect", {**common, "offset": 31.0, "runtime": "trio"})
    assert later["state"] == "half_open"
    assert later["time_until_retry"] == 0
    assert later["trial"] == "ran"
    assert later["state_after"] == "closed"
    assert stored(Path(path), "model-api").state is CircuitState.CLOSED


def test_processes_failing_together_open_the_breaker_once(tmp_path: Path) -> None:
    """Four processes failing at once open the breaker once and see only their own errors."""
    path = str(tmp_path / "breakers.db")
    settings = [
        {
            "path": path,
            "calls": 12,
            "failure_threshold": 5,
            "timeout": 600.0,
            "runtime": ("asyncio", "trio")[index % 2],
        }
        for index in range(4)
    ]
    with children("fail", settings) as results:
        pass
    for result in results:
        assert set(result["outcomes"]) <= {"Boom", "CircuitBreakerOpenError"}, result
        assert sum(result["outcomes"].values()) == 12
        assert result["changes"] in ([], ["closed->open"])
        assert result["warnings"] == []
    failures = sum(result["outcomes"].get("Boom", 0) for result in results)
    assert failures >= 5
    assert any(result["outcomes"].get("CircuitBreakerOpenError") for result in results)
    record = stored(Path(path), "model-api")
    assert record.state is CircuitState.OPEN
    # One state change in all: closed -> open, once.
    assert (record.generation, record.openings) == (1, 1)


def test_in_half_open_one_trial_runs_at_a_time_across_processes(tmp_path: Path) -> None:
    """With half_open_max_calls=1, four processes never run two trial calls at once."""
    path = tmp_path / "breakers.db"

    async def trip() -> None:
        async with sql.SQLiteStorage(path) as storage:
            breaker = CircuitBreaker("model-api", storage=storage, timeout=5, failure_threshold=1)
            await breaker.record_failure(RuntimeError("down"))

    anyio.run(trip)
    settings = [
        {
            "path": str(path),
            "marker": str(tmp_path / "trial-running"),
            "attempts": 40,
            "offset": 10.0,
            "timeout": 5.0,
            # Successes keep it half-open, so the trials go on.
            "success_threshold": 1_000_000,
            "half_open_max_calls": 1,
            "runtime": ("asyncio", "trio")[index % 2],
        }
        for index in range(4)
    ]
    with children("trials", settings) as results:
        pass
    assert [result["overlaps"] for result in results] == [0, 0, 0, 0]
    assert all(result["warnings"] == [] for result in results)
    assert sum(result["ran"] for result in results) >= 4
    assert sum(result["rejected"] for result in results) >= 1
    record = stored(path, "model-api")
    assert record.state is CircuitState.HALF_OPEN
    assert record.trials == ()


def test_a_process_that_read_and_closed_the_file_loses_no_later_write(tmp_path: Path) -> None:
    """After another process reads the file and closes, a third sees the next write."""
    path = tmp_path / "breakers.db"

    async def create() -> None:
        async with sql.SQLiteStorage(path) as storage:
            assert await storage.compare_and_set("search-tool", None, BreakerRecord(version=1))

    # The file and its tables exist: the writer reads (and so connects)
    # before its first write checks the file and sets up.
    anyio.run(create)
    writer = start("serve", {"path": str(path), "runtime": "trio"})
    others: list[subprocess.Popen[str]] = []
    try:
        wait_for_line(writer, "ready")
        assert ask(writer, "get model-api") == {"version": None}
        assert ask(writer, "cas model-api none 1") == {"stored": True}

        # What an operator's `anybreaker status` does: open, read, close.
        reader = start("serve", {"path": str(path)})
        others.append(reader)
        wait_for_line(reader, "ready")
        assert ask(reader, "get model-api") == {"version": 1}
        assert finish(reader)["answered"] == 1

        assert ask(writer, "cas model-api 1 2") == {"stored": True}

        third = start("serve", {"path": str(path), "runtime": "trio"})
        others.append(third)
        wait_for_line(third, "ready")
        assert ask(third, "get model-api") == {"version": 2}
        assert ask(third, "cas model-api 1 2") == {"stored": False}
        assert ask(writer, "cas model-api 1 2") == {"stored": False}
        assert finish(third)["answered"] == 2
        assert finish(writer)["answered"] == 4
    finally:
        for child in (writer, *others):
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=WAIT)
    assert stored(path, "model-api").version == 2


def test_a_process_killed_mid_write_leaves_a_sound_database(tmp_path: Path) -> None:
    """SIGKILL in the middle of writes: the file passes integrity_check and the breaker works."""
    path = tmp_path / "breakers.db"
    names = ["model-api", "search-tool", "mcp-server"]
    hammers = [
        start("hammer", {"path": str(path), "names": names, "runtime": runtime})
        for runtime in ("asyncio", "trio", "asyncio", "trio")
    ]
    try:
        for child in hammers:
            wait_for_line(child, "ready")
        # Let their writes interleave for a moment before the kill.
        time.sleep(0.3)
    finally:
        for child in hammers:
            child.send_signal(signal.SIGKILL)
        for child in hammers:
            child.communicate(timeout=WAIT)
    assert [child.returncode for child in hammers] == [-signal.SIGKILL] * 4

    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()

    async def use() -> None:
        async with sql.SQLiteStorage(path, staleness=0) as storage:
            assert sorted(await storage.names()) == sorted(names)
            breaker = CircuitBreaker("model-api", storage=storage, failure_threshold=2)
            await breaker.reset()
            assert await breaker.get_state() is CircuitState.CLOSED
            await breaker.record_failure(RuntimeError("down"))
            await breaker.record_failure(RuntimeError("down"))
            assert await breaker.get_state() is CircuitState.OPEN

    anyio.run(use)
