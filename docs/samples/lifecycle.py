"""Walk a breaker through its states, moving a fake clock instead of waiting."""

import contextlib

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError
from anybreaker.testing import FakeClock


async def fail() -> None:
    raise ConnectionError("down")


async def succeed() -> str:
    return "ok"


async def main() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "model-api", failure_threshold=3, success_threshold=2, timeout=30.0, clock=clock
    )

    for _ in range(3):  # three failures within window_size (60 s)...
        with contextlib.suppress(ConnectionError):
            await breaker.call(fail)
    print(breaker.state)  # ...open it

    try:
        await breaker.call(succeed)
    except CircuitBreakerOpenError as error:
        print(f"rejected, retry in {error.time_until_retry} s")

    clock.advance(30.0)  # after timeout: half-open
    print(breaker.state)

    await breaker.call(succeed)  # first trial call succeeds
    print(breaker.state)
    await breaker.call(succeed)  # success_threshold=2 successes close it
    print(breaker.state)


if __name__ == "__main__":
    anyio.run(main)
