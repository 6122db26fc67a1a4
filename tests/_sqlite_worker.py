"""A child process that uses a breaker on a SQLite file, for the multi-process tests.

Run as ``python _sqlite_worker.py COMMAND SETTINGS_JSON``. The worker writes
``ready`` on a line of its own once it is set up, waits for a line on stdin
when the command needs a start signal, and ends with one line of JSON
holding what it saw. Every wait is bounded by ``DEADLINE``.

Commands:

- ``trip``: fail ``failure_threshold`` calls, opening the breaker.
- ``inspect``: report the stored state and the time until retry; when the
  breaker admits a trial, run one that succeeds.
- ``fail``: on the go line, run ``calls`` calls that all fail.
- ``trials``: on the go line, try ``attempts`` calls, each holding an
  exclusive marker file while it runs, to catch two trials at once.
- ``hammer``: write to the breakers without end (failures, resets,
  openings), until killed.
- ``serve``: answer storage requests, one per stdin line, each with one
  line of JSON, until stdin closes: ``get NAME`` (``{"version": ...}``,
  null when nothing is stored) and ``cas NAME EXPECTED VERSION``
  (``{"stored": ...}``; EXPECTED ``none`` for nothing stored).
- ``hold-lock``: take SQLite's lock on the file (``BEGIN IMMEDIATE`` or
  ``BEGIN EXCLUSIVE``) and hold it until stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio

from anybreaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitBreakerOpenError,
    StateChange,
)
from anybreaker.storage.sql import SQLiteStorage

DEADLINE = 30.0
"""Seconds any wait of the worker may last."""


class Boom(Exception):
    """The guarded dependency failed."""


class Warnings(logging.Handler):
    """Counts the warnings anybreaker logs (a storage failure logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def clock(offset: float) -> Callable[[], float]:
    """Wall time moved by ``offset`` seconds: a process that lives in the future."""
    return lambda: time.time() + offset


def say(line: str) -> None:
    print(line, flush=True)


async def wait_for_go() -> None:
    with anyio.fail_after(DEADLINE):
        await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


def breaker_for(storage: SQLiteStorage, settings: dict[str, Any]) -> CircuitBreaker:
    return CircuitBreaker(
        settings.get("name", "model-api"),
        storage=storage,
        clock=clock(settings.get("offset", 0.0)),
        failure_threshold=settings.get("failure_threshold", 5),
        success_threshold=settings.get("success_threshold", 1),
        timeout=settings.get("timeout", 30.0),
        window_size=settings.get("window_size", 60.0),
        half_open_max_calls=settings.get("half_open_max_calls", 1),
    )


async def fail() -> None:
    raise Boom


async def trip(storage: SQLiteStorage, settings: dict[str, Any]) -> dict[str, Any]:
    breaker = breaker_for(storage, settings)
    for _ in range(settings["failure_threshold"]):
        with contextlib.suppress(Boom):
            await breaker.call(fail)
    return {"state": breaker.state.value, "time_until_retry": breaker.get_time_until_retry()}


async def inspect(storage: SQLiteStorage, settings: dict[str, Any]) -> dict[str, Any]:
    breaker = breaker_for(storage, settings)
    seen = {
        "state": (await breaker.get_state()).value,
        "time_until_retry": breaker.get_time_until_retry(),
    }
    try:
        async with breaker:
            seen["trial"] = "ran"
    except CircuitBreakerOpenError:
        seen["trial"] = "rejected"
    seen["state_after"] = (await breaker.get_state()).value
    return seen


async def fail_together(storage: SQLiteStorage, settings: dict[str, Any]) -> dict[str, Any]:
    changes: list[str] = []

    def note(change: StateChange) -> None:
        changes.append(f"{change.old_state.value}->{change.new_state.value}")

    breaker = breaker_for(storage, settings)
    breaker.add_listener(note)
    await breaker.get_state()
    say("ready")
    await wait_for_go()
    outcomes: dict[str, int] = {}
    for _ in range(settings["calls"]):
        try:
            await breaker.call(fail)
        except Exception as error:
            kind = type(error).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
    return {"outcomes": outcomes, "changes": changes}


async def trials(storage: SQLiteStorage, settings: dict[str, Any]) -> dict[str, Any]:
    marker = settings["marker"]
    breaker = breaker_for(storage, settings)
    await breaker.get_state()
    say("ready")
    await wait_for_go()
    ran = rejected = overlaps = 0
    for _ in range(settings["attempts"]):
        try:
            async with breaker:
                try:
                    descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    overlaps += 1
                else:
                    os.close(descriptor)
                    await anyio.sleep(0.002)
                    os.remove(marker)
                ran += 1
        except CircuitBreakerOpenError:
            rejected += 1
            await anyio.sleep(random.uniform(0, 0.002))
    return {"ran": ran, "rejected": rejected, "overlaps": overlaps}


async def hammer(storage: SQLiteStorage, settings: dict[str, Any]) -> dict[str, Any]:
    breakers = [
        breaker_for(storage, {**settings, "name": name, "failure_threshold": 3})
        for name in settings["names"]
    ]
    writes = 0
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for breaker in breakers:
            with contextlib.suppress(Boom, CircuitBreakerOpenError):
                await breaker.call(fail)
            if random.random() < 0.2:
                await breaker.reset()
            elif random.random() < 0.05:
                await breaker.force_open()
            writes += 1
            if writes == len(breakers) * 3:
                say("ready")
    return {"writes": writes}


async def serve(storage: SQLiteStorage, settings: dict[str, Any]) -> dict[str, Any]:
    say("ready")
    answered = 0
    while True:
        with anyio.fail_after(DEADLINE):
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            return {"answered": answered}
        request, name, *versions = line.split()
        if request == "get":
            stored = await storage.get(name)
            say(json.dumps({"version": None if stored is None else stored.version}))
        else:
            expected = None if versions[0] == "none" else int(versions[0])
            record = BreakerRecord(version=int(versions[1]), generation=int(versions[1]))
            stored_it = await storage.compare_and_set(name, expected, record)
            say(json.dumps({"stored": stored_it}))
        answered += 1


def hold_lock(settings: dict[str, Any]) -> dict[str, Any]:
    connection = sqlite3.connect(settings["path"], isolation_level=None, timeout=DEADLINE)
    connection.execute(f"BEGIN {settings['lock']}")
    # Touch a page: in rollback-journal mode an EXCLUSIVE lock is taken at
    # once, but a read keeps even an IMMEDIATE lock honest about the schema.
    connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    say("locked")
    sys.stdin.readline()
    connection.execute("ROLLBACK")
    connection.close()
    return {"held": True}


COMMANDS = {
    "trip": trip,
    "inspect": inspect,
    "fail": fail_together,
    "trials": trials,
    "hammer": hammer,
    "serve": serve,
}


async def run(command: str, settings: dict[str, Any]) -> dict[str, Any]:
    warnings = Warnings()
    logging.getLogger("anybreaker").addHandler(warnings)
    async with SQLiteStorage(settings["path"], **settings.get("storage", {})) as storage:
        result = await COMMANDS[command](storage, settings)
    result["warnings"] = warnings.messages
    return result


def main() -> None:
    command, raw = sys.argv[1], sys.argv[2]
    settings: dict[str, Any] = json.loads(raw)
    if command == "hold-lock":
        result = hold_lock(settings)
    else:
        result = anyio.run(run, command, settings, backend=settings.get("runtime", "asyncio"))
    say(json.dumps(result))


if __name__ == "__main__":
    main()
