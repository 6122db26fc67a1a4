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

The cost on the call's path is one call listener that appends the call's
event to a list. Everything else happens when the metrics are collected:
the events are counted, the durations are put in the histogram's buckets,
and the counters are read. Between collections the durations are kept as
counts per bucket (with their sum, minimum and maximum), so memory stays
bounded however long nothing collects; the histogram then gets values with
the same count, sum, minimum, maximum and bucket counts (exact for the
boundaries ``anybreaker.call.duration`` advises; a view with other
boundaries sees each bucket's values at their mean).
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
from ._registry import CircuitBreakerRegistry
from ._state import CallEvent, CircuitState, StateChange

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

_FOLD_AT: Final = 4096
"""Call events kept before the call that adds one counts them (so memory stays bounded)."""


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

    An instrumented breaker times every call and tells each one to a call
    listener; a breaker nobody instruments does neither.
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
    """Call durations since the last collection, as counts in the histogram's buckets."""

    __slots__ = ("counts", "highest", "lowest", "sums")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every duration."""
        self.counts = [0] * (len(DURATION_BOUNDARIES) + 1)
        self.sums = [0.0] * (len(DURATION_BOUNDARIES) + 1)
        self.lowest = math.inf
        self.highest = -math.inf

    def add(self, duration: float) -> None:
        # bisect_left: a bucket holds (lower boundary, upper boundary], as in the SDK.
        bucket = bisect_left(DURATION_BOUNDARIES, duration)
        self.counts[bucket] += 1
        self.sums[bucket] += duration
        if duration < self.lowest:
            self.lowest = duration
        if duration > self.highest:
            self.highest = duration

    def take(self) -> list[tuple[float, int]]:
        """Empty the buckets: values to record, with how many times to record each.

        Recorded, they give the histogram the same count, sum (to rounding),
        bucket counts, minimum and maximum as the durations counted.
        """
        values: list[tuple[float, int]] = []
        for bucket, count in enumerate(self.counts):
            if not count:
                continue
            total = self.sums[bucket]
            extremes = [
                value
                for value in (self.lowest, self.highest)
                if bisect_left(DURATION_BOUNDARIES, value) == bucket
            ][:count]
            values += [(value, 1) for value in extremes]
            rest = count - len(extremes)
            if rest:
                mean = (total - sum(extremes)) / rest
                # Rounding must not move the mean out of its bucket or its range.
                floor = -math.inf if bucket == 0 else DURATION_BOUNDARIES[bucket - 1]
                ceiling = (
                    DURATION_BOUNDARIES[bucket] if bucket < len(DURATION_BOUNDARIES) else math.inf
                )
                mean = min(max(mean, math.nextafter(floor, math.inf), self.lowest), ceiling)
                values.append((min(mean, self.highest), rest))
        self.clear()
        return values


class _Meters:
    """The instruments of one meter provider, and the breakers they report on.

    Call events arrive on the breakers' event loops; collections run in the
    exporter's thread. Appending to ``_pending`` needs no lock (a list's
    append is atomic); counting the events and reading the counts hold
    ``_lock``.
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("anybreaker", __version__)
        self._lock = threading.Lock()
        self._pending: list[CallEvent] = []
        self._calls: dict[tuple[str, str, bool], int] = {}
        self._durations: dict[tuple[str, str], _Durations] = {}
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
        breaker.add_call_listener(self.heard)
        breaker.add_listener(self.changed)
        with self._lock:
            self._breakers.add(breaker)

    def attach_registry(self, registry: CircuitBreakerRegistry) -> None:
        """Report on the breakers of ``registry``, present and future."""
        registry.add_call_listener(self.heard)
        registry.add_listener(self.changed)
        with self._lock:
            self._registries.add(registry)

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

    # -- on the calls' path ----------------------------------------------------

    def heard(self, event: CallEvent) -> None:
        """Keep a call's event for the next collection."""
        pending = self._pending
        pending.append(event)
        if len(pending) >= _FOLD_AT and self._lock.acquire(blocking=False):
            # Nobody collected for a while: count them now. (If a collection
            # holds the lock, it is counting them already.)
            try:
                self._fold()
            finally:
                self._lock.release()

    def changed(self, change: StateChange) -> None:
        """Count a state change."""
        key = (change.name, change.old_state, change.new_state)
        with self._lock:
            self._transitions[key] = self._transitions.get(key, 0) + 1

    def _fold(self) -> None:
        """Count the events kept so far (with ``_lock``)."""
        pending = self._pending
        events = pending[:]
        # Events appended meanwhile are after these: only these go.
        del pending[: len(events)]
        calls = self._calls
        every_durations = self._durations
        for event in events:
            key = (event.name, event.outcome, event.slow)
            calls[key] = calls.get(key, 0) + 1
            if event.outcome != "rejected":
                durations = every_durations.get((event.name, event.outcome))
                if durations is None:
                    durations = every_durations[event.name, event.outcome] = _Durations()
                durations.add(event.duration)

    # -- at collection -----------------------------------------------------------

    def _observe_calls(self, options: CallbackOptions) -> Iterator[Observation]:
        """Count what happened since the last collection; feed the histogram; read the counts.

        The histogram's values are recorded here, before the SDK reads its
        synchronous instruments, so that they appear in this collection.
        """
        with self._lock:
            self._fold()
            taken = [
                (name, outcome, durations.take())
                for (name, outcome), durations in self._durations.items()
                if any(durations.counts)
            ]
            calls = list(self._calls.items())
        record = self._duration.record
        for name, outcome, values in taken:
            run = {BREAKER_NAME: name, CALL_OUTCOME: outcome}
            for value, times in values:
                for _ in range(times):
                    record(value, run)
        for (name, outcome, slow), count in calls:
            attributes: dict[str, str | bool] = {BREAKER_NAME: name, CALL_OUTCOME: outcome}
            if slow:
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
