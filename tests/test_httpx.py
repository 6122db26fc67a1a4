"""BreakerTransport against a real HTTP server: what counts, keys, Retry-After, hangs, bodies."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("httpx", reason='needs anybreaker[httpx] (pip install "anybreaker[httpx]")')

import anyio
import httpx

from anybreaker import (
    CircuitBreakerOpenError,
    CircuitBreakerRegistry,
    CircuitState,
    RetryAfter,
)
from anybreaker.httpx import BreakerTransport, CallTimeout, FailedResponse, origin_key
from anybreaker.testing import FakeClock

from ._http_server import HTTPTestServer, Reply, serve

pytestmark = pytest.mark.anyio

BODY = b'{"error": "upstream exploded"}'


@pytest.fixture
def server() -> Iterator[HTTPTestServer]:
    """A real HTTP server on 127.0.0.1, healthy until told otherwise."""
    with serve() as running:
        yield running


def client_for(
    server: HTTPTestServer, transport: BreakerTransport, **options: Any
) -> httpx.AsyncClient:
    """A client that sends to ``server`` through ``transport``."""
    return httpx.AsyncClient(transport=transport, base_url=server.url, **options)


async def test_healthy_responses_pass_and_keep_the_breaker_closed(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """2xx responses reach the caller; the breaker of the origin stays closed."""
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        for _ in range(3):
            response = await client.get("/v1/models")
            assert response.status_code == 200
            assert response.json() == {"ok": True}
    assert registry[server.origin].state is CircuitState.CLOSED
    assert len(server.requests) == 3


async def test_5xx_responses_reach_the_caller_and_open_the_breaker(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """Each 500 is returned with its body; the third opens the breaker, the fourth is refused."""
    server.answer(Reply(500, BODY))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=3, timeout=30.0)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        for _ in range(3):
            response = await client.post("/v1/chat/completions", json={"model": "m"})
            assert response.status_code == 500
            assert response.content == BODY
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await client.post("/v1/chat/completions", json={"model": "m"})
    assert refused.value.circuit_name == server.origin
    assert refused.value.time_until_retry == 30.0
    assert not isinstance(refused.value, httpx.HTTPError)
    assert len(server.requests) == 3


async def test_the_breaker_half_opens_and_closes_when_the_api_recovers(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """After timeout a failing trial re-opens the breaker; successful trials close it."""
    server.answer(Reply(502, BODY))
    registry = CircuitBreakerRegistry(
        clock=clock, failure_threshold=1, timeout=10.0, success_threshold=2
    )
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        assert (await client.get("/")).status_code == 502
        clock.advance(10.0)
        assert (await client.get("/")).status_code == 502  # the trial fails
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("/")
        server.answer(Reply(200))
        clock.advance(10.0)
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/")).status_code == 200
    assert registry[server.origin].state is CircuitState.CLOSED


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_other_4xx_are_successes(
    server: HTTPTestServer, clock: FakeClock, status: int
) -> None:
    """A 4xx other than 429 with Retry-After is an answer: it never opens the breaker."""
    server.answer(Reply(status, b'{"error": "bad request"}'))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        for _ in range(3):
            assert (await client.get("/")).status_code == status
    assert registry[server.origin].state is CircuitState.CLOSED
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_in_seconds_opens_the_breaker_for_that_long(
    server: HTTPTestServer, clock: FakeClock, status: int
) -> None:
    """A 429 or 503 with Retry-After: 7 is returned, and no request leaves for 7 s."""
    server.answer(Reply(status, BODY, headers={"Retry-After": "7"}))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=5, timeout=30.0)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        response = await client.get("/")
        assert response.status_code == status
        assert response.headers["retry-after"] == "7"
        assert response.content == BODY
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await client.get("/")
        assert refused.value.time_until_retry == 7.0
        server.answer(Reply(200))
        clock.advance(6.5)
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("/")
        clock.advance(0.5)
        assert (await client.get("/")).status_code == 200
    assert len(server.requests) == 2


async def test_retry_after_as_an_http_date_is_measured_from_the_responses_date(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """Retry-After: <date 7 s after the response's Date> opens the breaker for 7 s."""
    server.answer(Reply(429, BODY, retry_after_date_in=7.0))
    registry = CircuitBreakerRegistry(clock=clock)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        assert (await client.get("/")).status_code == 429
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await client.get("/")
    assert refused.value.time_until_retry == 7.0


