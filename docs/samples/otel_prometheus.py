"""Report a breaker's metrics to Prometheus, and scrape them as Prometheus would."""

import urllib.request

import anyio
import anyio.to_thread
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server

from anybreaker import CircuitBreaker, CircuitBreakerOpenError
from anybreaker.otel import instrument
from anybreaker.testing import FakeClock


async def ask_model(clock: FakeClock, seconds: float, fails: bool) -> str:
    clock.advance(seconds)  # the call takes this long
    if fails:
        raise ConnectionError("503 Service Unavailable")
    return "an answer"


async def main() -> None:
    # In an application: the default registry, a fixed port (9464 is the
    # exporter's), and metrics.set_meter_provider(provider), then instrument()
    # with no argument for every breaker of the process.
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry, scope_info_enabled=False)]
    )
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)

    clock = FakeClock()
    breaker = CircuitBreaker("model-api", failure_threshold=3, timeout=30.0, clock=clock)
    instrument(breaker, meter_provider=provider)

    for seconds, fails in [(0.25, False), (0.5, False), (1.5, True), (2.0, True), (2.0, True)]:
        try:
            async with breaker:
                await ask_model(clock, seconds, fails)
        except ConnectionError:
            pass
    try:
        async with breaker:
            await ask_model(clock, 0.25, False)
    except CircuitBreakerOpenError:
        pass

    url = f"http://127.0.0.1:{server.server_port}/metrics"
    text = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url).read().decode())
    for line in text.splitlines():
        # The breaker's series; each histogram also has a _bucket line per boundary.
        if "anybreaker_" in line and "_bucket" not in line:
            print(line)
    server.shutdown()
    server.server_close()
    thread.join()
    provider.shutdown()


if __name__ == "__main__":
    anyio.run(main)
