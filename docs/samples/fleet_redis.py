"""A fleet of workers guards one model API with one breaker kept in Redis.

Each worker stands for a process on a host of its own: it has its own
storage (its own connections) and its own breakers, and shares nothing with
the others but the Redis server. Runs under asyncio and trio.
"""

import os

import anyio

from anybreaker import CircuitBreakerOpenError, CircuitBreakerRegistry, RedisStorage

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
WORKERS = 4
REQUESTS = 10


class ModelAPI:
    """A stand-in for a model API that is down until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    async def complete(self, prompt: str) -> str:
        self.calls += 1
        await anyio.sleep(0.005)
        if not self.up:
            raise ConnectionError("model API unavailable")
        return f"completion of {prompt!r}"


async def worker(api: ModelAPI, tally: dict[str, int]) -> None:
    """One worker process: its storage, its registry, its requests."""
    # Every duration of this demo is short, so that it runs in a blink;
    # staleness (default 0.1 s) too, to keep its place among them.
    async with RedisStorage(REDIS_URL, prefix="docs-fleet", staleness=0.01) as storage:
        breakers = CircuitBreakerRegistry(
            storage=storage, failure_threshold=3, timeout=0.1, success_threshold=2
        )
        for request in range(REQUESTS):
            try:
                async with breakers.get("model-api"):
                    await api.complete(f"request {request}")
                tally["served"] += 1
            except CircuitBreakerOpenError:
                tally["refused"] += 1  # at once, without calling the API
            except ConnectionError:
                tally["failed"] += 1
            await anyio.sleep(0.002)


async def run_fleet(api: ModelAPI) -> dict[str, int]:
    tally = {"served": 0, "failed": 0, "refused": 0}
    async with anyio.create_task_group() as fleet:
        for _ in range(WORKERS):
            fleet.start_soon(worker, api, tally)
    return tally


async def main() -> None:
    api = ModelAPI()
    down = await run_fleet(api)
    print(f"API down: {api.calls} of {WORKERS * REQUESTS} requests reached it; {down}")

    api.up, api.calls = True, 0
    await anyio.sleep(0.1)  # the breaker's timeout: a trial is due
    back = await run_fleet(api)
    print(f"API back: {back}")

    async with RedisStorage(REDIS_URL, prefix="docs-fleet") as storage:
        await storage.delete("model-api")  # this demo cleans up after itself


if __name__ == "__main__":
    anyio.run(main)
