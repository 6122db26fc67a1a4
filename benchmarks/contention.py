"""Contention: several processes, many tasks each, failing on one breaker at once.

This is the outage path: every caller fails together and every failure must
reach the shared window. ``PROCESSES`` worker processes each run ``TASKS``
concurrent tasks, and each task records ``failures`` failures on one breaker
(a threshold never reached, a window of an hour, so nothing expires during
the run). Measured per storage, for anybreaker (under asyncio and trio, and
through the asyncio-only drivers) and for grelmicro (asyncio only), in the
same rounds:

- the wall time, from the common start until the last process is done;
- outcomes lost: the failures the callers saw, minus the failures the
  breaker counts afterwards (anybreaker: ``get_window_stats().failures``
  read once every process has finished; grelmicro: the consecutive-error
  count its backend stores);
- the latency of a failing call under that load (p50 and p99 over every
  call of the run).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from libraries import NEVER
from storages import KINDS_BY_KEY, Place, drop, missing, open_storage, server_down
from timing import median, paired_ratio
from workers import grelmicro_backend

BREAKER = "bench"
PROCESSES = 4
TASKS = 10
WINDOW = 3600.0

ANYBREAKER_SETTINGS: dict[str, Any] = {"failure_threshold": NEVER, "window_size": WINDOW}
GRELMICRO_SETTINGS: dict[str, Any] = {"error_threshold": NEVER}

P99_TARGET = 0.050


@dataclass
class Contender:
    """One breaker on one database, through one driver."""

    key: str
    library: str
    database: str
    """"sqlite", "postgresql" or "redis": contenders on one database are compared."""
    place_kind: str
    """anybreaker: a storage kind of ``storages.KINDS``; grelmicro: its backend's name."""
    runtimes: tuple[str, ...]
    driver: str

    @property
    def label(self) -> str:
        """How the tables name it."""
        return f"{self.library} ({self.driver})"

    def unavailable(self) -> str | None:
        """Why this contender cannot run here, or ``None``."""
        if self.library == "anybreaker":
            return KINDS_BY_KEY[self.place_kind].unavailable()
        modules = {
            "sqlite": ("grelmicro.resilience", "aiosqlite"),
            "postgresql": ("grelmicro.resilience", "asyncpg"),
            "redis": ("grelmicro.resilience", "redis"),
        }[self.database]
        reason = missing(*modules)
        if reason is None and self.database != "sqlite":
            server = KINDS_BY_KEY["redis" if self.database == "redis" else "postgresql+psycopg"]
            assert server.server is not None
            reason = server_down(*server.server)
        return reason


BOTH = ("asyncio", "trio")
CONTENDERS: list[Contender] = [
    Contender("anybreaker:sqlite", "anybreaker", "sqlite", "sqlite", BOTH, "sqlite3 in a thread"),
    Contender(
        "anybreaker:sqlite+aiosqlite",
        "anybreaker",
        "sqlite",
        "sqlite+aiosqlite",
        ("asyncio",),
        "aiosqlite",
    ),
    Contender("grelmicro:sqlite", "grelmicro", "sqlite", "sqlite", ("asyncio",), "aiosqlite"),
    Contender(
        "anybreaker:postgresql+psycopg",
        "anybreaker",
        "postgresql",
        "postgresql+psycopg",
        BOTH,
        "psycopg in a thread",
    ),
    Contender(
        "anybreaker:postgresql+asyncpg",
        "anybreaker",
        "postgresql",
        "postgresql+asyncpg",
        ("asyncio",),
        "asyncpg",
    ),
    Contender(
        "grelmicro:postgresql", "grelmicro", "postgresql", "postgresql", ("asyncio",), "asyncpg"
    ),
    Contender("anybreaker:redis", "anybreaker", "redis", "redis", BOTH, "coredis"),
    Contender("grelmicro:redis", "grelmicro", "redis", "redis", ("asyncio",), "redis-py asyncio"),
]
CONTENDERS_BY_KEY = {contender.key: contender for contender in CONTENDERS}
DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "redis": "Redis"}


