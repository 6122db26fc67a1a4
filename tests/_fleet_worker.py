"""One process of a fleet that shares a breaker: run by ``tests/test_fleet.py``.

``python -m tests._fleet_worker '<json settings>'``. The worker opens its own
storage and breaker, touches ``ready_file`` once its first call has gone
through, waits for a line on stdin (the go signal, sent to every worker at
once), runs its scenario, and prints one JSON object with what it saw.

Scenarios:
- ``opening``: call in a loop until refused. The ``opener`` fails one call
  after ``open_delay`` seconds and reports when that failure was stored.
- ``half_open``: for ``duration`` seconds, try trial calls that each take
  ``trial_seconds``, resting ``rest_seconds`` after each of its own, and
  report when each one ran.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError, Storage

DEADLINE = 20.0
"""Seconds any wait of a worker may take before it gives up."""


class Boom(Exception):
    """The failure the opener's guarded call raises."""


@asynccontextmanager
async def open_storage(settings: dict[str, Any]) -> AsyncIterator[Storage]:
    """Open the storage ``settings`` describe."""
    if settings["kind"] == "redis":
        from anybreaker.storage.redis import RedisStorage

        async with RedisStorage(
            settings["url"], prefix=settings["prefix"], staleness=settings["staleness"]
        ) as redis:
            yield redis
    else:
        from anybreaker.storage.sql import SQLAlchemyStorage

        async with SQLAlchemyStorage(
            settings["url"], table=settings["table"], staleness=settings["staleness"]
        ) as sql:
            yield sql


async def wait_for_go() -> None:
    """Block until the parent writes the go line (or closes stdin)."""
    with anyio.fail_after(DEADLINE):
        await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


async def opening(breaker: CircuitBreaker, settings: dict[str, Any]) -> dict[str, Any]:
    """Call until refused; the opener makes the failure that opens the breaker."""
    result: dict[str, Any] = {"admitted": [], "refused_at": None, "stored_at": None}
    async with anyio.create_task_group() as group:
        if settings["role"] == "opener":

            async def fail_once() -> None:
                await anyio.sleep(settings["open_delay"])
                try:
                    async with breaker:
                        raise Boom
                except Boom:
                    # The failure is written before ``async with`` lets it out.
                    result["stored_at"] = time.time()

            group.start_soon(fail_once)
        with anyio.fail_after(DEADLINE):
            while True:
                started = time.time()
                try:
                    async with breaker:
                        pass
                except CircuitBreakerOpenError:
                    result["refused_at"] = started
                    break
                result["admitted"].append(started)
                await anyio.sleep(0.002)
    return result


async def half_open(breaker: CircuitBreaker, settings: dict[str, Any]) -> dict[str, Any]:
    """Try trial calls for a while; record when each admitted one ran."""
    trials: list[tuple[float, float]] = []
    refused = 0
    end = time.monotonic() + settings["duration"]
    while time.monotonic() < end:
        try:
            async with breaker:
                started = time.time()
                await anyio.sleep(settings["trial_seconds"])
                trials.append((started, time.time()))
        except CircuitBreakerOpenError:
            refused += 1
            await anyio.sleep(0.001)
        else:
            # The process that gave the permit back knows at once that it
            # is free; resting lets the others, whose view may be up to
            # staleness old, have their turn.
            await anyio.sleep(settings["rest_seconds"])
    return {"trials": trials, "refused": refused}


async def run(settings: dict[str, Any]) -> dict[str, Any]:
    """Open storage and breaker, signal ready, wait for go, run the scenario."""
    async with open_storage(settings) as storage:
        breaker = CircuitBreaker(settings["name"], storage=storage, **settings["config"])
        if settings["scenario"] == "opening":
            # A first call reads the record, so the worker starts from a cache.
            async with breaker:
                pass
        else:
            await breaker.get_state()
        await anyio.Path(settings["ready_file"]).touch()
        await wait_for_go()
        if settings["scenario"] == "opening":
            return await opening(breaker, settings)
        return await half_open(breaker, settings)


def main() -> None:
    """Run one worker with the JSON settings given as the only argument."""
    settings = json.loads(sys.argv[1])
    result = anyio.run(run, settings, backend=settings["runtime"])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
