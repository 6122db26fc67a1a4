"""What a flood of calls costs the storage: shared reads, and retries without a read.

Every test runs on every storage, under asyncio and trio, with a fake clock.
"""

from __future__ import annotations

from collections import Counter

import anyio
import anyio.lowlevel
import pytest

from anybreaker import BreakerRecord, CircuitBreaker, CircuitBreakerOpenError, Storage
from anybreaker.testing import FakeClock

from ._storages import InFront

pytestmark = pytest.mark.anyio

NAME = "model-api"
TASKS = 20


class Boom(Exception):
    """The guarded call's failure."""


class Counted(InFront):
    """Counts the operations that reach the storage; each read yields first, as I/O would."""

    def __init__(self, inner: Storage, staleness: float) -> None:
        super().__init__(inner)
        self.staleness = staleness
        self.calls: Counter[str] = Counter()

    async def get(self, name: str) -> BreakerRecord | None:
        self.calls["get"] += 1
        await anyio.lowlevel.checkpoint()
        return await super().get(name)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        self.calls["compare_and_set"] += 1
        return await super().compare_and_set(name, expected_version, record)


class CountedWithGet(Counted):
    """``Counted``, offering the optional ``compare_and_set_or_get`` of the storage behind."""

    async def compare_and_set_or_get(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> tuple[bool, BreakerRecord | None]:
        self.calls["compare_and_set_or_get"] += 1
        operation = getattr(self.inner, "compare_and_set_or_get")  # noqa: B009
        result: tuple[bool, BreakerRecord | None] = await operation(name, expected_version, record)
        return result


async def _flood(breaker: CircuitBreaker) -> tuple[int, int]:
    """``TASKS`` calls entered at once; how many ran, and how many were refused."""
    ran = refused = 0

    async def call() -> None:
        nonlocal ran, refused
        try:
            async with breaker:
                ran += 1
        except CircuitBreakerOpenError:
            refused += 1

    async with anyio.create_task_group() as group:
        for _ in range(TASKS):
            group.start_soon(call)
    return ran, refused


async def test_calls_at_a_stale_cache_share_one_read(storage: Storage, clock: FakeClock) -> None:
    """Calls arriving while a read is in flight wait for it instead of reading too."""
    counted = Counted(storage, staleness=0.1)
    breaker = CircuitBreaker(NAME, storage=counted, clock=clock)
    assert await _flood(breaker) == (TASKS, 0)
    assert counted.calls["get"] == 1
    clock.advance(0.1)  # stale again: the next flood reads once more
    assert await _flood(breaker) == (TASKS, 0)
    assert counted.calls["get"] == 2


async def test_with_staleness_zero_every_call_reads(storage: Storage, clock: FakeClock) -> None:
    """``staleness=0`` means a read on every call: no call acts on another's read."""
    counted = Counted(storage, staleness=0.0)
    breaker = CircuitBreaker(NAME, storage=counted, clock=clock)
    assert await _flood(breaker) == (TASKS, 0)
    assert counted.calls["get"] == TASKS


async def test_the_calls_waiting_for_a_shared_read_see_the_opening_it_read(
    storage: Storage, clock: FakeClock
) -> None:
    """A breaker opened by another process refuses every call that shared the read."""
    opener = CircuitBreaker(NAME, storage=storage, clock=clock, failure_threshold=1)
    counted = Counted(storage, staleness=0.1)
    breaker = CircuitBreaker(NAME, storage=counted, clock=clock, failure_threshold=1)
    assert await _flood(breaker) == (TASKS, 0)
    with pytest.raises(Boom):
        async with opener:
            raise Boom
    clock.advance(0.1)
    assert await _flood(breaker) == (0, TASKS)
    assert counted.calls["get"] == 2


@pytest.mark.parametrize("front", [Counted, CountedWithGet], ids=["get", "or-get"])
async def test_a_write_that_lost_a_race_retries_against_what_is_stored(
    storage: Storage, clock: FakeClock, front: type[Counted]
) -> None:
    """A failure whose write conflicts is written on the retry, after one read at most.

    With ``compare_and_set_or_get`` the conflict itself says what is stored:
    the retry needs no read.
    """
    counted = front(storage, staleness=0.1)
    other_process = CircuitBreaker(NAME, storage=storage, clock=clock, failure_threshold=100)
    breaker = CircuitBreaker(NAME, storage=counted, clock=clock, failure_threshold=100)
    await breaker.get_state()
    with pytest.raises(Boom):
        async with other_process:
            raise Boom
    counted.calls.clear()
    with pytest.raises(Boom):
        async with breaker:  # admitted on the cached record; its write conflicts
            raise Boom
    stats = await other_process.get_window_stats()
    assert stats.failures == 2
    if front is CountedWithGet:
        assert counted.calls == {"compare_and_set_or_get": 2}
    else:
        assert counted.calls == {"compare_and_set": 2, "get": 1}
