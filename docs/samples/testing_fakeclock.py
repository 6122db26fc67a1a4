"""Tests of code that uses a breaker: a FakeClock moves time, nothing sleeps."""

from collections.abc import Awaitable, Callable

import pytest

from anybreaker import CircuitBreaker, CircuitBreakerOpenError, CircuitState
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio


class Assistant:
    """The code under test: it guards its model API with a breaker."""

    def __init__(
        self,
        model_api: Callable[[str], Awaitable[str]],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.model_api = model_api
        self.breaker = CircuitBreaker(
            "model-api", failure_threshold=2, success_threshold=1, timeout=30.0, clock=clock
        )

    async def answer(self, question: str) -> str:
        try:
            async with self.breaker:
                return await self.model_api(question)
        except (CircuitBreakerOpenError, ConnectionError):
            return "The assistant is unavailable right now."


class FakeModelAPI:
    """A model API the test switches off and on, counting the calls it gets."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def __call__(self, question: str) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionError("model API down")
        return "42"


async def test_stops_calling_a_failing_api() -> None:
    api = FakeModelAPI()
    assistant = Assistant(api, clock=FakeClock())
    api.up = False

    for _ in range(5):
        assert await assistant.answer("?") == "The assistant is unavailable right now."
    assert api.calls == 2  # the breaker opened after two failures


async def test_calls_again_once_the_api_recovers() -> None:
    api, clock = FakeModelAPI(), FakeClock()
    assistant = Assistant(api, clock=clock)
    api.up = False
    for _ in range(2):
        await assistant.answer("?")

    api.up = True
    clock.advance(29.0)
    assert await assistant.answer("?") == "The assistant is unavailable right now."
    clock.advance(1.0)  # timeout reached: one trial call goes through
    assert await assistant.answer("?") == "42"
    assert assistant.breaker.state is CircuitState.CLOSED


async def test_falls_back_when_the_breaker_is_forced_open() -> None:
    api = FakeModelAPI()
    assistant = Assistant(api)
    await assistant.breaker.force_open()  # no need to fake failures

    assert await assistant.answer("?") == "The assistant is unavailable right now."
    assert api.calls == 0
