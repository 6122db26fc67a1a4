"""The in-memory benchmarks: per-call cost against other libraries, memory, flatness."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import release
from libraries import (
    LIBRARIES,
    RATE_SETTINGS,
    Floor,
    Library,
    Loop,
    available,
    mamba_module,
    noop,
)
from timing import RUNTIMES, median, paired_ratio, per_call

# -- per-call cost, side by side -------------------------------------------------


RATE_KINDS = {"closed_rate": "closed", "rejected_rate": "rejected"}
"""Kinds measured with a failure-rate rule, and the kind a library without one offers."""


@dataclass
class CallResults:
    """Per-call costs of every library, per runtime and kind, one entry per round."""

    costs: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    """(runtime, library key, kind) -> seconds per call; kinds: "closed", "rejected",
    "failure", "closed_rate", "rejected_rate"."""
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    """(runtime, library key) -> why it was not measured there."""

    def series(self, runtime: str, key: str, kind: str) -> list[float]:
        """The costs of ``key`` for ``kind``; a library without a rate rule offers its plain one."""
        costs = self.costs.get((runtime, key, kind))
        if costs is None and kind in RATE_KINDS and key != "anybreaker":
            costs = self.costs.get((runtime, key, RATE_KINDS[kind]))
        return costs or []

    def cost(self, runtime: str, key: str, kind: str) -> float:
        """Median cost per call over the rounds."""
        return median(self.series(runtime, key, kind))

    def ratio(self, runtime: str, key: str, kind: str) -> float:
        """Median over rounds of (this library's cost / anybreaker's cost)."""
        mine = self.series(runtime, key, kind)
        ours = self.costs.get((runtime, "anybreaker", kind), [])
        if not mine or len(mine) != len(ours):
            return float("nan")
        return paired_ratio(mine, ours)


async def _probe(library: Library) -> None:
    """Build every loop and run it a little: raise if the library fails here."""
    for _, make in library.makers():
        loop = await make()
        await loop(10)


def measure_calls(
    rounds: int,
    n_closed: int,
    n_rejected: int,
    n_failures: int,
    runtimes: tuple[str, ...] = RUNTIMES,
) -> CallResults:
    """Measure every library in interleaved rounds, under each runtime."""
    results = CallResults()
    libraries: list[Library] = []
    for library in LIBRARIES:
        reason = available(library)
        if reason is None:
            libraries.append(library)
        else:
            for runtime in runtimes:
                results.skipped[runtime, library.key] = f"not installed ({reason})"
    measured: dict[str, list[Library]] = {}
    for runtime in runtimes:
        measured[runtime] = []
        for library in libraries:
            try:
                anyio.run(_probe, library, backend=runtime)
            except Exception as error:  # a library that cannot run here is reported
                results.skipped[runtime, library.key] = (
                    f"fails under {runtime}: {type(error).__name__}: {error}"
                )
            else:
                measured[runtime].append(library)

    counts = {
        "closed": n_closed,
        "rejected": n_rejected,
        "failure": n_failures,
        "closed_rate": n_closed,
        "rejected_rate": n_rejected,
    }

    async def one_round(runtime: str, order: list[Library]) -> None:
        for library in order:
            for kind, make in library.makers():
                loop: Loop = await make()
                cost = await per_call(loop, counts[kind])
                results.costs.setdefault((runtime, library.key, kind), []).append(cost)

    for index in range(rounds):
        for runtime in runtimes:
            order = measured[runtime]
            # Rotate the order so that no library always runs first or last.
            shift = index % len(order)
            anyio.run(one_round, runtime, order[shift:] + order[:shift], backend=runtime)
    return results


# -- anybreaker against itself: release 0.1, call_timeout ------------------------------


@dataclass
class SeriesResults:
    """Per-call costs of a few loops measured in the same rounds, one entry per round."""

    series: list[str]
    costs: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(runtime, series) -> seconds per call, per round."""
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    """(runtime, series) -> the error that kept it from being measured there."""
    skipped: str = ""
    """Why nothing was measured, if so."""

    def cost(self, runtime: str, series: str) -> float:
        """Median cost per call over the rounds."""
        return median(self.costs.get((runtime, series), []))

    def ratio(self, runtime: str, series: str, base: str) -> float:
        """Median over rounds of (``series`` cost / ``base`` cost)."""
        mine = self.costs.get((runtime, series), [])
        theirs = self.costs.get((runtime, base), [])
        if not mine or len(mine) != len(theirs):
            return float("nan")
        return paired_ratio(mine, theirs)