@pytest.mark.parametrize(
    ("reply", "cap", "expected"),
    [
        (Reply(429, headers={"Retry-After": "86400"}), None, 300.0),
        (Reply(429, headers={"Retry-After": "86400"}), 60.0, 60.0),
        (Reply(503, retry_after_date_in=86400.0), None, 300.0),
        (Reply(503, retry_after_date_in=86400.0), 60.0, 60.0),
    ],
    ids=["seconds-default-cap", "seconds-cap-60", "date-default-cap", "date-cap-60"],
)
async def test_retry_after_is_capped_by_max_retry_after(
    server: HTTPTestServer,
    clock: FakeClock,
    reply: Reply,
    cap: float | None,
    expected: float,
) -> None:
    """A day-long Retry-After opens the breaker for max_retry_after (300 s by default)."""
    server.answer(reply)
    registry = CircuitBreakerRegistry(clock=clock)
    transport = (
        BreakerTransport(registry=registry)
        if cap is None
        else BreakerTransport(registry=registry, max_retry_after=cap)
    )
    async with client_for(server, transport) as client:
        assert (await client.get("/")).status_code == reply.status
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await client.get("/")
    assert refused.value.time_until_retry == expected


@pytest.mark.parametrize(
    "reply",
    [
        Reply(429),
        Reply(429, headers={"Retry-After": "0"}),
        Reply(429, headers={"Retry-After": "soon"}),
        Reply(429, headers={"Retry-After": "-5"}),
        Reply(429, retry_after_date_in=-60.0),
    ],
    ids=["none", "zero", "not-a-delay", "negative", "date-in-the-past"],
)
async def test_a_429_without_a_usable_retry_after_is_a_success(
    server: HTTPTestServer, clock: FakeClock, reply: Reply
) -> None:
    """A 429 whose Retry-After is missing, zero, past or unreadable counts as any 4xx."""
    server.answer(reply)
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        for _ in range(3):
            assert (await client.get("/")).status_code == 429
    assert registry[server.origin].state is CircuitState.CLOSED


async def test_a_503_without_retry_after_is_a_failure(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """A 503 with no Retry-After counts as any 5xx: the breaker opens for its timeout."""
    server.answer(Reply(503, BODY))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1, timeout=30.0)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        assert (await client.get("/")).status_code == 503
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await client.get("/")
    assert refused.value.time_until_retry == 30.0


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_errors_are_failures(clock: FakeClock) -> None:
    """A refused connection raises httpx.ConnectError and counts; then the breaker refuses."""
    url = f"http://127.0.0.1:{closed_port()}"
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=2)
    async with httpx.AsyncClient(transport=BreakerTransport(registry=registry)) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/v1/models")
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await client.get(f"{url}/v1/models")
    assert refused.value.circuit_name == url


