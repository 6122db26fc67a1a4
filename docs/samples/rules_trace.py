"""One recorded trace of outcomes, four trip rules: when does each open the breaker?"""

from collections.abc import Iterator

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError
from anybreaker.testing import FakeClock

START = 1_000_000.0


def trace() -> Iterator[tuple[float, bool, float]]:
    """(seconds into the trace, whether the call fails, seconds it takes)."""
    for tick in range(80):  # 0-40 s: healthy, two calls a second
        yield tick * 0.5, False, 0.1
    for tick in range(80):  # 40-80 s: one call in three fails
        yield 40 + tick * 0.5, tick % 3 == 0, 0.1
    for tick in range(10):  # 80-110 s: every call answers, slowly
        yield 80 + tick * 3.0, False, 2.5
    for tick in range(60):  # 110-140 s: down
        yield 110 + tick * 0.5, True, 0.1


RULES = {
    "failure_threshold=5 (the default)": {},
    "failure_rate_threshold=0.3, minimum_calls=20": {
        "failure_threshold": None,
        "failure_rate_threshold": 0.3,
        "minimum_calls": 20,
    },
    "consecutive_failures=5": {"failure_threshold": None, "consecutive_failures": 5},
    "slow_call_rate_threshold=0.5 over 2 s, 30 s window": {
        "failure_threshold": None,
        "window_size": 30.0,
        "slow_call_duration": 2.0,
        "slow_call_rate_threshold": 0.5,
        "minimum_calls": 5,
    },
}


async def opens_at(settings: dict[str, object]) -> str:
    """Replay the trace through a breaker with ``settings``; when did it first refuse?"""
    clock = FakeClock(START)
    breaker = CircuitBreaker("model-api", clock=clock, timeout=3600.0, **settings)

    async def call(fails: bool, seconds: float) -> None:
        clock.advance(seconds)
        if fails:
            raise ConnectionError("model API")

    for at, fails, seconds in trace():
        clock.set(START + at)
        try:
            await breaker.call(call, fails, seconds)
        except CircuitBreakerOpenError:
            return f"{at:5.1f} s"
        except ConnectionError:
            pass
    return "never"


async def main() -> None:
    for rule, settings in RULES.items():
        print(f"{rule:<55} first refused at {await opens_at(settings)}")


if __name__ == "__main__":
    anyio.run(main)
