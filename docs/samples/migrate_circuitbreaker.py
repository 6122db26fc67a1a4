"""circuitbreaker code, on anybreaker: the decorator and its fallback."""

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError


class RequestError(Exception):
    pass


# @circuit(failure_threshold=2, recovery_timeout=30, expected_exception=RequestError,
#          fallback_function=cached_quote)
quotes = CircuitBreaker(
    "quotes",
    failure_threshold=2,
    timeout=30.0,
    is_failure=lambda error: isinstance(error, RequestError),  # expected_exception
)


async def cached_quote(symbol: str) -> float:
    return 100.0


@quotes
async def live_quote(symbol: str) -> float:
    raise RequestError("quote service down")


async def quote(symbol: str) -> float:
    try:
        return await live_quote(symbol)
    except CircuitBreakerOpenError:  # was: fallback_function=cached_quote
        return await cached_quote(symbol)


async def main() -> None:
    for _ in range(3):
        try:
            print(await quote("ACME"))
        except RequestError as error:
            print(f"failed: {error}")
    print(quotes.state, f"{quotes.get_time_until_retry():.0f}")  # was: open_remaining


if __name__ == "__main__":
    anyio.run(main)