@dataclass
class ContentionResults:
    """Every run's figures, per contender and runtime, one entry per round."""

    processes: int
    tasks: int
    failures: int
    """Failures each task records."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    """(contender key, runtime) -> one run's figures per round."""
    skipped: dict[str, str] = field(default_factory=dict)
    """contender key -> why it was not measured."""

    @property
    def expected(self) -> int:
        """Failures every run records in all."""
        return self.processes * self.tasks * self.failures

    def figure(self, key: str, runtime: str, name: str) -> float:
        """Median over rounds of one figure of a run."""
        return median([run[name] for run in self.runs.get((key, runtime), [])])

    def lost(self, key: str, runtime: str) -> int:
        """Outcomes lost, added up over every round."""
        return sum(run["lost"] for run in self.runs.get((key, runtime), []))

    def other_errors(self, key: str, runtime: str) -> int:
        """Exceptions other than the guarded one that reached a caller, over every round."""
        return sum(run["other_errors"] for run in self.runs.get((key, runtime), []))

    def errors(self, key: str, runtime: str) -> list[str]:
        """Distinct error messages seen, for the tables."""
        seen = {error for run in self.runs.get((key, runtime), []) for error in run["errors"]}
        return sorted(seen)

    def failed(self) -> list[str]:
        """Runs in which a worker raised (as opposed to a guarded call seeing an error)."""
        return [
            f"{key} ({runtime}): {error}"
            for (key, runtime), runs in self.runs.items()
            for run in runs
            for error in run["run_errors"]
        ]

    def wall_ratio(self, key: str, runtime: str) -> float:
        """Median over rounds of (this run's wall time / grelmicro's on the same database)."""
        database = CONTENDERS_BY_KEY[key].database
        mine = [run["wall"] for run in self.runs.get((key, runtime), [])]
        theirs = [run["wall"] for run in self.runs.get((f"grelmicro:{database}", "asyncio"), [])]
        if not mine or len(mine) != len(theirs):
            return float("nan")
        return paired_ratio(mine, theirs)


def measure_contention(
    rounds: int,
    failures: int,
    processes: int = PROCESSES,
    tasks: int = TASKS,
    databases: list[str] | None = None,
) -> ContentionResults:
    """Run every available contender once per round, in a rotating order per database."""
    results = ContentionResults(processes, tasks, failures)
    chosen = [c for c in CONTENDERS if databases is None or c.database in databases]
    runnable: list[Contender] = []
    for contender in chosen:
        reason = contender.unavailable()
        if reason is None:
            runnable.append(contender)
        else:
            results.skipped[contender.key] = reason
            print(f"  skip {contender.label} on {contender.database}: {reason}", flush=True)
    runs = [(c, runtime) for c in runnable for runtime in c.runtimes]
    with (
        tempfile.TemporaryDirectory(prefix="anybreaker-contention-") as directory,
        Workers(processes) as workers,
    ):
        for index in range(rounds):
            for database in DATABASES:
                order = [run for run in runs if run[0].database == database]
                if not order:
                    continue
                shift = index % len(order)
                for contender, runtime in order[shift:] + order[:shift]:
                    figures = run_once(workers, contender, runtime, directory, results)
                    results.runs.setdefault((contender.key, runtime), []).append(figures)
                    print(
                        f"  {contender.label} on {DATABASES[database]} ({runtime}): "
                        f"{figures['wall']:.2f} s, lost {figures['lost']}, "
                        f"p99 {figures['p99'] * 1e3:.1f} ms",
                        flush=True,
                    )
    return results


# -- one run --------------------------------------------------------------------


class Workers:
    """Worker processes started once, each serving every run (see ``workers.py``)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.children: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Workers:
        worker = Path(__file__).with_name("workers.py")
        self.children = [
            subprocess.Popen(
                [sys.executable, str(worker)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(self.count)
        ]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for child in self.children:
            assert child.stdin is not None
            child.stdin.close()
        for child in self.children:
            child.wait(timeout=60)

    def run(self, spec: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Run ``spec`` in every worker, started together; their reports and errors."""
        for child in self.children:
            self._send(child, spec)
        ready, errors = [], []
        for child in self.children:
            line = self._receive(child)
            if line == "ready":
                ready.append(child)
            else:
                errors.append(json.loads(line).get("error", line))
        # Every worker that is ready has connected and warmed up: start them
        # together, a moment from now.
        start_at = time.time() + 0.05
        for child in ready:
            self._send(child, f"{start_at!r}")
        reports = []
        for child in ready:
            report = json.loads(self._receive(child))
            if "error" in report:
                errors.append(report["error"])
            else:
                reports.append(report)
        return reports, errors

    @staticmethod
    def _send(child: subprocess.Popen[str], line: str) -> None:
        assert child.stdin is not None
        child.stdin.write(line + "\n")
        child.stdin.flush()

    @staticmethod
    def _receive(child: subprocess.Popen[str]) -> str:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker process exited (status {child.poll()})")
        return line.strip()


