"""``anybreaker.otel.instrument()``: the metrics an OpenTelemetry reader sees match the calls."""

from __future__ import annotations

import bisect
import gc
import math
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk.metrics", reason="needs opentelemetry-sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from anybreaker import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitBreakerRegistry,
)
from anybreaker._breaker import NEW_BREAKER_HOOKS
from anybreaker.otel import instrument
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio

BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60)


@dataclass
class Histogram:
    """One histogram point, as a reader sees it."""

    count: int
    sum: float
    min: float
    max: float
    bucket_counts: tuple[int, ...]


class Reading:
    """What one collection of the reader gave, by metric name and attributes."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.units: dict[str, str] = {}
        self.numbers: dict[str, dict[frozenset[tuple[str, object]], float]] = {}
        self.histograms: dict[str, dict[frozenset[tuple[str, object]], Histogram]] = {}
        data = reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "anybreaker"
                for metric in scope.metrics:
                    self.units[metric.name] = metric.unit or ""
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        if isinstance(point, HistogramDataPoint):
                            self.histograms.setdefault(metric.name, {})[key] = Histogram(
                                point.count,
                                point.sum,
                                point.min,
                                point.max,
                                tuple(point.bucket_counts),
                            )
                        else:
                            assert isinstance(point, NumberDataPoint)
                            self.numbers.setdefault(metric.name, {})[key] = point.value

    def number(self, metric: str, **attributes: object) -> float:
        """The value of ``metric`` for exactly these attributes (0 when it has none)."""
        key = frozenset((_attribute(name), value) for name, value in attributes.items())
        return self.numbers.get(metric, {}).get(key, 0)

    def histogram(self, name: str, outcome: str) -> Histogram:
        """The call durations of breaker ``name`` for ``outcome``."""
        key = frozenset({("anybreaker.breaker.name", name), ("anybreaker.call.outcome", outcome)})
        return self.histograms["anybreaker.call.duration"][key]

    def calls(self, name: str) -> dict[tuple[str, bool], float]:
        """``anybreaker.calls`` of breaker ``name``, by (outcome, slow)."""
        found = {}
        for key, value in self.numbers.get("anybreaker.calls", {}).items():
            attributes = dict(key)
            if attributes["anybreaker.breaker.name"] == name:
                outcome = attributes["anybreaker.call.outcome"]
                assert isinstance(outcome, str)
                found[outcome, attributes.get("anybreaker.call.slow", False) is True] = value
        return found

    def states(self, name: str) -> dict[str, float]:
        """``anybreaker.state`` of breaker ``name``, by state."""
        return {
            str(dict(key)["anybreaker.state"]): value
            for key, value in self.numbers.get("anybreaker.state", {}).items()
            if dict(key)["anybreaker.breaker.name"] == name
        }


def _attribute(keyword: str) -> str:
    return {
        "name": "anybreaker.breaker.name",
        "outcome": "anybreaker.call.outcome",
        "slow": "anybreaker.call.slow",
        "state": "anybreaker.state",
        "previous_state": "anybreaker.previous_state",
    }[keyword]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """An in-memory reader: each collection is one ``Reading``."""
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    """A meter provider of the test's own, read by ``reader``."""
    meter_provider = MeterProvider(metric_readers=[reader])
    yield meter_provider
    meter_provider.shutdown()


@pytest.fixture
def everything() -> Iterator[None]:
    """Forget process-wide instrumentation after the test (it would outlive it)."""
    hooks = list(NEW_BREAKER_HOOKS)
    yield
    NEW_BREAKER_HOOKS[:] = hooks


async def _fail(clock: FakeClock, seconds: float = 0.0) -> None:
    clock.advance(seconds)
    raise ConnectionError("dependency down")


async def _succeed(clock: FakeClock, seconds: float = 0.0) -> str:
    clock.advance(seconds)
    return "ok"


