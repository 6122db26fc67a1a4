"""Answer fast when the breaker is open: fall back, or tell the user when to retry."""

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError

primary = CircuitBreaker("primary-model", failure_threshold=1, timeout=60.0)


async def primary_model(prompt: str) -> str:
    await anyio.sleep(0.01)
    raise ConnectionError("503 Service Unavailable")


async def backup_model(prompt: str) -> str:
    await anyio.sleep(0.01)
    return f"(backup) answer to {prompt!r}"


async def answer(prompt: str) -> str:
    try:
        async with primary:
            return await primary_model(prompt)
    except CircuitBreakerOpenError as error:
        print(f"{error.circuit_name} is open, retry in {error.time_until_retry:.0f} s")
        return await backup_model(prompt)
    except ConnectionError:
        return await backup_model(prompt)


async def main() -> None:
    print(await answer("What is a circuit breaker?"))  # fails, opens the breaker
    print(await answer("And a fuse?"))  # not sent to the primary at all
    print(f"primary: {primary.state}, retry in {primary.get_time_until_retry():.0f} s")


if __name__ == "__main__":
    anyio.run(main)
