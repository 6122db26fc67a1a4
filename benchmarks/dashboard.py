"""Render what a dashboard shows of a breaker through an outage, from metrics it really reported.

A breaker guards a simulated model API for ten minutes of fake time (a
``FakeClock``, so the run takes a second and gives the same numbers every
time): healthy, then down for two and a half minutes, then healthy again.
``anybreaker.otel.instrument()`` reports its metrics to an OpenTelemetry
``InMemoryMetricReader``, collected every 10 s as Prometheus would scrape
them; the chart plots what those collections held, as a dashboard's queries
would (rates of ``anybreaker.calls``, ``anybreaker.state``, quantiles of
``anybreaker.call.duration``).

Usage: ``python benchmarks/dashboard.py [--output DIR]`` writes
``dashboard.png`` and ``dashboard.csv`` (the scraped numbers) to
``docs/assets`` or ``DIR``. Needs ``opentelemetry-sdk`` and ``matplotlib``;
``tests/test_otel_dashboard.py`` checks that the committed CSV is what the
code reports now.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from anybreaker import CircuitBreaker, CircuitBreakerOpenError, CircuitState
from anybreaker.otel import instrument
from anybreaker.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "docs" / "assets"

RUN = 600.0
"""Seconds of fake time."""
SPACING = 0.5
"""Seconds between calls: two calls a second."""
OUTAGE = (180.0, 330.0)
"""The dependency fails every call from the first time to the second."""
SCRAPE_EVERY = 10.0
STATES = (CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN)


@dataclass(frozen=True)
class Scrape:
    """What one collection held: cumulative counters, the state, duration quantiles."""

    at: float
    successes: int
    failures: int
    rejected: int
    state: str
    transitions: int
    p50: float
    p95: float
    """Quantiles of the durations of the calls run since the previous scrape (NaN: none ran)."""


def _breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        "model-api",
        clock=clock,
        failure_threshold=5,
        window_size=30.0,
        timeout=20.0,
        backoff_multiplier=2.0,
        max_timeout=80.0,
    )


async def _simulate(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> list[Scrape]:
    breaker = _breaker(clock)
    instrument(breaker, meter_provider=provider)
    rng = random.Random(7)
    scrapes: list[Scrape] = []
    buckets_before: dict[str, list[int]] = {}
    next_scrape = SCRAPE_EVERY
    start = clock()
    for step in range(int(RUN / SPACING)):
        now = step * SPACING
        while now >= next_scrape:
            clock.set(start + next_scrape)
            scrapes.append(_scrape(reader, next_scrape, buckets_before))
            next_scrape += SCRAPE_EVERY
        clock.set(start + now)
        down = OUTAGE[0] <= now < OUTAGE[1]
        try:
            async with breaker:
                # Latencies stay under the spacing, so calls never overlap.
                clock.advance(rng.uniform(0.25, 0.45) if down else rng.lognormvariate(-1.8, 0.4))
                if down or rng.random() < 0.01:
                    raise ConnectionError("503 Service Unavailable")
        except (ConnectionError, CircuitBreakerOpenError):
            pass
    clock.set(start + next_scrape)
    scrapes.append(_scrape(reader, next_scrape, buckets_before))
    return scrapes


def _scrape(
    reader: InMemoryMetricReader, at: float, buckets_before: dict[str, list[int]]
) -> Scrape:
    data = reader.get_metrics_data()
    assert data is not None
    calls: dict[str, int] = {}
    state = ""
    transitions = 0
    boundaries: tuple[float, ...] = ()
    buckets: list[int] = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if isinstance(point, HistogramDataPoint):
                        boundaries = tuple(point.explicit_bounds)
                        counts = list(point.bucket_counts)
                        buckets = (
                            [a + b for a, b in zip(buckets, counts, strict=True)]
                            if buckets
                            else counts
                        )
                    elif metric.name == "anybreaker.calls":
                        outcome = str(attributes["anybreaker.call.outcome"])
                        calls[outcome] = calls.get(outcome, 0) + int(point.value)
                    elif metric.name == "anybreaker.state" and point.value == 1:
                        state = str(attributes["anybreaker.state"])
                    elif metric.name == "anybreaker.transitions":
                        transitions += int(point.value)
    previous = buckets_before.get("all", [0] * len(buckets))
    ran = [now - before for now, before in zip(buckets, previous, strict=True)]
    buckets_before["all"] = buckets
    return Scrape(
        at=at,
        successes=calls.get("success", 0),
        failures=calls.get("failure", 0),
        rejected=calls.get("rejected", 0),
        state=state,
        transitions=transitions,
        p50=_quantile(0.5, boundaries, ran),
        p95=_quantile(0.95, boundaries, ran),
    )


def _quantile(q: float, boundaries: tuple[float, ...], counts: list[int]) -> float:
    """The ``q`` quantile of a histogram, interpolated as Prometheus's histogram_quantile."""
    total = sum(counts)
    if not total:
        return math.nan
    rank = q * total
    seen = 0
    for bucket, count in enumerate(counts):
        if seen + count >= rank and count:
            if bucket == len(boundaries):
                return boundaries[-1]
            lower = boundaries[bucket - 1] if bucket else 0.0
            return lower + (boundaries[bucket] - lower) * (rank - seen) / count
        seen += count
    return boundaries[-1]


