"""What a storage failure means for the guarded call: on_storage_error."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from anybreaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    MemoryStorage,
    StorageError,
)
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """The guarded dependency failed."""


class FlakyStorage:
    """A MemoryStorage that can be made to fail or to hang, like a sick server."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.down = False
        self.hanging = False
        self.calls = 0

    async def _gate(self) -> None:
        self.calls += 1
        if self.hanging:
            await anyio.sleep_forever()
        if self.down:
            raise StorageError("storage is down") from ConnectionRefusedError(111)

    async def get(self, name: str) -> BreakerRecord | None:
        await self._gate()
        return await self.inner.get(name)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        await self._gate()
        return await self.inner.compare_and_set(name, expected_version, record)

    async def delete(self, name: str) -> None:
        await self._gate()
        await self.inner.delete(name)

    async def names(self) -> list[str]:
        await self._gate()
        return await self.inner.names()

    async def aclose(self) -> None:
        await self.inner.aclose()


def make(storage: FlakyStorage, clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """A breaker over the flaky storage."""
    settings = {
        "failure_threshold": 2,
        "timeout": 10.0,
        "storage_timeout": 0.05,
        "storage_retry_interval": 5.0,
        **settings,
    }
    return CircuitBreaker("model-api", storage=storage, clock=clock, **settings)


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that raise ``Boom``: only ``Boom`` may escape."""
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom


async def test_local_keeps_protecting_during_an_outage(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """By default an outage falls back to local state, logged once, never raising."""
    storage = FlakyStorage()
    breaker = make(storage, clock)
    storage.down = True
    with caplog.at_level(logging.WARNING, logger="anybreaker"):
        async with breaker:
            pass
        await fail(breaker, 2)
        with pytest.raises(CircuitBreakerOpenError):
            async with breaker:
                pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "storage is down" in warnings[0].getMessage()
    assert await breaker.get_state() is CircuitState.OPEN


async def test_local_resyncs_when_storage_answers(clock: FakeClock) -> None:
    """After the outage the storage's record wins again, within the retry interval."""
    storage = FlakyStorage()
    breaker = make(storage, clock)
    other = make(storage, clock)
    storage.down = True
    await fail(breaker, 2)
    assert breaker.state is CircuitState.OPEN
    storage.down = False
    await other.force_open()
    await other.reset()
    clock.advance(1.0)
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            pass
    clock.advance(5.0)
    assert await breaker.get_state() is CircuitState.CLOSED
    async with breaker:
        pass
    assert (await storage.inner.get("model-api")) is not None


async def test_local_keeps_what_was_stored_before(clock: FakeClock) -> None:
    """An outage starts from the last known record: an open breaker stays open."""
    storage = FlakyStorage()
    breaker = make(storage, clock)
    await fail(breaker, 2)
    storage.down = True
    clock.advance(1.0)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        async with breaker:
            pass
    assert caught.value.time_until_retry == pytest.approx(9.0)


async def test_hanging_storage_counts_as_failure(clock: FakeClock) -> None:
    """An operation slower than storage_timeout is a storage failure, not a hang."""
    storage = FlakyStorage()
    breaker = make(storage, clock)
    storage.hanging = True
    with anyio.fail_after(5):
        async with breaker:
            pass
        await fail(breaker, 2)
    assert breaker.state is CircuitState.OPEN


async def test_allow_lets_calls_through(clock: FakeClock) -> None:
    """on_storage_error='allow' lets guarded calls run while the storage fails."""
    storage = FlakyStorage()
    breaker = make(storage, clock, on_storage_error="allow")
    storage.down = True
    ran = 0

    async def guarded() -> None:
        nonlocal ran
        ran += 1
        raise Boom

    for _ in range(5):
        with pytest.raises(Boom):
            await breaker.call(guarded)
    assert ran == 5


async def test_reject_refuses_calls(clock: FakeClock) -> None:
    """on_storage_error='reject' refuses guarded calls while the storage fails."""
    storage = FlakyStorage()
    breaker = make(storage, clock, on_storage_error="reject")
    storage.down = True
    with pytest.raises(CircuitBreakerOpenError) as caught:
        async with breaker:
            pass
    assert caught.value.time_until_retry > 0
    storage.down = False
    clock.advance(5.0)  # the storage is tried again once the retry interval has passed
    async with breaker:
        pass


async def test_raise_raises_the_storage_error(clock: FakeClock) -> None:
    """on_storage_error='raise' raises StorageError with the driver's error as cause."""
    storage = FlakyStorage()
    breaker = make(storage, clock, on_storage_error="raise")
    storage.down = True
    with pytest.raises(StorageError) as caught:
        async with breaker:
            pass
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    storage.down = False
    storage.hanging = True
    clock.advance(5.0)
    with pytest.raises(StorageError, match="storage_timeout"):
        await breaker.get_state()


async def test_raise_keeps_the_guarded_call_s_error_in_the_chain(clock: FakeClock) -> None:
    """A failure the storage could not record raises StorageError; the call's own error stays."""
    storage = FlakyStorage()
    breaker = make(storage, clock, on_storage_error="raise")

    async def failing_call() -> None:
        async with breaker:
            storage.down = True
            raise Boom("the model API failed")

    with pytest.raises(StorageError) as caught:
        await failing_call()
    assert isinstance(caught.value.__context__, Boom)
    assert "Boom('the model API failed')" in "\n".join(caught.value.__notes__)


async def test_closed_success_path_does_not_touch_a_fresh_storage(clock: FakeClock) -> None:
    """With a staleness bound, successes in the closed state read the storage once."""
    storage = FlakyStorage()
    storage.staleness = 0.1  # type: ignore[attr-defined]
    breaker = make(storage, clock)
    for _ in range(100):
        async with breaker:
            pass
    assert storage.calls == 1
    clock.advance(0.2)
    async with breaker:
        pass
    assert storage.calls == 2


@pytest.mark.parametrize("policy", ["allow", "reject", "raise"])
async def test_admin_calls_raise_when_storage_fails(clock: FakeClock, policy: str) -> None:
    """reset(), force_open() and get_state() raise StorageError unless the policy is local."""
    storage = FlakyStorage()
    breaker = make(storage, clock, on_storage_error=policy)
    storage.down = True
    for operation in (breaker.reset, breaker.force_open, breaker.get_state):
        with pytest.raises(StorageError) as caught:
            await operation()
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_admin_calls_act_locally_during_an_outage(clock: FakeClock) -> None:
    """Under the local policy, force_open() during an outage holds this process open."""
    storage = FlakyStorage()
    breaker = make(storage, clock)
    storage.down = True
    await breaker.force_open()
    assert await breaker.get_state() is CircuitState.OPEN
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            pass


class AlwaysConflicting(FlakyStorage):
    """A storage whose compare-and-set never wins, as under extreme contention."""

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        await self._gate()
        return False


@pytest.mark.parametrize("policy", ["local", "raise"])
async def test_endless_conflicts_keep_the_outcome_pending(clock: FakeClock, policy: str) -> None:
    """A failure that loses every compare-and-set stays pending and joins the next write."""
    storage = AlwaysConflicting()
    breaker = make(storage, clock, on_storage_error=policy, failure_threshold=3)
    await fail(breaker)  # conflicts are contention, not a storage failure: nothing raised
    assert await storage.inner.get("model-api") is None
    storage.compare_and_set = storage.inner.compare_and_set  # type: ignore[method-assign]
    await fail(breaker)
    assert (await breaker.get_window_stats()).failures == 2
