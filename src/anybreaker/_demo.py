"""The demo: a trio program whose model API fails for a while, guarded by a breaker.

Run it with ``anybreaker demo`` (or ``python -m anybreaker demo``). The
breaker keeps its state in a SQLite file, so the state outlives the program:
this run ends with the breaker open, and the next run starts with it still
open instead of hammering an API that was failing a moment ago.
"""

from __future__ import annotations

import math
import os

import trio

from anybreaker import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    SQLiteStorage,
    StateChange,
)

CALLS = 21
CALLS_WHEN_STARTING_OPEN = 5
"""A run that starts open makes only a few calls: they all fail fast."""
CALL_INTERVAL = 0.15
"""Seconds between the starts of two calls."""

OUTAGES = [(0.4, 1.1), (1.9, math.inf)]
"""When the simulated API is down, in seconds since the program started: a
short outage that it recovers from, then one that outlasts the run."""


class ModelAPIError(Exception):
    """The simulated model API answered with an error."""


class FlakyModelAPI:
    """A stand-in for a remote model API that is down during ``OUTAGES``."""

    def __init__(self) -> None:
        self.started = trio.current_time()

    def elapsed(self) -> float:
        """Seconds since the API (and the demo) started."""
        return trio.current_time() - self.started

    async def complete(self, prompt: str) -> str:
        """Answer ``prompt``, or raise ``ModelAPIError`` during an outage."""
        await trio.sleep(0.01)  # the network round trip
        if any(start <= self.elapsed() < end for start, end in OUTAGES):
            raise ModelAPIError("503 Service Unavailable")
        return f"an answer to {prompt!r}"


def show_change(change: StateChange) -> None:
    """Print a state change as the breaker sees it."""
    print(f"        >> breaker {change.name!r}: {change.old_state} -> {change.new_state}")


async def demo(path: str | os.PathLike[str]) -> CircuitState:
    """Call the flaky API through a breaker kept in ``path``; return the breaker's state."""
    async with SQLiteStorage(path) as storage:
        breaker = CircuitBreaker(
            "model-api",
            storage=storage,
            failure_threshold=3,  # 3 failures within 10 s open the breaker,
            window_size=10.0,
            timeout=0.5,  # which then waits 0.5 s before it lets a trial call through;
            success_threshold=2,  # 2 successful trials close it again.
            # A trial that fails means the outage is no blip: the breaker
            # re-opens for 60 times longer (30 s, capped at 60 s), long
            # enough for you to run the demo again and find it still open.
            backoff_multiplier=60.0,
            max_timeout=60.0,
            listeners=[show_change],
        )
        state = await breaker.get_state()
        print(f"Breaker {breaker.name!r} is kept in {os.fspath(path)}.")
        if state is CircuitState.OPEN:
            print(
                f"It starts OPEN, left so by an earlier run: "
                f"{breaker.get_time_until_retry():.1f} s until it retries the API."
            )
            calls = CALLS_WHEN_STARTING_OPEN
        else:
            print(f"It starts {state.value}.")
            calls = CALLS

        api = FlakyModelAPI()
        for number in range(1, calls + 1):
            await trio.sleep_until(api.started + (number - 1) * CALL_INTERVAL)
            prompt = f"question {number}"
            at = f"{api.elapsed():5.2f}s  call {number:2}"
            try:
                async with breaker:
                    await api.complete(prompt)
            except CircuitBreakerOpenError as error:
                print(f"{at}  rejected: retry in {error.time_until_retry:.1f} s")
            except ModelAPIError as error:
                print(f"{at}  failed: {error}")
            else:
                print(f"{at}  ok")

        stats = breaker.stats
        print(
            f"{stats.total_calls} calls reached the API ({stats.successful_calls} ok, "
            f"{stats.failed_calls} failed); the breaker rejected "
            f"{stats.rejected_calls} without calling it."
        )
        if breaker.is_open:
            print(
                f"The breaker is open for {breaker.get_time_until_retry():.0f} s more. "
                "Run the demo again: it starts open."
            )
        return breaker.state


def run(path: str | os.PathLike[str]) -> CircuitState:
    """Run the demo under trio, keeping the breaker in the SQLite file ``path``."""
    return trio.run(demo, path)
