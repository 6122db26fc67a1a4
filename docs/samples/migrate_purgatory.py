"""purgatory code, on anybreaker: the factory becomes a registry."""

import anyio

from anybreaker import CircuitBreakerOpenError, CircuitBreakerRegistry, MemoryStorage


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def server_failure(error: Exception) -> bool:
    # purgatory: exclude=[(HTTPError, lambda e: e.status < 500)]
    return not (isinstance(error, HTTPError) and error.status < 500)


# AsyncCircuitBreakerFactory(default_threshold=2, default_ttl=30, exclude=[...])
# (AsyncRedisUnitOfWork("redis://...") becomes storage=RedisStorage("redis://..."))
breakers = CircuitBreakerRegistry(
    failure_threshold=2, timeout=30.0, is_failure=server_failure, storage=MemoryStorage()
)


@breakers.get("billing")  # was: @factory("billing")
async def charge(status: int) -> str:
    if status >= 400:
        raise HTTPError(status)
    return "charged"


async def main() -> None:
    # was: async with await factory.get_breaker("billing", threshold=2, ttl=30):
    async with breakers.get("billing"):
        print(await charge(200))
    for status in (404, 503, 503, 200):
        try:
            print(await charge(status))
        except HTTPError as error:
            print(error)
        except CircuitBreakerOpenError as error:  # was: purgatory's OpenedState
            print(error)


if __name__ == "__main__":
    anyio.run(main)
