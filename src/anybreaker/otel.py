"""OpenTelemetry metrics for circuit breakers: ``instrument()``.

Needs ``pip install "anybreaker[otel]"`` (the OpenTelemetry API; your
application brings the SDK and an exporter).

What is reported, each with the breaker's name as ``anybreaker.breaker.name``:

- ``anybreaker.calls`` (counter, ``{call}``): calls by
  ``anybreaker.call.outcome``: ``success``, ``failure``, ``neutral`` (an
  ignored exception, a cancellation) or ``rejected`` (refused; in shadow
  mode, a call that would have been refused: it runs, and also counts under
  its own outcome). A call slower than ``slow_call_duration`` also carries
  ``anybreaker.call.slow=true``.
- ``anybreaker.call.duration`` (histogram, ``s``): how long the guarded
  code ran, by ``anybreaker.call.outcome`` (rejected calls do not run).
- ``anybreaker.state`` (up-down counter, ``{breaker}``): for each
  ``anybreaker.state`` (``closed``, ``open``, ``half_open``), how many
  breaker objects of that name are in it: 1 for the current state, 0 for the
  others. A gauge in Prometheus.
- ``anybreaker.transitions`` (counter, ``{transition}``): state changes, by
  ``anybreaker.state`` (the state entered) and ``anybreaker.previous_state``.

The cost on the call's path is small and fixed: an instrumented breaker
reads the clock when a call begins and ends, and counts the call in its
name's buckets (counts and sums per histogram bucket, kept apart for each
meter provider). Everything else happens when the metrics are collected:
the counters are read, and the durations counted since the last collection
are given to the histogram, each bucket's at their mean (the minimum and
maximum seen so far as themselves), so it gets the same count, sum (to
rounding), bucket counts, minimum and maximum as the calls had (exact for
the boundaries ``anybreaker.call.duration`` advises; a view with other
boundaries sees each bucket's calls at their mean). That hand-over costs
what the SDK's ``Histogram.record`` costs, once per call, in the collecting
thread.
"""

from __future__ import annotations

import gc
import math
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        'anybreaker.otel needs the OpenTelemetry API: pip install "anybreaker[otel]"'
    ) from error

from . import __version__
from ._breaker import NEW_BREAKER_HOOKS, CircuitBreaker
from ._core import CallMeter
from ._machine import Outcome
from ._registry import CircuitBreakerRegistry
from ._state import CircuitState, StateChange

__all__ = ["instrument"]

CALLS: Final = "anybreaker.calls"
CALL_DURATION: Final = "anybreaker.call.duration"
STATE: Final = "anybreaker.state"
TRANSITIONS: Final = "anybreaker.transitions"

BREAKER_NAME: Final = "anybreaker.breaker.name"
CALL_OUTCOME: Final = "anybreaker.call.outcome"
CALL_SLOW: Final = "anybreaker.call.slow"
STATE_ATTRIBUTE: Final = "anybreaker.state"
PREVIOUS_STATE: Final = "anybreaker.previous_state"

DURATION_BOUNDARIES: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)
"""OpenTelemetry's advice for HTTP request durations, with 30 s and 60 s for model calls."""
_FIRST_BOUNDARY: Final = DURATION_BOUNDARIES[0]


