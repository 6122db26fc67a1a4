"""``FakeClock``: a clock that moves only when told to."""

from __future__ import annotations

import math

__all__ = ["FakeClock"]


class FakeClock:
    """A zero-argument clock for breakers under test; it moves only on ``advance``.

    Pass it as ``CircuitBreaker(..., clock=clock)`` and move time with
    ``clock.advance(seconds)`` instead of sleeping.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (finite, >= 0)."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._now += seconds

    def set(self, now: float) -> None:
        """Jump to ``now``, forward or back (to test a clock stepped back)."""
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        self._now = float(now)
