"""Guard a block of code with ``async with breaker:``."""

import anyio

from anybreaker import CircuitBreaker

breaker = CircuitBreaker("search-tool")


async def search(query: str) -> list[str]:
    async with breaker:
        await anyio.sleep(0.01)  # your call to the dependency goes here
        return [f"result for {query!r}"]


async def main() -> None:
    print(await search("circuit breakers"))
    print(breaker.stats)


if __name__ == "__main__":
    anyio.run(main)
