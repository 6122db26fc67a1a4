"""One breaker per key, with shared defaults and one storage."""

from __future__ import annotations

import pytest

from anybreaker import (
    CircuitBreakerOpenError,
    CircuitBreakerRegistry,
    CircuitState,
    StateChange,
    Storage,
)
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_one_breaker_per_key_sharing_storage_and_defaults(
    storage: Storage, clock: FakeClock
) -> None:
    """get() returns the same breaker per key, all on the registry's storage and defaults."""
    registry = CircuitBreakerRegistry(storage=storage, clock=clock, failure_threshold=1)
    gpt = registry.get("gpt")
    assert registry["gpt"] is gpt
    assert gpt.storage is storage
    assert gpt.config.failure_threshold == 1
    with pytest.raises(RuntimeError):
        async with gpt:
            raise RuntimeError("model down")
    with pytest.raises(CircuitBreakerOpenError):
        async with registry["gpt"]:
            pass
    async with registry["claude"]:
        pass
    assert registry["claude"].state is CircuitState.CLOSED
    assert {breaker.name for breaker in registry} == {"gpt", "claude"}
    assert len(registry) == 2
    assert "gpt" in registry


async def test_per_key_overrides(clock: FakeClock) -> None:
    """Settings given to get() override the defaults for that key only."""
    registry = CircuitBreakerRegistry(clock=clock, timeout=5.0)
    slow_tool = registry.get("slow-tool", timeout=60.0)
    assert slow_tool.config.timeout == 60.0
    assert registry.get("fast-tool").config.timeout == 5.0
    assert registry.get("slow-tool", timeout=60.0) is slow_tool
    with pytest.raises(ValueError, match="slow-tool"):
        registry.get("slow-tool", timeout=1.0)


async def test_listeners_reach_every_breaker(clock: FakeClock) -> None:
    """A registry listener hears state changes of breakers made before and after it."""
    seen: list[StateChange] = []
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    early = registry["early"]
    registry.add_listener(seen.append)
    late = registry["late"]
    for breaker in (early, late):
        await breaker.force_open()
    assert [change.name for change in seen] == ["early", "late"]
