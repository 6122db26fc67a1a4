"""Failures count for ``window_size`` seconds; older ones are forgotten."""

import anyio

from anybreaker import CircuitBreaker
from anybreaker.testing import FakeClock


async def main() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("tool", failure_threshold=3, window_size=60.0, clock=clock)

    for _ in range(2):
        await breaker.record_failure(ConnectionError())
    clock.advance(61.0)  # those two have left the window
    await breaker.record_failure(ConnectionError())
    print(breaker.state)  # one failure in the window: still closed

    await breaker.record_failure(ConnectionError())
    await breaker.record_failure(ConnectionError())
    print(breaker.state)  # three within 60 s: open


if __name__ == "__main__":
    anyio.run(main)