def record() -> list[Scrape]:
    """Run the outage and return every scrape."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    clock = FakeClock(start=1_700_000_000.0)
    try:
        return anyio.run(_simulate, reader, provider, clock)
    finally:
        provider.shutdown()


def to_csv(scrapes: list[Scrape]) -> str:
    """The scrapes as CSV, floats rounded so that the text is stable."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([field.name for field in fields(Scrape)])
    for scrape in scrapes:
        writer.writerow(
            [f"{value:.4f}" if isinstance(value, float) else value for value in astuple(scrape)]
        )
    return out.getvalue()


def render(scrapes: list[Scrape], path: Path) -> None:
    """Plot the scrapes as three dashboard panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [scrape.at / 60 for scrape in scrapes]

    def rate(attribute: str) -> list[float]:
        values = [getattr(scrape, attribute) for scrape in scrapes]
        return [(b - a) / SCRAPE_EVERY for a, b in zip([0, *values[:-1]], values, strict=True)]

    figure, (calls, state, latency) = plt.subplots(
        3, 1, figsize=(9, 7), sharex=True, height_ratios=[3, 1.4, 2]
    )
    figure.suptitle(
        "model-api through an outage: what anybreaker.otel reported, scraped every 10 s",
        fontsize=11,
    )
    for axis in (calls, state, latency):
        axis.axvspan(OUTAGE[0] / 60, OUTAGE[1] / 60, color="#f3d6d6", zorder=0)
        axis.grid(axis="y", alpha=0.3)
    calls.stackplot(
        minutes,
        rate("successes"),
        rate("failures"),
        rate("rejected"),
        labels=["success", "failure", "rejected"],
        colors=["#4c9a5a", "#c8453c", "#9a9a9a"],
        step="pre",
    )
    calls.set_ylabel("calls/s")
    calls.set_title(
        "rate(anybreaker_calls_total[10s]) by anybreaker_call_outcome (shaded: the API is down)",
        fontsize=9,
        loc="left",
    )
    calls.legend(loc="upper right", fontsize=8)
    levels = {state.value: index for index, state in enumerate(STATES)}
    state.step(minutes, [levels[scrape.state] for scrape in scrapes], where="pre", color="#444")
    state.set_yticks(range(len(STATES)), [state.value for state in STATES])
    state.set_ylim(-0.4, len(STATES) - 0.6)
    state.set_title("anybreaker_state == 1", fontsize=9, loc="left")
    latency.plot(minutes, [scrape.p50 for scrape in scrapes], label="p50", color="#3b6ea5")
    latency.plot(minutes, [scrape.p95 for scrape in scrapes], label="p95", color="#e08a2c")
    latency.set_ylabel("seconds")
    latency.set_xlabel("minutes")
    latency.set_title(
        "histogram_quantile over anybreaker_call_duration_seconds_bucket (gaps: no call ran)",
        fontsize=9,
        loc="left",
    )
    latency.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    """Record the outage, write the CSV and the chart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ASSETS, help="where to write the files")
    args = parser.parse_args(argv)
    scrapes = record()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "dashboard.csv").write_text(to_csv(scrapes), encoding="utf-8")
    render(scrapes, args.output / "dashboard.png")
    print(f"wrote {args.output / 'dashboard.png'} and dashboard.csv")


if __name__ == "__main__":
    main()
