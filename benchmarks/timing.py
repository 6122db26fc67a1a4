"""Timing helpers shared by every part of the benchmark."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

RUNTIMES = ("asyncio", "trio")


async def per_call(loop: Callable[[int], Awaitable[None]], n: int) -> float:
    """Run ``loop(n)`` once warm and return its mean cost per call, in seconds.

    The garbage collector is off while the clock runs, as in ``timeit``, so
    that a collection triggered by earlier allocations does not land on
    whichever library happens to be measured at that moment.
    """
    await loop(max(1, n // 20))
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        await loop(n)
        return (time.perf_counter() - start) / n
    finally:
        gc.enable()


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (NaN when there are none)."""
    return statistics.median(values) if values else float("nan")


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median over rounds of the ratio measured within each round.

    Both costs of a pair come from the same round, so a burst of load on the
    shared machine hits both and cancels out of their ratio.
    """
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True) if b > 0]
    return median(ratios)


def micro(seconds: float) -> str:
    """Seconds as microseconds with three significant digits."""
    value = seconds * 1e6
    if value != value:  # NaN
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
