"""Eight processes share one breaker through Redis and through PostgreSQL.

Each process runs ``tests/_fleet_worker.py``; the runtimes alternate
(asyncio, trio, ...) where both are installed, so one fleet mixes them.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from anybreaker import CircuitBreaker

from ._fleet_worker import Boom, open_storage
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
from .conftest import BACKENDS

pytestmark = [pytest.mark.processes, pytest.mark.server]

FLEET = 8
ROOT = Path(__file__).parent.parent
START_DEADLINE = 60.0
"""Seconds eight fresh interpreters may take to import and connect, on a busy CI host."""


@pytest.fixture(params=["redis", "postgresql+psycopg"])
def shared(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Where the fleet keeps its breaker: a fresh prefix or table, removed after."""
    if request.param == "redis":
        pytest.importorskip(
            "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
        )
        require_server("Redis", REDIS_HOST, REDIS_PORT)
        settings: dict[str, Any] = {
            "kind": "redis",
            "url": redis_url(),
            "prefix": unique_name("fleet"),
        }
    else:
        pytest.importorskip(
            "anybreaker.storage.sql", reason="needs anybreaker[postgres]", exc_type=ImportError
        )
        pytest.importorskip("psycopg", reason="needs anybreaker[postgres]")
        require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        settings = {
            "kind": "postgres",
            "url": postgres_url("psycopg"),
            "table": unique_name("fleet"),
        }
    settings.update(name="model-api", staleness=0.1)
    yield settings
    anyio.run(remove_everything, settings)


async def remove_everything(settings: dict[str, Any]) -> None:
    """Delete what a test stored: the prefix's records, or the table."""
    async with open_storage(settings) as storage:
        if settings["kind"] == "redis":
            for name in await storage.names():
                await storage.delete(name)
        else:
            from anybreaker.storage.sql import SQLAlchemyStorage, drop_table

            assert isinstance(storage, SQLAlchemyStorage)
            await drop_table(storage)


def run_fleet(tmp_path: Path, settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start one worker per settings, release them together, return their reports."""
    processes: list[subprocess.Popen[str]] = []
    try:
        for index, worker in enumerate(settings):
            worker["ready_file"] = str(tmp_path / f"ready-{index}")
            worker["runtime"] = BACKENDS[index % len(BACKENDS)]
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests._fleet_worker", json.dumps(worker)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + START_DEADLINE
        while not all(Path(worker["ready_file"]).exists() for worker in settings):
            exited = [p for p in processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for process in processes:
            if process.poll() is None:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=START_DEADLINE)
            assert process.returncode == 0, f"a worker failed:\n{err}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def test_an_opening_by_one_process_is_seen_by_all_within_staleness(
    shared: dict[str, Any], tmp_path: Path
) -> None:
    """After one process stores an opening, no process admits a call past staleness."""
    config = {"failure_threshold": 1, "timeout": 60.0}
    workers = [
        {
            **shared,
            "scenario": "opening",
            "config": config,
            "role": "opener" if index == 0 else "caller",
            "open_delay": 0.3,
        }
        for index in range(FLEET)
    ]
    reports = run_fleet(tmp_path, workers)

    stored_at = reports[0]["stored_at"]
    assert stored_at is not None
    for report in reports:
        assert report["refused_at"] is not None, "a process never saw the opening"
        late = [t for t in report["admitted"] if t >= stored_at + shared["staleness"]]
        assert late == [], "a call was admitted after the staleness bound"
    # The bound was exercised: processes were calling while the opening landed.
    assert sum(len(report["admitted"]) for report in reports) > FLEET


def test_half_open_runs_exactly_one_trial_at_a_time_across_processes(
    shared: dict[str, Any], tmp_path: Path
) -> None:
    """In half-open, trial calls from eight processes never overlap."""
    config = {
        "failure_threshold": 1,
        "timeout": 0.2,
        "half_open_max_calls": 1,
        # Trials that succeed keep it half-open, so the whole run is trials.
        "success_threshold": 1_000_000,
    }
    anyio.run(open_breaker, shared, config)
    workers = [
        {**shared, "scenario": "half_open", "config": config}
        # Each process rests past staleness after its own trial, so that
        # several processes run trials and the check below has pairs to
        # compare across processes.
        | {"duration": 1.5, "trial_seconds": 0.01, "rest_seconds": 2 * shared["staleness"]}
        for _ in range(FLEET)
    ]
    reports = run_fleet(tmp_path, workers)

    trials = sorted(
        (start, end, index)
        for index, report in enumerate(reports)
        for start, end in report["trials"]
    )
    assert len(trials) >= 2
    assert len({index for _, _, index in trials}) >= 2, "only one process ran trials"
    assert sum(report["refused"] for report in reports) > 0
    for (_, end, _), (start, _, _) in itertools.pairwise(trials):
        assert end <= start, "two trial calls ran at once"


async def open_breaker(settings: dict[str, Any], config: dict[str, Any]) -> None:
    """Open the shared breaker from this process."""
    async with open_storage(settings) as storage:
        breaker = CircuitBreaker(settings["name"], storage=storage, **config)
        with pytest.raises(Boom):
            async with breaker:
                raise Boom
