"""One MemoryStorage shared by event loops in several threads: no outcome is lost.

Each thread runs its own event loop (asyncio and trio side by side, where trio
is installed) with its own breaker object of one name. The interpreter
switches threads every microsecond, so that a count that is not atomic is
interrupted in the middle.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator

import anyio
import pytest

from anybreaker import CircuitBreaker, CircuitBreakerOpenError, CircuitState, MemoryStorage

NAME = "model-api"
LOOPS = ("asyncio", "trio") * 2 if importlib.util.find_spec("trio") else ("asyncio",) * 4


class Boom(Exception):
    """The guarded dependency failed."""


@pytest.fixture(autouse=True)
def switch_threads_often() -> Iterator[None]:
    """Let the interpreter switch threads after (almost) every bytecode."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def fail_in_threads(storage: MemoryStorage, failures: int, **settings: object) -> list[int]:
    """Fail ``failures`` times in each thread of ``LOOPS``; the calls each saw refused."""
    refused = [0] * len(LOOPS)
    start = threading.Barrier(len(LOOPS), timeout=30)

    def thread(index: int, backend: str) -> None:
        async def calls() -> None:
            breaker = CircuitBreaker(NAME, storage=storage, **settings)  # type: ignore[arg-type]
            start.wait()
            for _ in range(failures):
                try:
                    async with breaker:
                        raise Boom
                except Boom:
                    pass
                except CircuitBreakerOpenError:
                    refused[index] += 1

        try:
            anyio.run(calls, backend=backend)
        except BaseException:
            start.abort()  # the others stop waiting for this one
            raise

    threads = [
        threading.Thread(target=thread, args=(index, backend), daemon=True)
        for index, backend in enumerate(LOOPS)
    ]
    for each in threads:
        each.start()
    for each in threads:
        each.join(timeout=60)
        assert not each.is_alive(), "a thread's event loop did not finish"
    return refused


def stored_window(storage: MemoryStorage, **settings: object) -> tuple[CircuitState, int]:
    """The state and the failures in the window, as a new breaker object reads them."""

    async def read() -> tuple[CircuitState, int]:
        breaker = CircuitBreaker(NAME, storage=storage, **settings)  # type: ignore[arg-type]
        stats = await breaker.get_window_stats()
        return await breaker.get_state(), stats.failures

    return anyio.run(read)


def test_every_failure_of_every_thread_is_counted() -> None:
    """Four event loops fail 10,000 times in all on one name: the window holds every one."""
    storage = MemoryStorage()
    never = {"failure_threshold": 10**9}
    assert fail_in_threads(storage, 2500, **never) == [0] * len(LOOPS)
    assert stored_window(storage, **never) == (CircuitState.CLOSED, 10_000)


def test_the_breaker_opens_on_the_failure_that_reaches_the_threshold() -> None:
    """Threads racing past the threshold open the breaker once; the rest of their calls refused."""
    storage = MemoryStorage()
    settings = {"failure_threshold": 300, "timeout": 3600.0}
    refused = fail_in_threads(storage, 200, **settings)
    # 800 calls: the first 300 failures open it, and every later call is refused,
    # except those already past the check when it opened (at most one per loop).
    assert 800 - 300 - len(LOOPS) <= sum(refused) <= 800 - 300
    assert stored_window(storage, **settings)[0] is CircuitState.OPEN