def instrument(
    target: CircuitBreaker | CircuitBreakerRegistry | None = None,
    *,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Report OpenTelemetry metrics for a breaker, a registry, or every breaker of the process.

    ``target``: one ``CircuitBreaker``; a ``CircuitBreakerRegistry`` (its
    breakers, present and future); or ``None``: every breaker of the process,
    those that exist now and those made later. ``meter_provider``: where to
    report; by default the global one (``opentelemetry.metrics``), which may
    be set afterwards. Calls are counted from now on. Instrumenting a breaker
    again for the same meter provider changes nothing.

    An instrumented breaker times every call and counts it; a breaker
    nobody instruments does neither.
    """
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
    with _METERS_LOCK:
        meters = _METERS.get(meter_provider)
        if meters is None:
            meters = _METERS[meter_provider] = _Meters(meter_provider)
    if target is None:
        meters.attach_everything()
    elif isinstance(target, CircuitBreaker):
        meters.attach(target)
    elif isinstance(target, CircuitBreakerRegistry):
        meters.attach_registry(target)
    else:
        raise TypeError(
            "instrument() takes a CircuitBreaker, a CircuitBreakerRegistry or None "
            f"(every breaker), got {target!r}"
        )


class _Durations:
    """The durations of one outcome's calls, counted in the histogram's buckets.

    Only the breakers' event loops write here, and nothing is ever reset: a
    collection reads the counts and keeps what it read (``_Reported``), so a
    call counted while a collection reads is reported by the next one.
    """

    __slots__ = ("counts", "highest", "lowest", "slow", "sums")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BOUNDARIES) + 1)
        self.sums = [0.0] * (len(DURATION_BOUNDARIES) + 1)
        self.lowest = math.inf
        self.highest = -math.inf
        self.slow = 0
        """Of the calls counted, those slower than ``slow_call_duration``."""

    def add(self, duration: float) -> None:
        # bisect_left: a bucket holds (lower boundary, upper boundary], as in the SDK.
        bucket = 0 if duration <= _FIRST_BOUNDARY else bisect_left(DURATION_BOUNDARIES, duration)
        self.counts[bucket] += 1
        self.sums[bucket] += duration
        if duration < self.lowest:
            self.lowest = duration
        if duration > self.highest:
            self.highest = duration


class _Reported:
    """What the collections gave the histogram so far, for one ``_Durations``."""

    __slots__ = ("counts", "highest", "lowest", "sums")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BOUNDARIES) + 1)
        self.sums = [0.0] * (len(DURATION_BOUNDARIES) + 1)
        self.lowest = math.inf
        self.highest = -math.inf

    def take(self, durations: _Durations) -> list[tuple[float, int]]:
        """The durations counted since the last take: values, with how many times to record each.

        Recorded, they give the histogram the same count, sum (to rounding)
        and bucket counts as those calls, and the minimum and maximum seen
        so far where one of them is new.
        """
        # The extremes first: a call is in the counts before it is an extreme.
        lowest, highest = durations.lowest, durations.highest
        counts, sums = durations.counts[:], durations.sums[:]
        fresh = [lowest] if lowest < self.lowest else []
        if highest > self.highest:
            fresh.append(highest)
        values: list[tuple[float, int]] = []
        for bucket, count in enumerate(counts):
            count -= self.counts[bucket]
            if count <= 0:
                continue
            total = sums[bucket] - self.sums[bucket]
            extremes = [
                value for value in fresh if bisect_left(DURATION_BOUNDARIES, value) == bucket
            ][:count]
            values += [(value, 1) for value in extremes]
            rest = count - len(extremes)
            if rest:
                mean = (total - sum(extremes)) / rest
                # Rounding (or a call counted while this read) must not move
                # the mean out of its bucket or out of the range seen.
                floor = -math.inf if bucket == 0 else DURATION_BOUNDARIES[bucket - 1]
                ceiling = (
                    DURATION_BOUNDARIES[bucket] if bucket < len(DURATION_BOUNDARIES) else math.inf
                )
                mean = min(max(mean, math.nextafter(floor, math.inf), lowest), ceiling, highest)
                values.append((mean, rest))
        self.counts, self.sums = counts, sums
        self.lowest, self.highest = min(self.lowest, lowest), max(self.highest, highest)
        return values


class _CallCounts:
    """The calls of the breakers of one name, for one meter provider: their ``CallMeter``."""

    __slots__ = ("failure", "neutral", "rejected", "reported", "succeeded", "success")

    def __init__(self) -> None:
        self.success = _Durations()
        self.succeeded = self.success.add
        """A success that was not slow: counted with no call in between."""
        self.failure = _Durations()
        self.neutral = _Durations()
        self.rejected = 0
        self.reported = {outcome: _Reported() for outcome in _OUTCOMES}
        """Read by collections only, with ``_Meters._lock``."""

    def ran(self, outcome: Outcome, duration: float, slow: bool) -> None:
        durations = getattr(self, outcome)
        durations.add(duration)
        if slow:
            durations.slow += 1

    def refused(self) -> None:
        self.rejected += 1


class _Both:
    """The ``CallMeter`` of a breaker instrumented for more than one meter provider."""

    __slots__ = ("meters",)

    def __init__(self, meters: tuple[CallMeter, ...]) -> None:
        self.meters = meters

    def succeeded(self, duration: float) -> None:
        for meter in self.meters:
            meter.succeeded(duration)

    def ran(self, outcome: Outcome, duration: float, slow: bool) -> None:
        for meter in self.meters:
            meter.ran(outcome, duration, slow)

    def refused(self) -> None:
        for meter in self.meters:
            meter.refused()


_OUTCOMES: Final = (Outcome.SUCCESS, Outcome.FAILURE, Outcome.NEUTRAL)


class _Meters:
    """The instruments of one meter provider, and the breakers they report on.

    Calls are counted on the breakers' event loops; collections run in the
    exporter's thread and hold ``_lock``, as attaching does.
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("anybreaker", __version__)
        self._lock = threading.Lock()
        self._counts: dict[str, _CallCounts] = {}
        self._transitions: dict[tuple[str, CircuitState, CircuitState], int] = {}
        self._breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
        self._registries: weakref.WeakSet[CircuitBreakerRegistry] = weakref.WeakSet()
        self._everything = False
        self._names: set[str] = set()
        """Every name the state was reported for."""
        self._duration = meter.create_histogram(
            CALL_DURATION,
            unit="s",
            description="How long the code guarded by a circuit breaker ran.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES,
        )
        meter.create_observable_counter(
            CALLS,
            callbacks=[self._observe_calls],
            unit="{call}",
            description="Calls guarded by a circuit breaker, by outcome.",
        )
        meter.create_observable_up_down_counter(
            STATE,
            callbacks=[self._observe_state],
            unit="{breaker}",
            description="Circuit breakers in each state: 1 for the current state, 0 for others.",
        )
        meter.create_observable_counter(
            TRANSITIONS,
            callbacks=[self._observe_transitions],
            unit="{transition}",
            description="State changes of circuit breakers.",
        )

    # -- attaching -------------------------------------------------------------

    def attach(self, breaker: CircuitBreaker) -> None:
        """Report on ``breaker`` (again: no change)."""
        with self._lock:
            counts = self._counts.get(breaker.name)
            if counts is None:
                counts = self._counts[breaker.name] = _CallCounts()
            current = breaker._meter
            if current is None:
                breaker._instrument(counts)
            elif current is not counts and not (
                isinstance(current, _Both) and counts in current.meters
            ):
                others = current.meters if isinstance(current, _Both) else (current,)
                breaker._instrument(_Both((*others, counts)))
            self._breakers.add(breaker)
        breaker.add_listener(self.changed)

    def attach_registry(self, registry: CircuitBreakerRegistry) -> None:
        """Report on the breakers of ``registry``, present and future."""
        with self._lock:
            if registry in self._registries:
                return
            self._registries.add(registry)
        registry._hooks.append(self.attach)
        for breaker in registry:
            self.attach(breaker)

    def attach_everything(self) -> None:
        """Report on every breaker of the process: the ones made later, then the ones alive."""
        with self._lock:
            if self._everything:
                return
            self._everything = True
        NEW_BREAKER_HOOKS.append(self.attach)
        # Breakers keep no list of themselves (it would cost every breaker
        # memory): the ones made before now are found once, among all objects.
        for candidate in gc.get_objects():
            if isinstance(candidate, CircuitBreaker):
                self.attach(candidate)

    def changed(self, change: StateChange) -> None:
        """Count a state change."""
        key = (change.name, change.old_state, change.new_state)
        with self._lock:
            self._transitions[key] = self._transitions.get(key, 0) + 1

    # -- at collection -----------------------------------------------------------

    def _observe_calls(self, options: CallbackOptions) -> Iterator[Observation]:
        """Read the counts; give the histogram the durations counted since the last collection.

        The histogram's values are recorded here, before the SDK reads its
        synchronous instruments, so that they appear in this collection.
        """
        observed: list[tuple[str, str, bool, int]] = []
        outcome: str
        taken: list[tuple[str, str, list[tuple[float, int]]]] = []
        with self._lock:
            for name, counts in self._counts.items():
                for outcome in _OUTCOMES:
                    durations: _Durations = getattr(counts, outcome)
                    values = counts.reported[outcome].take(durations)
                    if values:
                        taken.append((name, outcome, values))
                    slow = durations.slow
                    ran = sum(durations.counts)
                    if ran > slow:
                        observed.append((name, outcome, False, ran - slow))
                    if slow:
                        observed.append((name, outcome, True, slow))
                if counts.rejected:
                    observed.append((name, "rejected", False, counts.rejected))
        record = self._duration.record
        for name, outcome, values in taken:
            run = {BREAKER_NAME: name, CALL_OUTCOME: outcome}
            for value, times in values:
                for _ in range(times):
                    record(value, run)
        for name, outcome, slow_calls, count in observed:
            attributes: dict[str, str | bool] = {BREAKER_NAME: name, CALL_OUTCOME: outcome}
            if slow_calls:
                attributes[CALL_SLOW] = True
            yield Observation(count, attributes)

    def _observe_state(self, options: CallbackOptions) -> Iterator[Observation]:
        """How many breaker objects of each name are in each state, now."""
        with self._lock:
            # A name whose breakers are all gone is in no state any more.
            counts = {name: dict.fromkeys(CircuitState, 0) for name in self._names}
            seen: set[int] = set()
            for breaker in _chain(list(self._breakers), list(self._registries)):
                if id(breaker) in seen:
                    continue
                seen.add(id(breaker))
                states = counts.get(breaker.name)
                if states is None:
                    states = counts[breaker.name] = dict.fromkeys(CircuitState, 0)
                states[breaker.state] += 1
            self._names.update(counts)
        for name, states in counts.items():
            for state, count in states.items():
                yield Observation(count, {BREAKER_NAME: name, STATE_ATTRIBUTE: state.value})

    def _observe_transitions(self, options: CallbackOptions) -> Iterator[Observation]:
        """The state changes counted so far."""
        with self._lock:
            transitions = list(self._transitions.items())
        for (name, old, new), count in transitions:
            yield Observation(
                count,
                {BREAKER_NAME: name, STATE_ATTRIBUTE: new.value, PREVIOUS_STATE: old.value},
            )


def _chain(
    breakers: list[CircuitBreaker], registries: Iterable[CircuitBreakerRegistry]
) -> Iterator[CircuitBreaker]:
    yield from breakers
    for registry in registries:
        yield from registry


_METERS: dict[MeterProvider, _Meters] = {}
_METERS_LOCK: Final = threading.Lock()