def run_once(
    workers: Workers,
    contender: Contender,
    runtime: str,
    directory: str,
    results: ContentionResults,
) -> dict[str, Any]:
    """Run the workers together on a fresh breaker; return the run's figures."""
    place = Place.new(contender.place_kind, directory)
    anybreaker = contender.library == "anybreaker"
    settings = ANYBREAKER_SETTINGS if anybreaker else GRELMICRO_SETTINGS
    spec = json.dumps(
        {
            "library": contender.library,
            "place": place.__dict__,
            "runtime": runtime,
            "tasks": results.tasks,
            "failures": results.failures,
            "settings": settings,
            "breaker": BREAKER,
        }
    )
    counted: int | None = None
    try:
        reports, errors = workers.run(spec)
        if anybreaker:
            counted = anyio.run(_anybreaker_count, place, backend=runtime)
        else:
            counted = anyio.run(_grelmicro_count, place, backend="asyncio")
    finally:
        _cleanup(contender, place)
    recorded = sum(report["recorded"] for report in reports)
    latencies = sorted(latency for report in reports for latency in report["latencies"])
    if reports:
        start_at = min(report["start_at"] for report in reports)
        wall = max(report["finished"] for report in reports) - start_at
        late_start = max(report["started"] - start_at for report in reports)
    else:
        wall = late_start = float("nan")
    return {
        "recorded": recorded,
        "counted": counted if counted is not None else 0,
        "lost": recorded - (counted or 0),
        "other_errors": sum(report["other_errors"] for report in reports) + len(errors),
        "errors": errors + [e for report in reports for e in report["error_samples"]],
        "run_errors": errors,
        "wall": wall,
        "late_start": late_start,
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
    }


def _percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (NaN when there are none)."""
    if not values:
        return float("nan")
    return values[max(0, math.ceil(share * len(values)) - 1)]


async def _anybreaker_count(place: Place) -> int:
    """The failures anybreaker's shared window holds, read through a fresh breaker."""
    from anybreaker import CircuitBreaker

    async with open_storage(place) as storage:
        breaker = CircuitBreaker(BREAKER, storage=storage, **ANYBREAKER_SETTINGS)
        return (await breaker.get_window_stats()).failures


async def _grelmicro_count(place: Place) -> int:
    """The consecutive-error count grelmicro's backend stores for the breaker."""
    from grelmicro.resilience.circuitbreaker.consecutive_count import ConsecutiveCountConfig

    async with grelmicro_backend(place) as backend:
        strategy = backend.bind(name=BREAKER, config=ConsecutiveCountConfig(**GRELMICRO_SETTINGS))
        snapshot = await strategy.get_snapshot()
        return int(snapshot.consecutive_error_count)


def _cleanup(contender: Contender, place: Place) -> None:
    """Remove what a run left in the database or on the server."""
    if contender.library == "anybreaker":
        anyio.run(drop, place)
    elif contender.database == "postgresql":
        _drop_grelmicro_postgres(place.table)
    elif contender.database == "redis":
        anyio.run(_drop_redis_prefix, place.prefix)
    else:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(place.path + suffix).unlink(missing_ok=True)


def _drop_grelmicro_postgres(table: str) -> None:
    """Drop grelmicro's table and the functions it created beside it."""
    import psycopg
    from storages import POSTGRES_DATABASE, POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER

    with psycopg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        user=POSTGRES_USER,
        dbname=POSTGRES_DATABASE,
        autocommit=True,
    ) as connection:
        functions = connection.execute(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname LIKE %s",
            (table.replace("_", r"\_") + r"\_cb\_%",),
        ).fetchall()
        for (signature,) in functions:
            connection.execute(f"DROP FUNCTION IF EXISTS {signature}")
        connection.execute(f"DROP TABLE IF EXISTS {table}")


async def _drop_redis_prefix(prefix: str) -> None:
    import coredis
    from storages import redis_url

    client: Any = coredis.Redis.from_url(redis_url())
    async with client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(keys)
