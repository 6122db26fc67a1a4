"""A breaker on SQLite is still open after a restart, and shared by a host's processes."""

import anyio

from anybreaker import CircuitBreaker, SQLiteStorage


async def main() -> None:
    async with SQLiteStorage("breakers.db") as storage:
        breaker = CircuitBreaker("model-api", failure_threshold=1, storage=storage)
        await breaker.record_failure(ConnectionError())
        print(breaker.state)

    # Later: a restarted process (here, a new storage on the same file).
    async with SQLiteStorage("breakers.db") as storage:
        breaker = CircuitBreaker("model-api", failure_threshold=1, storage=storage)
        print(await breaker.get_state(), f"{breaker.get_time_until_retry():.0f} s")


if __name__ == "__main__":
    anyio.run(main)
