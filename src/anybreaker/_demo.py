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

FAILURE_THRESHOLD = 3
WINDOW_SIZE = 10.0
TIMEOUT = 0.5
SUCCESS_THRESHOLD = 2
BACKOFF_MULTIPLIER = 60.0
"""A trial that fails means the outage is no blip: the breaker re-opens for
60 times longer (30 s), long enough to run the demo again and find it open."""
MAX_TIMEOUT = 60.0

SETTINGS = [
    (
        f"failure_threshold={FAILURE_THRESHOLD}, window_size={WINDOW_SIZE:g}",
        f"{FAILURE_THRESHOLD} failures within {WINDOW_SIZE:g} s open it",
    ),
    (f"timeout={TIMEOUT:g}", f"it stays open {TIMEOUT:g} s, then admits a trial call"),
    (f"success_threshold={SUCCESS_THRESHOLD}", f"{SUCCESS_THRESHOLD} successful trials close it"),
    (
        f"backoff_multiplier={BACKOFF_MULTIPLIER:g}",
        f"a failed trial re-opens it {BACKOFF_MULTIPLIER:g} times longer: "
        f"{TIMEOUT * BACKOFF_MULTIPLIER:g} s",
    ),
    (f"max_timeout={MAX_TIMEOUT:g}", f"and never longer than {MAX_TIMEOUT:g} s"),
]
"""The breaker's settings, each with what it means here."""


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


class ChangeLog:
    """Collects the breaker's state changes, to print each next to the call that caused it.

    The breaker tells its listeners as it admits a call or records its
    outcome, before the call's line can be printed: a change made on
    admission is printed before the call's line, one made by its outcome
    after it.
    """

    def __init__(self) -> None:
        self.pending: list[StateChange] = []

    def __call__(self, change: StateChange) -> None:
        self.pending.append(change)

    def flush(self, breaker: CircuitBreaker) -> None:
        """Print the changes collected since the last flush, each with its reason."""
        for change in self.pending:
            print(f"        >> {change.old_state} -> {change.new_state}: {why(change, breaker)}")
        self.pending.clear()


def why(change: StateChange, breaker: CircuitBreaker) -> str:
    """Explain a state change by the demo's settings."""
    old, new = change.old_state, change.new_state
    if new is CircuitState.OPEN:
        retry = breaker.get_time_until_retry()
        # Printed a moment after the change: round the time left back up.
        open_for = "until reset" if math.isinf(retry) else f"for {math.ceil(retry * 10) / 10:g} s"
        if old is CircuitState.HALF_OPEN:
            return f"the trial failed; open {open_for}, backed off"
        if old is CircuitState.CLOSED:
            return f"{FAILURE_THRESHOLD} failures within {WINDOW_SIZE:g} s; open {open_for}"
        return f"open {open_for}"
    if new is CircuitState.HALF_OPEN:
        return "the open period is over; this call is a trial"
    if old is CircuitState.HALF_OPEN:
        return f"{SUCCESS_THRESHOLD} trials succeeded"
    return "reset"


async def demo(path: str | os.PathLike[str]) -> CircuitState:
    """Call the flaky API through a breaker kept in ``path``; return the breaker's state."""
    async with SQLiteStorage(path) as storage:
        changes = ChangeLog()
        breaker = CircuitBreaker(
            "model-api",
            storage=storage,
            failure_threshold=FAILURE_THRESHOLD,
            window_size=WINDOW_SIZE,
            timeout=TIMEOUT,
            success_threshold=SUCCESS_THRESHOLD,
            backoff_multiplier=BACKOFF_MULTIPLIER,
            max_timeout=MAX_TIMEOUT,
            listeners=[changes],
        )
        state = await breaker.get_state()
        changes.pending.clear()  # reading the stored state: told below, not a change
        print(f"Breaker {breaker.name!r} is kept in {os.fspath(path)}.")
        print("Its settings (fields of CircuitBreakerConfig):")
        width = max(len(setting) for setting, _ in SETTINGS)
        for setting, meaning in SETTINGS:
            print(f"  {setting.ljust(width)}  {meaning}")
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
                    changes.flush(breaker)  # a change made by admitting this call
                    await api.complete(prompt)
            except CircuitBreakerOpenError as error:
                print(f"{at}  rejected: retry in {error.time_until_retry:.1f} s")
            except ModelAPIError as error:
                print(f"{at}  failed: {error}")
            else:
                print(f"{at}  ok")
            changes.flush(breaker)  # a change made by this call's outcome

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