async def test_calls_durations_and_outcomes_match_the_calls_made(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """Each outcome, slow calls and rejections are counted, and each run call timed."""
    breaker = CircuitBreaker(
        "model-api",
        clock=clock,
        failure_threshold=3,
        slow_call_duration=2.0,
        ignored_exceptions=(KeyError,),
    )
    other = CircuitBreaker("search-tool", clock=clock)
    instrument(breaker, meter_provider=provider)
    instrument(other, meter_provider=provider)

    for seconds in (0.2, 0.3, 3.0):
        await breaker.call(_succeed, clock, seconds)
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError("ignored")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(_fail, clock, 0.5)
    for _ in range(4):
        with pytest.raises(CircuitBreakerOpenError):
            await breaker.call(_succeed, clock)
    await other.call(_succeed, clock, 0.01)

    reading = Reading(reader)
    assert reading.calls("model-api") == {
        ("success", False): 2,
        ("success", True): 1,
        ("neutral", False): 1,
        ("failure", False): 3,
        ("rejected", False): 4,
    }
    assert reading.calls("search-tool") == {("success", False): 1}
    assert reading.units["anybreaker.calls"] == "{call}"
    assert reading.units["anybreaker.call.duration"] == "s"
    success = reading.histogram("model-api", "success")
    assert success.count == 3
    assert [success.min, success.max] == pytest.approx([0.2, 3.0])
    assert success.sum == pytest.approx(3.5)
    failure = reading.histogram("model-api", "failure")
    assert failure.count == 3
    assert failure.sum == pytest.approx(1.5)
    assert reading.histogram("model-api", "neutral").count == 1
    assert "rejected" not in {
        dict(key)["anybreaker.call.outcome"]
        for key in reading.histograms["anybreaker.call.duration"]
    }


async def test_state_and_transitions_follow_the_breaker(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """The state is read at each collection (OPEN turns HALF_OPEN on time); changes are counted."""
    breaker = CircuitBreaker("payments", clock=clock, failure_threshold=1, timeout=30.0)
    instrument(breaker, meter_provider=provider)
    assert Reading(reader).states("payments") == {"closed": 1, "open": 0, "half_open": 0}

    with pytest.raises(ConnectionError):
        await breaker.call(_fail, clock)
    reading = Reading(reader)
    assert reading.states("payments") == {"closed": 0, "open": 1, "half_open": 0}
    assert reading.units["anybreaker.state"] == "{breaker}"

    clock.advance(30.0)  # no call: the collection still sees the open period end
    assert Reading(reader).states("payments") == {"closed": 0, "open": 0, "half_open": 1}

    for _ in range(2):
        await breaker.call(_succeed, clock)
    reading = Reading(reader)
    assert reading.states("payments") == {"closed": 1, "open": 0, "half_open": 0}
    transitions = {
        (dict(key)["anybreaker.previous_state"], dict(key)["anybreaker.state"]): value
        for key, value in reading.numbers["anybreaker.transitions"].items()
    }
    assert transitions == {
        ("closed", "open"): 1,
        ("open", "half_open"): 1,
        ("half_open", "closed"): 1,
    }
    assert reading.units["anybreaker.transitions"] == "{transition}"


async def test_the_histogram_holds_the_exact_buckets_sum_minimum_and_maximum(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """Durations spread over many buckets come out with exact counts, sum and extremes."""
    breaker = CircuitBreaker("tool", clock=clock)
    instrument(breaker, meter_provider=provider)
    durations = [0.001 * (1.37**step) for step in range(40)] + [0.1, 0.1, 0.25, 60.0]
    for seconds in durations:
        await breaker.call(_succeed, clock, seconds)
    histogram = Reading(reader).histogram("tool", "success")
    expected = [0] * (len(BOUNDARIES) + 1)
    for seconds in durations:
        expected[bisect.bisect_left(BOUNDARIES, seconds)] += 1
    assert histogram.count == len(durations)
    assert histogram.bucket_counts == tuple(expected)
    assert histogram.sum == pytest.approx(math.fsum(durations))
    assert histogram.min == pytest.approx(min(durations))
    assert histogram.max == pytest.approx(max(durations))


async def test_calls_that_overlap_or_nest_are_each_timed_from_their_own_start(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """Calls of several tasks that overlap, ending in any order, and a breaker nested in itself."""
    breaker = CircuitBreaker("tool", clock=clock)
    instrument(breaker, meter_provider=provider)
    entered = [anyio.Event() for _ in range(3)]
    leave = [anyio.Event() for _ in range(3)]
    left = [anyio.Event() for _ in range(3)]

    async def call(task: int) -> None:
        async with breaker:
            entered[task].set()
            await leave[task].wait()
        left[task].set()

    start = clock()
    async with anyio.create_task_group() as group:
        for task in range(3):  # they begin at 0, 1 and 2 s
            group.start_soon(call, task)
            await entered[task].wait()
            clock.advance(1)
        for task, at in ((1, 4), (0, 6), (2, 10)):
            clock.advance(start + at - clock())
            leave[task].set()
            await left[task].wait()
    async with breaker:  # alone again: 1 s
        clock.advance(1)
    async with breaker:  # 10 s, around a call of 2 s
        clock.advance(1)
        async with breaker:
            clock.advance(2)
        clock.advance(7)

    durations = [4 - 1, 6 - 0, 10 - 2, 1, 2, 10]
    histogram = Reading(reader).histogram("tool", "success")
    assert histogram.count == len(durations)
    assert histogram.sum == pytest.approx(sum(durations))
    assert [histogram.min, histogram.max] == pytest.approx([min(durations), max(durations)])


async def test_counts_add_up_across_collections_and_long_gaps(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """Counters are cumulative, and right however many calls pass between collections."""
    breaker = CircuitBreaker("busy", clock=clock)
    instrument(breaker, meter_provider=provider)
    for _ in range(3):
        await breaker.call(_succeed, clock, 0.001)
    assert Reading(reader).calls("busy") == {("success", False): 3}
    for _ in range(10_000):
        async with breaker:
            pass
    reading = Reading(reader)
    assert reading.calls("busy") == {("success", False): 10_003}
    assert reading.histogram("busy", "success").count == 10_003


async def test_a_registry_reports_its_breakers_present_and_future(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """Instrumenting a registry covers the breakers it holds and those it makes later."""
    registry = CircuitBreakerRegistry(clock=clock, failure_threshold=1)
    await registry["gpt-4o"].call(_succeed, clock)  # before: not counted
    instrument(registry, meter_provider=provider)
    await registry["gpt-4o"].call(_succeed, clock)
    with pytest.raises(ConnectionError):
        await registry["claude"].call(_fail, clock)
    reading = Reading(reader)
    assert reading.calls("gpt-4o") == {("success", False): 1}
    assert reading.calls("claude") == {("failure", False): 1}
    assert reading.states("claude") == {"closed": 0, "open": 1, "half_open": 0}
    assert reading.states("gpt-4o") == {"closed": 1, "open": 0, "half_open": 0}


@pytest.mark.usefixtures("everything")
async def test_every_breaker_of_the_process_made_before_or_after(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """With no target, breakers made before instrument() and after it are both reported."""
    before = CircuitBreaker("made-before", clock=clock)
    instrument(meter_provider=provider)
    after = CircuitBreaker("made-after", clock=clock)
    registry = CircuitBreakerRegistry(clock=clock)
    for breaker in (before, after, registry["in-a-registry"]):
        await breaker.call(_succeed, clock)
    reading = Reading(reader)
    for name in ("made-before", "made-after", "in-a-registry"):
        assert reading.calls(name) == {("success", False): 1}
        assert reading.states(name)["closed"] == 1


async def test_a_breaker_that_already_ran_calls_is_reported_from_the_next_call(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """Calls made before instrument() are not reported; every call after it is."""
    breaker = CircuitBreaker("model-api", clock=clock)
    for _ in range(3):
        async with breaker:
            pass
    with pytest.raises(ConnectionError):
        async with breaker:
            await _fail(clock)
    instrument(breaker, meter_provider=provider)
    async with breaker:
        clock.advance(0.25)
    with pytest.raises(ConnectionError):
        async with breaker:
            await _fail(clock, 0.5)
    reading = Reading(reader)
    assert reading.calls("model-api") == {("success", False): 1, ("failure", False): 1}
    assert reading.histogram("model-api", "success").sum == pytest.approx(0.25)
    assert reading.histogram("model-api", "failure").sum == pytest.approx(0.5)


@pytest.mark.usefixtures("everything")
async def test_instrumenting_again_counts_each_call_once(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """The same breaker instrumented directly, through its registry and process-wide: once."""
    registry = CircuitBreakerRegistry(clock=clock)
    breaker = registry["tool"]
    instrument(breaker, meter_provider=provider)
    instrument(breaker, meter_provider=provider)
    instrument(registry, meter_provider=provider)
    instrument(meter_provider=provider)
    instrument(registry, meter_provider=provider)
    await breaker.call(_succeed, clock)
    await registry["later"].call(_succeed, clock)
    reading = Reading(reader)
    assert reading.calls("tool") == {("success", False): 1}
    assert reading.calls("later") == {("success", False): 1}
    assert reading.states("tool") == {"closed": 1, "open": 0, "half_open": 0}


async def test_each_meter_provider_counts_on_its_own(clock: FakeClock) -> None:
    """Two meter providers instrumenting one breaker both see every call."""
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    providers = [MeterProvider(metric_readers=[reader]) for reader in readers]
    breaker = CircuitBreaker("shared", clock=clock)
    instrument(breaker, meter_provider=providers[0])
    await breaker.call(_succeed, clock)
    instrument(breaker, meter_provider=providers[1])
    await breaker.call(_succeed, clock)
    assert Reading(readers[0]).calls("shared") == {("success", False): 2}
    assert Reading(readers[1]).calls("shared") == {("success", False): 1}
    for provider in providers:
        provider.shutdown()


async def test_breakers_of_one_name_add_up(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """Two breaker objects of one name: their calls add up, and the state counts both."""
    first = CircuitBreaker("model-api", clock=clock, failure_threshold=1)
    second = CircuitBreaker("model-api", clock=clock)  # its own MemoryStorage
    for breaker in (first, second):
        instrument(breaker, meter_provider=provider)
        await breaker.call(_succeed, clock)
    with pytest.raises(ConnectionError):
        await first.call(_fail, clock)
    reading = Reading(reader)
    assert reading.calls("model-api") == {("success", False): 2, ("failure", False): 1}
    assert reading.states("model-api") == {"closed": 1, "open": 1, "half_open": 0}
    del first, second, breaker
    gc.collect()
    # No breaker of that name is left: none is in any state.
    assert Reading(reader).states("model-api") == {"closed": 0, "open": 0, "half_open": 0}


async def test_shadow_mode_counts_what_would_have_been_refused(
    reader: InMemoryMetricReader, provider: MeterProvider, clock: FakeClock
) -> None:
    """enforce=False: a would-be refusal counts as rejected, and its run under its outcome."""
    breaker = CircuitBreaker("rollout", clock=clock, failure_threshold=2, enforce=False)
    instrument(breaker, meter_provider=provider)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await breaker.call(_fail, clock, 0.1)
    reading = Reading(reader)
    assert reading.calls("rollout") == {("failure", False): 5, ("rejected", False): 3}
    assert reading.histogram("rollout", "failure").count == 5
    assert reading.states("rollout")["open"] == 1


def test_instrument_refuses_what_it_cannot_report_on() -> None:
    """A target that is neither a breaker, a registry nor None is a TypeError."""
    with pytest.raises(TypeError, match="CircuitBreakerRegistry"):
        instrument("model-api")  # type: ignore[arg-type]
