"""Read and change a breaker by hand: ``get_state``, ``force_open``, ``reset``, stats."""

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError


async def main() -> None:
    breaker = CircuitBreaker("billing")

    # Take the dependency out of service, for every process sharing the storage.
    await breaker.force_open()
    print(await breaker.get_state(), breaker.get_time_until_retry())
    try:
        async with breaker:
            pass
    except CircuitBreakerOpenError as error:
        print(error)

    # Put it back: closed, history cleared.
    await breaker.reset()
    async with breaker:
        pass
    print(await breaker.get_state(), breaker.stats)


if __name__ == "__main__":
    anyio.run(main)
