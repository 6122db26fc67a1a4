"""Guard a coroutine function with ``call()`` or with ``@breaker``."""

import anyio

from anybreaker import CircuitBreaker

breaker = CircuitBreaker("weather-api", failure_threshold=3)


async def fetch_forecast(city: str, *, days: int = 1) -> str:
    await anyio.sleep(0.01)
    return f"{city}: sunny for {days} day(s)"


@breaker
async def fetch_alerts(city: str) -> list[str]:
    await anyio.sleep(0.01)
    return []


async def main() -> None:
    # call() passes the arguments on and returns the result.
    print(await breaker.call(fetch_forecast, "Lyon", days=3))
    # Every call of a decorated function goes through the breaker.
    print(await fetch_alerts("Lyon"))
    print(breaker.stats.successful_calls)


if __name__ == "__main__":
    anyio.run(main)