def measure_series(
    makers: dict[str, Callable[[], Awaitable[Loop]]],
    rounds: int,
    n: int,
    runtimes: tuple[str, ...] = RUNTIMES,
) -> SeriesResults:
    """Measure every loop of ``makers`` once per round, in a rotating order, under each runtime.

    A loop that raises when first tried under a runtime is reported there
    with its error, and left out of that runtime's rounds.
    """
    results = SeriesResults(list(makers))

    async def probe(name: str) -> None:
        loop = await makers[name]()
        await loop(10)

    measured: dict[str, list[str]] = {}
    for runtime in runtimes:
        measured[runtime] = []
        for name in makers:
            try:
                anyio.run(probe, name, backend=runtime)
            except Exception as error:  # a loop that cannot run here is reported
                results.failed[runtime, name] = f"{type(error).__name__}: {error}"
            else:
                measured[runtime].append(name)

    async def one_round(order: list[str], runtime: str) -> None:
        for name in order:
            loop = await makers[name]()
            results.costs.setdefault((runtime, name), []).append(await per_call(loop, n))

    for index in range(rounds):
        for runtime in runtimes:
            names = measured[runtime]
            if not names:
                continue
            shift = index % len(names)
            anyio.run(one_round, names[shift:] + names[:shift], runtime, backend=runtime)
    return results


