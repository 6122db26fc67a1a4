"""Guard a flaky model API under asyncio: after three failures it is not called at all."""

import asyncio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError

breaker = CircuitBreaker("model-api", failure_threshold=3, timeout=30.0)


async def model_api(prompt: str) -> str:
    """Stand-in for your model client; this one is down."""
    await asyncio.sleep(0.01)
    raise ConnectionError("model API unreachable")


async def ask(prompt: str) -> str:
    async with breaker:
        return await model_api(prompt)


async def main() -> None:
    for attempt in range(1, 6):
        try:
            await ask("Summarise this ticket")
        except ConnectionError as error:
            print(f"call {attempt}: failed: {error}")
        except CircuitBreakerOpenError as error:
            print(f"call {attempt}: not sent: {error}")
    print(f"state: {breaker.state}")


if __name__ == "__main__":
    asyncio.run(main())
