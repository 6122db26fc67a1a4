"""Call events, what ``anybreaker.otel`` counts: one per call, right, and none without listeners."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from anybreaker import (
    CallEvent,
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitBreakerRegistry,
    StateChange,
)
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_each_outcome_gives_one_event_with_its_duration(clock: FakeClock) -> None:
    """Success, failure, neutral, slow and rejected calls each give one exact event."""
    events: list[CallEvent] = []
    breaker = CircuitBreaker(
        "model-api",
        clock=clock,
        failure_threshold=2,
        slow_call_duration=1.0,
        ignored_exceptions=(KeyError,),
        call_listeners=[events.append],
    )
    async with breaker:
        clock.advance(0.25)
    async with breaker:
        clock.advance(1.5)
    with pytest.raises(KeyError):
        async with breaker:
            _fail_after(clock, 0.5, KeyError("not the dependency's fault"))
    for _ in range(2):
        with pytest.raises(ConnectionError):
            async with breaker:
                _fail_after(clock, 0.125, ConnectionError("down"))
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            pass
    assert [(e.outcome, e.duration, e.slow) for e in events] == [
        ("success", 0.25, False),
        ("success", 1.5, True),
        ("neutral", 0.5, False),
        ("failure", 0.125, False),
        ("failure", 0.125, False),
        ("rejected", 0.0, False),
    ]
    assert {event.name for event in events} == {"model-api"}
    assert [event.at for event in events] == sorted(event.at for event in events)
    assert events[-1].at == clock()


async def test_call_and_manual_use_give_events_too(clock: FakeClock) -> None:
    """call(), @breaker and allow_request()/record_*() are told like async with."""
    events: list[CallEvent] = []
    breaker = CircuitBreaker("tool", clock=clock, call_listeners=[events.append])

    async def lookup() -> str:
        clock.advance(0.5)
        return "found"

    assert await breaker(lookup)() == "found"
    assert await breaker.call(lookup) == "found"
    assert await breaker.allow_request()
    clock.advance(2.0)
    await breaker.record_failure(ConnectionError("down"))
    assert [(e.outcome, e.duration) for e in events] == [
        ("success", 0.5),
        ("success", 0.5),
        ("failure", 2.0),
    ]


async def test_a_cancelled_call_is_neutral(clock: FakeClock) -> None:
    """A call cancelled from outside is told as neutral."""
    events: list[CallEvent] = []
    breaker = CircuitBreaker("tool", clock=clock, call_listeners=[events.append])
    with anyio.CancelScope() as scope:
        async with breaker:
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # where the cancellation lands
    assert [event.outcome for event in events] == ["neutral"]


async def test_a_listener_that_raises_breaks_nothing(clock: FakeClock) -> None:
    """A call listener that raises is logged; the call and the other listeners go on."""
    events: list[CallEvent] = []

    def broken(event: CallEvent) -> None:
        raise RuntimeError("listener bug")

    breaker = CircuitBreaker("tool", clock=clock, call_listeners=[broken, events.append])
    async with breaker:
        pass
    assert [event.outcome for event in events] == ["success"]


async def test_no_event_is_made_without_a_call_listener(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A breaker without call listeners builds no CallEvent, whatever its calls do."""
    made: list[tuple[Any, ...]] = []
    real_new = CallEvent.__new__

    def counting_new(cls: type[CallEvent], *args: Any) -> CallEvent:
        made.append(args)
        return real_new(cls, *args)

    monkeypatch.setattr(CallEvent, "__new__", counting_new)
    breaker = CircuitBreaker("quiet", clock=clock, failure_threshold=1)
    async with breaker:
        pass
    with pytest.raises(ConnectionError):
        await breaker.call(_fail)
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            pass
    assert made == []
    told = CircuitBreaker("told", clock=clock, call_listeners=[lambda event: None])
    async with told:
        pass
    assert len(made) == 1


async def _fail() -> None:
    raise ConnectionError("down")


def _fail_after(clock: FakeClock, seconds: float, error: Exception) -> None:
    clock.advance(seconds)
    raise error


async def test_registry_call_listeners_reach_present_and_future_breakers(
    clock: FakeClock,
) -> None:
    """A registry's call listener hears the breakers it holds and the ones it makes later."""
    events: list[CallEvent] = []
    registry = CircuitBreakerRegistry(clock=clock)
    early = registry["early"]
    registry.add_call_listener(events.append)
    for name in ("early", "late"):
        async with registry[name]:
            pass
    assert registry["early"] is early
    assert [event.name for event in events] == ["early", "late"]


async def test_a_listener_added_twice_is_told_once(clock: FakeClock) -> None:
    """Adding the same listener again, to a breaker or its registry, changes nothing."""
    events: list[CallEvent] = []
    changes: list[StateChange] = []
    registry = CircuitBreakerRegistry(clock=clock, call_listeners=[events.append])
    breaker = registry["tool"]
    for _ in range(2):
        registry.add_call_listener(events.append)
        breaker.add_call_listener(events.append)
        registry.add_listener(changes.append)
        breaker.add_listener(changes.append)
    async with breaker:
        pass
    await breaker.force_open()
    assert len(events) == 1
    assert len(changes) == 1