def _closed_loop(breaker: Any) -> Loop:
    async def loop(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    return loop


def _call_loop(breaker: Any) -> Loop:
    async def loop(n: int) -> None:
        for _ in range(n):
            await breaker.call(noop)

    return loop


RELEASE_SERIES = ("release 0.1", "current", "current, rate rule")


def measure_release(rounds: int, n: int) -> SeriesResults:
    """A closed call on release 0.1 (success not counted) and on the current code (counted)."""
    try:
        old = release.load()
    except RuntimeError as error:
        return SeriesResults(list(RELEASE_SERIES), skipped=str(error))
    from anybreaker import CircuitBreaker

    async def release_closed() -> Loop:
        return _closed_loop(old.CircuitBreaker("bench"))

    async def current_closed() -> Loop:
        return _closed_loop(CircuitBreaker("bench"))

    async def current_rate() -> Loop:
        return _closed_loop(CircuitBreaker("bench", **RATE_SETTINGS))

    makers = dict(zip(RELEASE_SERIES, (release_closed, current_closed, current_rate), strict=True))
    return measure_series(makers, rounds, n)


TIMEOUT = 10.0
TIMEOUT_SERIES = (
    "async with, call_timeout=10",
    "async with, no call_timeout",
    "call(), call_timeout=10",
    "call(), no call_timeout",
    "fail_after(10) alone",
    "async with around fail_after(10)",
)


def measure_timeout(rounds: int, n: int) -> SeriesResults:
    """A closed call with ``call_timeout``, against ``anyio.fail_after`` and a plain closed call.

    Both ways to guard a call are measured (``async with`` and ``call()``):
    they bound the call differently (a cancel scope opened in
    ``__aenter__`` and closed in ``__aexit__``, or one around the await).
    """
    from anybreaker import CircuitBreaker

    async def with_timeout() -> Loop:
        return _closed_loop(CircuitBreaker("bench", call_timeout=TIMEOUT))

    async def plain() -> Loop:
        return _closed_loop(CircuitBreaker("bench"))

    async def call_with_timeout() -> Loop:
        return _call_loop(CircuitBreaker("bench", call_timeout=TIMEOUT))

    async def call_plain() -> Loop:
        return _call_loop(CircuitBreaker("bench"))

    async def fail_after() -> Loop:
        async def loop(n: int) -> None:
            for _ in range(n):
                with anyio.fail_after(TIMEOUT):
                    await noop()

        return loop

    async def breaker_and_fail_after() -> Loop:
        breaker = CircuitBreaker("bench")

        async def loop(n: int) -> None:
            for _ in range(n):
                async with breaker:
                    with anyio.fail_after(TIMEOUT):
                        await noop()

        return loop

    makers = (
        with_timeout,
        plain,
        call_with_timeout,
        call_plain,
        fail_after,
        breaker_and_fail_after,
    )
    return measure_series(dict(zip(TIMEOUT_SERIES, makers, strict=True)), rounds, n)


OTEL_SERIES = (
    "not instrumented",
    "a call listener that does nothing",
    "instrumented (anybreaker.otel)",
    "instrumented, collection included",
)
"""The last: the instrumented calls, then one collection by an in-memory reader, per call."""


def measure_instrumented(rounds: int, n: int) -> SeriesResults:
    """A closed call on a breaker instrumented with ``anybreaker.otel``, and without.

    The call listener that does nothing shows what the generic per-call hook
    costs, which the instrumentation does not use; the last series adds the
    collection (reading the counts, and the SDK recording every duration in
    its histogram), spread over the calls it collects.
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from anybreaker.otel import instrument
    except ImportError as error:
        return SeriesResults(list(OTEL_SERIES), skipped=f"{error} (needs opentelemetry-sdk)")
    from anybreaker import CircuitBreaker

    async def plain() -> Loop:
        return _closed_loop(CircuitBreaker("bench"))

    async def listener() -> Loop:
        return _closed_loop(CircuitBreaker("bench", call_listeners=[lambda event: None]))

    async def instrumented() -> Loop:
        reader = InMemoryMetricReader()
        breaker = CircuitBreaker("bench")
        instrument(breaker, meter_provider=MeterProvider(metric_readers=[reader]))
        return _closed_loop(breaker)

    async def collected() -> Loop:
        reader = InMemoryMetricReader()
        breaker = CircuitBreaker("bench")
        instrument(breaker, meter_provider=MeterProvider(metric_readers=[reader]))
        calls = _closed_loop(breaker)

        async def loop(n: int) -> None:
            await calls(n)
            reader.get_metrics_data()

        return loop

    makers = (plain, listener, instrumented, collected)
    return measure_series(dict(zip(OTEL_SERIES, makers, strict=True)), rounds, n)


# -- memory per idle named breaker ---------------------------------------------


def _anybreaker_registry(names: list[str]) -> object:
    from anybreaker import CircuitBreakerRegistry

    registry = CircuitBreakerRegistry()
    for name in names:
        registry.get(name)
    return registry


def _anybreaker_dict(names: list[str]) -> object:
    from anybreaker import CircuitBreaker

    return {name: CircuitBreaker(name) for name in names}


def _anybreaker_shared_dict(names: list[str]) -> object:
    from anybreaker import CircuitBreaker, MemoryStorage

    storage = MemoryStorage()
    return storage, {name: CircuitBreaker(name, storage=storage) for name in names}


def _aiobreaker_dict(names: list[str]) -> object:
    import aiobreaker

    return {name: aiobreaker.CircuitBreaker(name=name) for name in names}


def _purgatory_factory(names: list[str]) -> object:
    from purgatory import AsyncCircuitBreakerFactory

    factory = AsyncCircuitBreakerFactory()

    async def make_all() -> None:
        for name in names:
            await factory.get_breaker(name)

    anyio.run(make_all)
    return factory


def _circuitbreaker_dict(names: list[str]) -> object:
    import circuitbreaker

    return {name: circuitbreaker.CircuitBreaker(name=name) for name in names}


def _pybreaker_dict(names: list[str]) -> object:
    import pybreaker

    return {name: pybreaker.CircuitBreaker(name=name) for name in names}


def _mamba_dict(names: list[str]) -> object:
    mamba = mamba_module()
    return {name: mamba.CircuitBreaker(name) for name in names}


def _interlock_dict(names: list[str]) -> object:
    import interlock

    return {name: interlock.CircuitBreaker(name=name) for name in names}


def _grelmicro_dict(names: list[str]) -> object:
    from grelmicro.resilience import CircuitBreaker
    from grelmicro.resilience.circuitbreaker.memory import MemoryCircuitBreakerAdapter

    backend = MemoryCircuitBreakerAdapter()
    return backend, {name: CircuitBreaker(name, backend=backend) for name in names}


GRELMICRO_MEMORY_COUNT = 5_000
"""grelmicro resolves its settings (pydantic, the environment) for every breaker it
builds, about a millisecond each: it is measured on fewer breakers."""

MEMORY_CASES: list[tuple[str, str, Callable[[list[str]], object]]] = [
    ("anybreaker", "CircuitBreakerRegistry().get(name)", _anybreaker_registry),
    ("anybreaker", "{name: CircuitBreaker(name)}", _anybreaker_dict),
    (
        "anybreaker",
        "{name: CircuitBreaker(name, storage=shared)}",
        _anybreaker_shared_dict,
    ),
    ("aiobreaker", "{name: CircuitBreaker(name=name)}", _aiobreaker_dict),
    ("purgatory", "factory.get_breaker(name) (held by the factory)", _purgatory_factory),
    ("circuitbreaker", "{name: CircuitBreaker(name=name)}", _circuitbreaker_dict),
    ("pybreaker", "{name: CircuitBreaker(name=name)}", _pybreaker_dict),
    ("mamba-agents", "{name: CircuitBreaker(name)}", _mamba_dict),
    ("interlock-cb", "{name: CircuitBreaker(name=name)}", _interlock_dict),
    ("grelmicro", "{name: CircuitBreaker(name, backend=shared)}", _grelmicro_dict),
]


@dataclass
class MemoryResult:
    """Bytes per idle named breaker for one way of holding many breakers."""

    library: str
    how: str
    bytes_per_breaker: float | None
    note: str = ""


def measure_memory(count: int) -> list[MemoryResult]:
    """Bytes allocated per breaker while ``count`` idle named breakers are held.

    The names exist before the measurement starts: they are the
    application's strings, the same for every library.
    """
    results: list[MemoryResult] = []
    names = [f"dependency-{index}" for index in range(count)]
    for library, how, build in MEMORY_CASES:
        held_names = names
        note = ""
        if library == "grelmicro" and count > GRELMICRO_MEMORY_COUNT:
            held_names = names[:GRELMICRO_MEMORY_COUNT]
            note = f"{GRELMICRO_MEMORY_COUNT:,} breakers"
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = build(held_names)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        except Exception as error:  # a missing competitor is reported, not fatal
            results.append(MemoryResult(library, how, None, f"{type(error).__name__}"))
            continue
        finally:
            tracemalloc.stop()
        del held
        results.append(MemoryResult(library, how, (after - before) / len(held_names), note))
    return results


# -- flatness: many breakers, many tasks ----------------------------------------------


@dataclass
class FlatResults:
    """Per-call cost at each size, per runtime, one entry per round."""

    sizes: list[int]
    costs: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    """(runtime, series, size) -> seconds per call, per round."""

    def cost(self, runtime: str, series: str, size: int) -> float:
        """Median cost per call over the rounds."""
        return median(self.costs.get((runtime, series, size), []))

    def net(self, runtime: str, size: int) -> float:
        """Median over rounds of anybreaker's cost minus the floor's, at ``size``."""
        ours = self.costs.get((runtime, "anybreaker", size), [])
        floor = self.costs.get((runtime, "floor", size), [])
        if not ours or len(ours) != len(floor):
            return float("nan")
        return median([a - b for a, b in zip(ours, floor, strict=True)])

    def ratio(self, runtime: str, series: str, size: int) -> float:
        """Median over rounds of (cost at ``size`` / cost at the smallest size)."""
        return paired_ratio(
            self.costs[runtime, series, size], self.costs[runtime, series, self.sizes[0]]
        )


def measure_many_breakers(
    rounds: int, sizes: list[int], calls: int, runtimes: tuple[str, ...] = RUNTIMES
) -> FlatResults:
    """Closed-state cost per call spread over 1 ... 100,000 breakers of one registry.

    Every size runs the same flat loop over ``calls`` breaker references, so
    only the number of distinct breakers (and what it does to the CPU's
    caches) changes.
    """
    from anybreaker import CircuitBreakerRegistry

    sequences: dict[int, list[Any]] = {}
    for size in sizes:
        registry = CircuitBreakerRegistry()
        breakers = [registry.get(f"dependency-{index}") for index in range(size)]
        sequences[size] = [breakers[index % size] for index in range(calls)]
    results = FlatResults(sizes)

    async def one_round(runtime: str) -> None:
        for size in sizes:
            sequence = sequences[size]

            async def loop(n: int, sequence: list[Any] = sequence) -> None:
                for breaker in sequence[:n]:
                    async with breaker:
                        await noop()

            cost = await per_call(loop, calls)
            results.costs.setdefault((runtime, "anybreaker", size), []).append(cost)

    for _ in range(rounds):
        for runtime in runtimes:
            anyio.run(one_round, runtime, backend=runtime)
    return results


def measure_many_tasks(
    rounds: int, sizes: list[int], calls: int, runtimes: tuple[str, ...] = RUNTIMES
) -> FlatResults:
    """Closed-state cost per call with 1 ... 1,000 tasks inside one breaker at once.

    Each guarded call yields to the scheduler once, so that all the tasks
    really are inside the breaker together; the no-op ``async with`` around
    the same checkpoint is measured alongside as the floor.
    """
    from anybreaker import CircuitBreaker

    results = FlatResults(sizes)

    async def one_round(runtime: str) -> None:
        breaker = CircuitBreaker("bench")
        floor = Floor()
        for size in sizes:
            for series, guard in (("anybreaker", breaker), ("floor", floor)):

                async def worker(n: int, guard: Any = guard) -> None:
                    for _ in range(n):
                        async with guard:
                            await anyio.lowlevel.checkpoint()

                async def loop(n: int, size: int = size, worker: Any = worker) -> None:
                    async with anyio.create_task_group() as group:
                        for _ in range(size):
                            group.start_soon(worker, max(1, n // size))

                cost = await per_call(loop, calls)
                results.costs.setdefault((runtime, series, size), []).append(cost)

    for _ in range(rounds):
        for runtime in runtimes:
            anyio.run(one_round, runtime, backend=runtime)
    return results
