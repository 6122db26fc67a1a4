"""Back off: each re-opening in a row stays open longer, up to ``max_timeout``."""

import anyio

from anybreaker import CircuitBreaker
from anybreaker.testing import FakeClock


async def main() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "flaky-api",
        failure_threshold=1,
        timeout=10.0,
        backoff_multiplier=2.0,
        max_timeout=60.0,
        clock=clock,
    )
    await breaker.record_failure(ConnectionError())
    for _ in range(4):
        wait = breaker.get_time_until_retry()
        print(f"open for {wait:.0f} s")
        clock.advance(wait)
        # The trial call fails: the breaker re-opens, for longer.
        await breaker.allow_request()
        await breaker.record_failure(ConnectionError())

    print(f"open for {breaker.get_time_until_retry():.0f} s")


if __name__ == "__main__":
    anyio.run(main)
