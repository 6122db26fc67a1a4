"""BreakerTransport under the OpenAI SDK, pointed at a real local server.

The SDK (openai >= 3.14.1) lets an exception from its HTTP client that is not
an httpx error reach its caller as itself, without retrying it: a refusal is
``CircuitBreakerOpenError``, at once. ``nox -s tests_sdk`` installs the SDK.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("httpx", reason='needs anybreaker[httpx] (pip install "anybreaker[httpx]")')
pytest.importorskip(
    "openai", reason="needs the OpenAI SDK (pip install openai; nox -s tests_sdk installs it)"
)

import httpx
import openai

from anybreaker import CircuitBreakerOpenError, CircuitBreakerRegistry, CircuitState
from anybreaker.httpx import BreakerTransport, CallTimeout, origin_key
from anybreaker.testing import FakeClock

from ._http_server import HTTPTestServer, Reply, chat_completion, serve

OPENAI_VERSION = tuple(
    int(part) for part in re.findall(r"\d+", importlib.metadata.version("openai"))[:3]
)
if OPENAI_VERSION < (3, 14, 1):
    pytest.skip(
        f"openai {importlib.metadata.version('openai')} retries and wraps every exception of "
        "its HTTP client; these tests pin the behaviour of openai >= 3.14.1",
        allow_module_level=True,
    )

pytestmark = pytest.mark.anyio

SERVER_ERROR = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
QUICK = 1.0
"""Seconds within which a refusal reaches the SDK's caller (its two retries would sleep 1.1 s+)."""


@pytest.fixture
def server() -> Iterator[HTTPTestServer]:
    """A real HTTP server on 127.0.0.1 that answers chat completions until told otherwise."""
    with serve() as running:
        running.answer(Reply(200, chat_completion()))
        yield running


def sdk_client(
    server: HTTPTestServer, transport: BreakerTransport, *, max_retries: int = 0
) -> openai.AsyncOpenAI:
    """An OpenAI client for ``server`` whose HTTP client sends through ``transport``."""
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1",
        api_key="test-key",
        max_retries=max_retries,
        # openai's annotations name httpx2's client only; at run time it takes httpx's too.
        http_client=httpx.AsyncClient(transport=transport),  # type: ignore[arg-type]
    )


async def ask(client: openai.AsyncOpenAI, model: str = "m") -> str | None:
    """One chat completion; its answer."""
    completion = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}]
    )
    return completion.choices[0].message.content


async def test_a_failing_api_opens_the_breaker_and_recovery_closes_it(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """500s reach the caller as the SDK's errors; then a quick refusal; after recovery, answers."""
    server.answer(Reply(500, SERVER_ERROR))
    registry = CircuitBreakerRegistry(
        clock=clock, failure_threshold=3, timeout=30.0, success_threshold=1
    )
    async with sdk_client(server, BreakerTransport(registry=registry)) as client:
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                await ask(client)
        started = time.monotonic()
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await ask(client)
        assert time.monotonic() - started < QUICK
        assert refused.value.circuit_name == server.origin
        assert refused.value.time_until_retry == 30.0
        assert len(server.requests) == 3

        server.answer(Reply(200, chat_completion("recovered")))
        clock.advance(30.0)
        assert await ask(client) == "recovered"
    assert registry[server.origin].state is CircuitState.CLOSED


async def test_the_sdks_retries_stop_at_an_open_breaker(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """With the SDK's default retries, a refusal is raised at once, after one attempt."""
    registry = CircuitBreakerRegistry(clock=clock)
    await registry[server.origin].open_for(30.0)
    async with sdk_client(server, BreakerTransport(registry=registry), max_retries=2) as client:
        started = time.monotonic()
        with pytest.raises(CircuitBreakerOpenError):
            await ask(client)
        assert time.monotonic() - started < QUICK
    assert registry[server.origin].stats.rejected_calls == 1
    assert server.requests == []


async def test_a_retry_of_the_sdk_is_refused_once_the_breaker_opened(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """The SDK retries a 500; the failure opened the breaker, so the retry ends in the refusal."""
    server.answer(Reply(500, SERVER_ERROR))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with sdk_client(server, BreakerTransport(registry=registry), max_retries=2) as client:
        with pytest.raises(CircuitBreakerOpenError):
            await ask(client)
    assert len(server.requests) == 1
    assert registry[server.origin].stats.rejected_calls == 1


async def test_a_rate_limit_keeps_the_sdk_away_for_its_retry_after(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """A 429 with Retry-After: 20 is the SDK's RateLimitError; for 20 s every call is refused."""
    server.answer(Reply(429, SERVER_ERROR, headers={"Retry-After": "20"}))
    registry = CircuitBreakerRegistry(clock=clock)
    async with sdk_client(server, BreakerTransport(registry=registry)) as client:
        with pytest.raises(openai.RateLimitError):
            await ask(client)
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await ask(client)
        assert refused.value.time_until_retry == 20.0
        server.answer(Reply(200, chat_completion()))
        clock.advance(20.0)
        assert await ask(client) == "hello from the model"
    assert len(server.requests) == 2


async def test_a_hang_cut_by_call_timeout_is_the_sdks_timeout_error(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """call_timeout cuts a hanging request: the SDK raises APITimeoutError; the breaker opens."""
    server.answer(Reply(hang=True))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1, call_timeout=0.2)
    async with sdk_client(server, BreakerTransport(registry=registry)) as client:
        with pytest.raises(openai.APITimeoutError) as timed_out:
            await ask(client)
        assert isinstance(timed_out.value.__cause__, CallTimeout)
        with pytest.raises(CircuitBreakerOpenError):
            await ask(client)
    assert len(server.requests) == 1


def per_model(request: httpx.Request) -> str:
    """The breaker key of a model API request: its origin and the model it names."""
    model = json.loads(request.content).get("model") if request.content else None
    return f"{origin_key(request)}/{model}" if model else origin_key(request)


async def test_per_model_keys_let_one_model_fail_while_another_answers(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """Keyed by model, a failing model is refused and the caller falls back to another."""
    server.answer(Reply(500, SERVER_ERROR), model="big-model")
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with sdk_client(server, BreakerTransport(registry=registry, key=per_model)) as client:
        with pytest.raises(openai.InternalServerError):
            await ask(client, "big-model")
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await ask(client, "big-model")
        assert await ask(client, "small-model") == "hello from the model"
    assert refused.value.circuit_name == f"{server.origin}/big-model"
    assert len(server.requests) == 2
