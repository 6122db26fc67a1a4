"""A child process whose httpx client shares its breakers through a SQLite file.

Run as ``python _httpx_worker.py RUNTIME DATABASE URL``. The worker writes
``ready`` on a line of its own once its client is set up; then, for each line
on stdin, it sends one GET to ``URL`` and writes one line of JSON: the status
it got, or the refusal (its key and time until retry), with the wall time.
It ends when stdin closes; every wait is bounded by ``DEADLINE``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio
import httpx

from anybreaker import CircuitBreakerOpenError, CircuitBreakerRegistry
from anybreaker.httpx import BreakerTransport
from anybreaker.storage.sql import SQLiteStorage

DEADLINE = 30.0
"""Seconds any wait of the worker may last."""


def say(line: str) -> None:
    print(line, flush=True)


async def request_once(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await client.get(url)
    except CircuitBreakerOpenError as refused:
        return {
            "refused": True,
            "key": refused.circuit_name,
            "retry_in": refused.time_until_retry,
            "at": time.time(),
        }
    return {"status": response.status_code, "at": time.time()}


async def main(database: str, url: str) -> None:
    async with SQLiteStorage(database) as storage:
        transport = BreakerTransport(registry=CircuitBreakerRegistry(storage=storage))
        async with httpx.AsyncClient(transport=transport) as client:
            say("ready")
            while True:
                with anyio.fail_after(DEADLINE):
                    line = await anyio.to_thread.run_sync(
                        sys.stdin.readline, abandon_on_cancel=True
                    )
                if not line:
                    return
                with anyio.fail_after(DEADLINE):
                    say(json.dumps(await request_once(client, url)))


if __name__ == "__main__":
    runtime, database, url = sys.argv[1:]
    anyio.run(main, database, url, backend=runtime)
