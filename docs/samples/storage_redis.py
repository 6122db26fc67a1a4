"""Workers sharing one breaker through Redis (coredis: asyncio and trio)."""

import os

import anyio

from anybreaker import CircuitBreaker, RedisStorage

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def main() -> None:
    # A prefix of your application's own keeps its keys apart from others'.
    async with (
        RedisStorage(URL, prefix="myapp-breakers") as one,
        RedisStorage(URL, prefix="myapp-breakers") as other,
    ):
        worker_a = CircuitBreaker("docs-model-api", failure_threshold=1, storage=one)
        worker_b = CircuitBreaker("docs-model-api", failure_threshold=1, storage=other)

        await worker_a.record_failure(ConnectionError())  # A sees the API fail
        print(await worker_b.get_state())  # B stops calling it too

        await one.delete("docs-model-api")  # this demo cleans up after itself


if __name__ == "__main__":
    anyio.run(main)
