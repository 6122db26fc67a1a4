"""Shadow mode (``enforce=False``): a breaker records, changes state and reports, never refuses."""

from __future__ import annotations

import pytest

from anybreaker import (
    CallEvent,
    CircuitBreaker,
    CircuitState,
    StateChange,
    Storage,
)
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio


class Dependency:
    """A dependency that fails while ``down``, and counts the calls that reach it."""

    def __init__(self) -> None:
        self.down = False
        self.reached = 0

    async def __call__(self) -> str:
        self.reached += 1
        if self.down:
            raise ConnectionError("dependency down")
        return "ok"


async def test_a_shadow_breaker_opens_tells_and_still_runs_every_call(
    storage: Storage, clock: FakeClock
) -> None:
    """It opens where it would have, says so, counts would-be refusals, and runs them all."""
    changes: list[StateChange] = []
    events: list[CallEvent] = []
    breaker = CircuitBreaker(
        "model-api",
        storage=storage,
        clock=clock,
        storage_timeout=60.0,
        failure_threshold=3,
        timeout=30.0,
        enforce=False,
        listeners=[changes.append],
        call_listeners=[events.append],
    )
    dependency = Dependency()
    dependency.down = True
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(dependency)
    assert await breaker.get_state() is CircuitState.OPEN
    assert breaker.is_open
    assert [(c.old_state, c.new_state) for c in changes] == [
        (CircuitState.CLOSED, CircuitState.OPEN)
    ]

    # Open: an enforcing breaker would refuse these five; this one runs them.
    for _ in range(5):
        with pytest.raises(ConnectionError):
            async with breaker:
                await dependency()
    assert dependency.reached == 8
    stats = breaker.get_stats()
    assert (stats.total_calls, stats.failed_calls, stats.rejected_calls) == (8, 8, 5)
    refused = [event for event in events if event.outcome == "rejected"]
    assert len(refused) == 5
    assert all(event.name == "model-api" for event in refused)
    # What would have been refused does not count in the shared window.
    window = await breaker.get_window_stats()
    assert window.failures <= 3
    assert await breaker.get_state() is CircuitState.OPEN

    # The open period passes: trials run as they would, and close it.
    clock.advance(30.0)
    dependency.down = False
    for _ in range(2):
        assert await breaker.call(dependency) == "ok"
    assert await breaker.get_state() is CircuitState.CLOSED
    assert [(c.old_state, c.new_state) for c in changes] == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]
    assert dependency.reached == 10
    assert breaker.get_stats().rejected_calls == 5


async def test_a_shadow_breaker_runs_calls_beyond_the_trial_permits(
    storage: Storage, clock: FakeClock
) -> None:
    """In half-open, calls past half_open_max_calls run too, counted as would-be refusals."""
    breaker = CircuitBreaker(
        "search-tool",
        storage=storage,
        clock=clock,
        storage_timeout=60.0,
        failure_threshold=1,
        timeout=10.0,
        half_open_max_calls=1,
        enforce=False,
    )
    with pytest.raises(ConnectionError):
        async with breaker:
            raise ConnectionError("down")
    clock.advance(10.0)
    ran = 0
    async with breaker:  # the trial: it holds the only permit
        async with breaker:  # a second call at once would be refused
            ran += 1
        ran += 1
    assert ran == 2
    assert breaker.get_stats().rejected_calls == 1
    assert await breaker.get_state() is CircuitState.HALF_OPEN


async def test_allow_request_in_shadow_mode_always_says_yes(
    storage: Storage, clock: FakeClock
) -> None:
    """Manual use: allow_request() is True while open, and the refusal is counted."""
    breaker = CircuitBreaker(
        "tool", storage=storage, clock=clock, storage_timeout=60.0, enforce=False
    )
    await breaker.force_open()
    assert await breaker.allow_request()
    await breaker.record_failure(ConnectionError("down"))
    assert breaker.get_stats().rejected_calls == 1
    assert await breaker.get_state() is CircuitState.OPEN


async def test_a_shadow_breaker_shares_its_state_with_enforcing_ones_of_its_name(
    storage: Storage, clock: FakeClock
) -> None:
    """A shadow breaker's opening is the name's state: enforcing breakers of that name refuse."""
    shadow = CircuitBreaker(
        "payments",
        storage=storage,
        clock=clock,
        storage_timeout=60.0,
        failure_threshold=1,
        enforce=False,
    )
    enforcing = CircuitBreaker(
        "payments", storage=storage, clock=clock, storage_timeout=60.0, failure_threshold=1
    )
    with pytest.raises(ConnectionError):
        async with shadow:
            raise ConnectionError("down")
    assert await enforcing.get_state() is CircuitState.OPEN
    assert not await enforcing.allow_request()
