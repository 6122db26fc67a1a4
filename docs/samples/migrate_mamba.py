"""mamba-agents' CircuitBreaker code, on anybreaker: the same names, awaited."""

import anyio

from anybreaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
)

# Same config fields and defaults; config= works, and so do keywords.
breaker = CircuitBreaker("model-api", config=CircuitBreakerConfig(failure_threshold=3))
same = CircuitBreaker("model-api", failure_threshold=3)


async def call_api() -> str:
    raise ConnectionError("model API down")


async def main() -> None:
    # async with: unchanged.
    try:
        async with breaker:
            await call_api()
    except ConnectionError:
        pass

    # The manual calls are now awaited.
    for _ in range(3):
        if await breaker.allow_request():
            try:
                await call_api()
                await breaker.record_success()
            except ConnectionError as error:
                await breaker.record_failure(error)

    assert breaker.state is CircuitState.OPEN
    try:
        async with breaker:
            await call_api()
    except CircuitBreakerOpenError as error:
        print(error.circuit_name, f"{error.time_until_retry:.0f}")
    print(breaker.stats.failed_calls, breaker.stats.rejected_calls)

    await breaker.reset()  # awaited too
    print(breaker.state, breaker.get_time_until_retry())


if __name__ == "__main__":
    anyio.run(main)