async def test_a_hang_cut_by_the_clients_timeout_is_a_failure(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """The client's own timeout works inside the breaker: a hang is a failure."""
    server.answer(Reply(hang=True))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with client_for(server, BreakerTransport(registry=registry), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/")
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("/")
    assert len(server.requests) == 1


async def test_a_hang_cut_by_call_timeout_raises_an_httpx_timeout(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """call_timeout cancels a hanging request: CallTimeout (httpx's and Python's), a failure."""
    server.answer(Reply(hang=True))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1, call_timeout=0.2)
    async with client_for(server, BreakerTransport(registry=registry), timeout=None) as client:
        with anyio.fail_after(5):
            with pytest.raises(CallTimeout) as timed_out:
                await client.get("/v1/models")
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("/v1/models")
    assert isinstance(timed_out.value, httpx.TimeoutException)
    assert isinstance(timed_out.value, TimeoutError)
    assert timed_out.value.request.url == f"{server.url}/v1/models"
    assert "call_timeout=0.2" in str(timed_out.value)


async def test_a_key_function_gives_each_path_prefix_its_own_breaker(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """Keyed by first path segment, a failing tool is refused while another still answers."""

    def per_tool(request: httpx.Request) -> str:
        return f"{origin_key(request)}/{request.url.path.split('/')[1]}"

    server.answer(Reply(500, BODY), prefix="/search")
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    transport = BreakerTransport(registry=registry, key=per_tool)
    async with client_for(server, transport) as client:
        assert (await client.get("/search/q")).status_code == 500
        with pytest.raises(CircuitBreakerOpenError) as refused:
            await client.get("/search/other")
        assert (await client.get("/weather/today")).status_code == 200
    assert refused.value.circuit_name == f"{server.origin}/search"
    assert transport.key is per_tool
    assert {breaker.name for breaker in registry} == {
        f"{server.origin}/search",
        f"{server.origin}/weather",
    }


async def test_status_codes_and_a_predicate_choose_what_counts(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """failure_status_codes, retry_after_status_codes and is_failure_response replace the rules."""
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1, timeout=30.0)
    transport = BreakerTransport(
        registry=registry,
        key=lambda request: request.url.path,
        failure_status_codes={502, 503, 504},
        retry_after_status_codes=(),
        is_failure_response=lambda response: response.headers.get("x-overloaded") == "1",
    )
    server.answer(Reply(500), prefix="/plain-500")
    server.answer(Reply(429, headers={"Retry-After": "7"}), prefix="/rate-limited")
    server.answer(Reply(503, headers={"Retry-After": "7"}), prefix="/unavailable")
    server.answer(Reply(200, headers={"x-overloaded": "1"}), prefix="/overloaded")
    async with client_for(server, transport) as client:
        for path in ("/plain-500", "/rate-limited", "/unavailable", "/overloaded"):
            await client.get(path)
        assert (await client.get("/plain-500")).status_code == 500
        assert (await client.get("/rate-limited")).status_code == 429
        for path in ("/unavailable", "/overloaded"):
            with pytest.raises(CircuitBreakerOpenError) as refused:
                await client.get(path)
            assert refused.value.time_until_retry == 30.0  # the timeout, not Retry-After


async def test_a_streamed_failure_is_judged_without_reading_its_body(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """The caller gets a 500 while the server still holds half its body, and reads it all."""
    body = b"x" * 100_000
    server.answer(Reply(500, body, hold_body=True))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with client_for(server, BreakerTransport(registry=registry)) as client:
        with anyio.fail_after(5):
            async with client.stream("GET", "/v1/responses") as response:
                assert response.status_code == 500
                assert not response.is_stream_consumed
                server.release()
                assert await response.aread() == body
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("/v1/responses")


async def test_the_default_transport_and_registry(server: HTTPTestServer) -> None:
    """With no arguments it sends through httpx's own transport, with a fresh registry each."""
    first, second = BreakerTransport(), BreakerTransport()
    assert first.registry is not second.registry
    assert first.key is origin_key
    async with client_for(server, first) as client:
        assert (await client.get("/")).status_code == 200
    assert [breaker.name for breaker in first.registry] == [server.origin]
    assert len(second.registry) == 0


async def test_transports_sharing_a_registry_share_breakers(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """Failures seen through one client make another client on the same registry refuse."""
    server.answer(Reply(500))
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    async with (
        client_for(server, BreakerTransport(registry=registry)) as first,
        client_for(server, BreakerTransport(registry=registry)) as second,
    ):
        assert (await first.get("/")).status_code == 500
        with pytest.raises(CircuitBreakerOpenError):
            await second.get("/")


class Recording(httpx.AsyncBaseTransport):
    """Wraps a transport; remembers the responses it gave and whether it was entered or closed."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.responses: list[httpx.Response] = []
        self.events: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.responses.append(response)
        return response

    async def __aenter__(self) -> Recording:
        self.events.append("enter")
        await self.inner.__aenter__()
        return self

    async def aclose(self) -> None:
        self.events.append("close")
        await self.inner.aclose()


async def test_a_predicate_that_raises_reaches_the_caller_and_closes_the_response(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """A bug in is_failure_response surfaces, counts as a failure, and leaks no connection."""

    def broken(response: httpx.Response) -> bool:
        raise ValueError("predicate bug")

    recording = Recording()
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    transport = BreakerTransport(recording, registry=registry, is_failure_response=broken)
    async with client_for(server, transport) as client:
        with pytest.raises(ValueError, match="predicate bug"):
            await client.get("/")
        with pytest.raises(CircuitBreakerOpenError):
            await client.get("/")
    assert [response.is_closed for response in recording.responses] == [True]


async def test_the_client_enters_and_closes_the_wrapped_transport(server: HTTPTestServer) -> None:
    """async with the client enters the wrapped transport and closes it at the end."""
    recording = Recording()
    async with client_for(server, BreakerTransport(recording)) as client:
        assert recording.events == ["enter"]
        assert (await client.get("/")).status_code == 200
    assert recording.events == ["enter", "close"]


async def test_the_breaker_sees_failed_responses_and_retry_after(
    server: HTTPTestServer, clock: FakeClock
) -> None:
    """A registry's is_failure gets FailedResponse (with the response) and RetryAfter."""
    seen: list[Exception] = []

    def is_failure(error: Exception) -> bool:
        seen.append(error)
        return True

    server.answer(Reply(500), prefix="/failing")
    server.answer(Reply(429, headers={"Retry-After": "3"}), prefix="/limited")
    registry = CircuitBreakerRegistry(clock=clock, is_failure=is_failure)
    transport = BreakerTransport(registry=registry, key=lambda request: request.url.path)
    async with client_for(server, transport) as client:
        await client.get("/failing")
        await client.get("/limited")
    failed, limited = seen
    assert isinstance(failed, FailedResponse)
    assert failed.response.status_code == 500
    assert isinstance(limited, RetryAfter)
    assert limited.seconds == 3.0


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://api.openai.com/v1/chat/completions", "https://api.openai.com"),
        ("https://api.openai.com:443/v1/models", "https://api.openai.com"),
        ("http://127.0.0.1:8080/tools/search", "http://127.0.0.1:8080"),
        ("http://[::1]:8081/", "http://[::1]:8081"),
        ("https://user:secret@mcp.example.com/sse", "https://mcp.example.com"),
        ("https://bücher.example/", "https://xn--bcher-kva.example"),
    ],
)
def test_origin_key_names_scheme_host_and_port(url: str, key: str) -> None:
    """The default key is the origin, default ports and credentials left out."""
    assert origin_key(httpx.Request("GET", url)) == key


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"transport": httpx.HTTPTransport()}, TypeError, "sync transport"),
        ({"transport": object()}, TypeError, "transport"),
        ({"registry": object()}, TypeError, "registry"),
        ({"key": "origin"}, TypeError, "key"),
        ({"is_failure_response": 500}, TypeError, "is_failure_response"),
        ({"failure_status_codes": 500}, TypeError, "failure_status_codes"),
        ({"failure_status_codes": ["500"]}, TypeError, "failure_status_codes"),
        ({"retry_after_status_codes": [42]}, ValueError, "retry_after_status_codes"),
        ({"max_retry_after": "60"}, TypeError, "max_retry_after"),
        ({"max_retry_after": 0}, ValueError, "max_retry_after"),
        ({"max_retry_after": float("inf")}, ValueError, "max_retry_after"),
    ],
)
def test_invalid_arguments_are_refused_by_name(
    arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Each wrong argument raises TypeError or ValueError naming it."""
    with pytest.raises(error, match=match):
        BreakerTransport(**arguments)
