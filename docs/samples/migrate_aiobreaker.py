"""aiobreaker code, on anybreaker (and now under trio too)."""

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError

# aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=60))
breaker = CircuitBreaker("search", failure_threshold=1, timeout=60.0)


async def search(query: str) -> list[str]:
    raise ConnectionError("search backend down")


async def main() -> None:
    for _ in range(2):
        try:
            # was: await breaker.call_async(search, "anyio")
            print(await breaker.call(search, "anyio"))
        except ConnectionError:
            print("failed")  # the original error, also on the call that trips
        except CircuitBreakerOpenError as error:  # was: aiobreaker.CircuitBreakerError
            # was: error.time_remaining, a timedelta; here seconds, a float
            print(f"open, retry in {error.time_until_retry:.0f} s")
    # was: breaker.time_until_open
    print(f"{breaker.get_time_until_retry():.0f}")


if __name__ == "__main__":
    anyio.run(main)
