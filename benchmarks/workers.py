"""One worker process of the contention benchmark.

``python benchmarks/workers.py`` serves runs until its standard input ends.
For each run it reads one JSON spec line, opens the breaker the spec names
(anybreaker on one of its storages, or grelmicro on one of its backends)
under the spec's runtime, prints ``ready``, reads the common start time from
standard input, waits for it, runs the spec's tasks at once, each recording
its number of failures on the shared breaker, and prints one JSON line with
what happened, the latency of every failing call included. A run that fails
prints a JSON line with its ``error`` instead. The process is started once
and serves every run, so that no run waits for interpreters to start and
import.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from libraries import Boom, fail, quiet_warnings
from storages import Place, open_storage, postgres_url, redis_url

Guard = Callable[[], Awaitable[None]]


@asynccontextmanager
async def anybreaker_guard(spec: dict[str, Any]) -> AsyncIterator[Guard]:
    """Yield ``guard()``: one failing call through anybreaker on the spec's storage."""
    from anybreaker import CircuitBreaker

    async with open_storage(Place(**spec["place"])) as storage:
        breaker = CircuitBreaker(spec["breaker"], storage=storage, **spec["settings"])
        # Before the clock starts, as in a process that has been serving for a
        # while: the tables exist (grelmicro creates its own when its backend
        # is entered), each statement has run once, and the record was read.
        warm_up = CircuitBreaker(f"{spec['breaker']}-warm-up-{os.getpid()}", storage=storage)
        await warm_up.open_for(1.0)
        await storage.delete(warm_up.name)
        await breaker.get_state()

        async def guard() -> None:
            async with breaker:
                await fail()

        yield guard


@asynccontextmanager
async def grelmicro_backend(place: Place) -> AsyncIterator[Any]:
    """Open grelmicro's circuit-breaker backend for ``place``, as its docs wire it."""
    async with AsyncExitStack() as stack:
        if place.kind == "sqlite":
            from grelmicro.providers.sqlite import SQLiteProvider

            provider: Any = SQLiteProvider(place.path, env_load=False)
            options = {"table_name": place.table, "cleanup_interval": None}
        elif place.kind == "postgresql":
            from grelmicro.providers.postgres import PostgresProvider

            provider = PostgresProvider(postgres_url("asyncpg").replace("+asyncpg", ""))
            options = {"table_name": place.table, "cleanup_interval": None}
        elif place.kind == "redis":
            from grelmicro.providers.redis import RedisProvider

            provider = RedisProvider(redis_url())
            options = {"prefix": place.prefix + ":"}
        else:
            raise ValueError(f"unknown grelmicro backend {place.kind!r}")
        await stack.enter_async_context(provider)
        yield await stack.enter_async_context(provider.circuitbreaker(**options))


@asynccontextmanager
async def grelmicro_guard(spec: dict[str, Any]) -> AsyncIterator[Guard]:
    """Yield ``guard()``: one failing call through grelmicro on the spec's backend."""
    from grelmicro.resilience import CircuitBreaker

    async with grelmicro_backend(Place(**spec["place"])) as backend:
        breaker = CircuitBreaker.consecutive_count(
            spec["breaker"], backend=backend, **spec["settings"]
        )
        # Open connections before the clock starts: grelmicro has no read
        # that a caller makes, so one successful call (it clears nothing,
        # since no failure is recorded yet).
        async with breaker:
            pass

        async def guard() -> None:
            async with breaker:
                await fail()

        yield guard


async def work(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the tasks' failing calls and report what they saw and how long each took."""
    recorded = other = 0
    samples: list[str] = []
    latencies: list[float] = []
    opener = anybreaker_guard if spec["library"] == "anybreaker" else grelmicro_guard
    async with opener(spec) as guard:

        async def task() -> None:
            nonlocal recorded, other
            for _ in range(spec["failures"]):
                began = time.perf_counter()
                try:
                    await guard()
                except Boom:
                    recorded += 1
                except Exception as error:  # counted: a guarded call must see only Boom
                    other += 1
                    if len(samples) < 3:
                        samples.append(f"{type(error).__name__}: {error}")
                latencies.append(time.perf_counter() - began)

        print("ready", flush=True)
        start_at = float(await anyio.to_thread.run_sync(sys.stdin.readline))
        await anyio.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        async with anyio.create_task_group() as group:
            for _ in range(spec["tasks"]):
                group.start_soon(task)
        finished = time.time()
    return {
        "recorded": recorded,
        "other_errors": other,
        "error_samples": samples,
        "start_at": start_at,
        "started": started,
        "finished": finished,
        "latencies": [round(latency, 7) for latency in latencies],
    }


def main() -> None:
    """Serve runs, one JSON spec line each, until standard input ends."""
    quiet_warnings()
    while line := sys.stdin.readline():
        spec = json.loads(line)
        try:
            report = anyio.run(work, spec, backend=spec["runtime"])
        except Exception as error:  # reported to the parent, which counts it
            report = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
