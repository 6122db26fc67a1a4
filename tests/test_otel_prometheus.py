"""A Prometheus server scraping an instrumented process sees the breakers' series."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import anyio.to_thread
import pytest

pytest.importorskip("opentelemetry.sdk.metrics", reason="needs opentelemetry-sdk")
pytest.importorskip(
    "opentelemetry.exporter.prometheus", reason="needs opentelemetry-exporter-prometheus"
)

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from anybreaker import CircuitBreaker, CircuitBreakerOpenError
from anybreaker.otel import instrument
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def endpoint() -> Iterator[tuple[str, MeterProvider]]:
    """A /metrics endpoint on a free port, served by the Prometheus exporter's reader."""
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{server.server_port}/metrics", provider
    server.shutdown()
    server.server_close()
    thread.join()
    provider.shutdown()


async def scrape(url: str) -> str:
    """GET the endpoint as Prometheus does, off the event loop."""

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            body: bytes = response.read()
            return body.decode()

    return await anyio.to_thread.run_sync(get)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the scrape, keyed by name and labels (the scope's labels left out)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (key, value) for key, value in sample.labels.items() if not key.startswith("otel_")
            )
            found[sample.name, labels] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """A sample's key, with the breaker's name."""
    return name, frozenset({("anybreaker_breaker_name", "model-api"), *labels.items()})


async def _fail(clock: FakeClock) -> None:
    clock.advance(0.04)
    raise ConnectionError("model API down")


async def test_a_scrape_shows_calls_durations_state_and_transitions(
    endpoint: tuple[str, MeterProvider], clock: FakeClock
) -> None:
    """The text format carries every series with the values of the calls made."""
    url, provider = endpoint
    breaker = CircuitBreaker("model-api", clock=clock, failure_threshold=3, timeout=30.0)
    instrument(breaker, meter_provider=provider)
    for _ in range(2):
        async with breaker:
            clock.advance(0.3)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(_fail, clock)
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            pass

    text = await scrape(url)
    assert "# TYPE anybreaker_calls_total counter" in text
    assert "# TYPE anybreaker_call_duration_seconds histogram" in text
    assert "# TYPE anybreaker_state gauge" in text
    assert "# TYPE anybreaker_transitions_total counter" in text
    found = samples(text)
    calls = "anybreaker_calls_total"
    assert found[key(calls, anybreaker_call_outcome="success")] == 2
    assert found[key(calls, anybreaker_call_outcome="failure")] == 3
    assert found[key(calls, anybreaker_call_outcome="rejected")] == 1
    duration = "anybreaker_call_duration_seconds"
    success = {"anybreaker_call_outcome": "success"}
    assert found[key(f"{duration}_count", **success)] == 2
    assert found[key(f"{duration}_sum", **success)] == pytest.approx(0.6)
    assert found[key(f"{duration}_bucket", le="0.25", **success)] == 0
    assert found[key(f"{duration}_bucket", le="0.5", **success)] == 2
    assert found[key(f"{duration}_bucket", le="0.05", anybreaker_call_outcome="failure")] == 3
    assert found[key("anybreaker_state", anybreaker_state="open")] == 1
    assert found[key("anybreaker_state", anybreaker_state="closed")] == 0
    transitions = "anybreaker_transitions_total"
    assert found[key(transitions, anybreaker_state="open", anybreaker_previous_state="closed")] == 1

    # Prometheus scrapes again later: the counters went on, the state moved on time.
    clock.advance(30.0)
    async with breaker:
        pass
    found = samples(await scrape(url))
    assert found[key(calls, anybreaker_call_outcome="success")] == 3
    assert found[key("anybreaker_state", anybreaker_state="half_open")] == 1
    assert found[key("anybreaker_state", anybreaker_state="open")] == 0
