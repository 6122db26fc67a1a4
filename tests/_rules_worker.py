"""One of two processes sharing a breaker, driven line by line by ``tests/test_rules_fleet.py``.

``python -m tests._rules_worker '<json settings>'``. The worker opens its
storage and a breaker with ``settings["breaker"]`` on a fake clock that
starts at ``settings["start"]`` (both processes agree on the time), says
``ready``, then runs one command per line of stdin and answers each with one
line of JSON:

- ``fail N`` / ``succeed N``: N guarded calls that fail / succeed;
- ``slow N``: N guarded calls that each take ``settings["slow_seconds"]``
  of fake time;
- ``advance S``: move the fake clock by S seconds;
- ``state``: the state as the storage holds it, and the window's numbers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError
from anybreaker.testing import FakeClock

from ._fleet_worker import open_storage

DEADLINE = 30.0


class Boom(Exception):
    """The guarded dependency failed."""


async def main(settings: dict[str, Any]) -> None:
    clock = FakeClock(settings["start"])
    async with open_storage(settings) as storage:
        breaker = CircuitBreaker("model-api", storage=storage, clock=clock, **settings["breaker"])

        async def slow_call() -> None:
            clock.advance(settings["slow_seconds"])
            await anyio.lowlevel.checkpoint()

        print("ready", flush=True)
        while True:
            with anyio.fail_after(DEADLINE):
                line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                return
            command, _, argument = line.strip().partition(" ")
            answer: dict[str, Any] = {"refused": 0}
            calls = int(argument) if command in ("fail", "succeed", "slow") else 0
            for _ in range(calls):
                try:
                    if command == "fail":
                        async with breaker:
                            raise Boom
                    elif command == "succeed":
                        async with breaker:
                            pass
                    else:
                        await breaker.call(slow_call)
                except Boom:
                    pass
                except CircuitBreakerOpenError:
                    answer["refused"] += 1
            if command == "advance":
                clock.advance(float(argument))
            if command == "state":
                answer["state"] = (await breaker.get_state()).value
                stats = await breaker.get_window_stats()
                answer["window"] = [stats.calls, stats.failures, stats.slow_calls]
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]), backend=json.loads(sys.argv[1])["runtime"])
