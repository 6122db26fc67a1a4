"""The in-memory benchmarks: per-call cost against other libraries, memory, flatness."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from libraries import LIBRARIES, Floor, Library, Loop, available, mamba_module, noop
from timing import RUNTIMES, median, paired_ratio, per_call

# -- per-call cost, side by side -------------------------------------------------


@dataclass
class CallResults:
    """Per-call costs of every library, per runtime and kind, one entry per round."""

    costs: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    """(runtime, library key, "closed" | "rejected" | "failure") -> seconds per call."""
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    """(runtime, library key) -> why it was not measured there."""

    def cost(self, runtime: str, key: str, kind: str) -> float:
        """Median cost per call over the rounds."""
        return median(self.costs.get((runtime, key, kind), []))

    def ratio(self, runtime: str, key: str, kind: str) -> float:
        """Median over rounds of (this library's cost / anybreaker's cost)."""
        mine = self.costs.get((runtime, key, kind), [])
        ours = self.costs.get((runtime, "anybreaker", kind), [])
        if not mine or len(mine) != len(ours):
            return float("nan")
        return paired_ratio(mine, ours)


async def _probe(library: Library) -> None:
    """Build every loop and run it a little: raise if the library fails here."""
    for make in (library.make_closed, library.make_rejected, library.make_failure):
        if make is not None:
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

    async def one_round(runtime: str, order: list[Library]) -> None:
        for library in order:
            kinds: list[tuple[str, Callable[[], Any] | None, int]] = [
                ("closed", library.make_closed, n_closed),
                ("rejected", library.make_rejected, n_rejected),
                ("failure", library.make_failure, n_failures),
            ]
            for kind, make, n in kinds:
                if make is None:
                    continue
                loop: Loop = await make()
                cost = await per_call(loop, n)
                results.costs.setdefault((runtime, library.key, kind), []).append(cost)

    for index in range(rounds):
        for runtime in runtimes:
            order = measured[runtime]
            # Rotate the order so that no library always runs first or last.
            shift = index % len(order)
            anyio.run(one_round, runtime, order[shift:] + order[:shift], backend=runtime)
    return results


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
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = build(names)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        except Exception as error:  # a missing competitor is reported, not fatal
            results.append(MemoryResult(library, how, None, f"{type(error).__name__}"))
            continue
        finally:
            tracemalloc.stop()
        del held
        results.append(MemoryResult(library, how, (after - before) / count))
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
