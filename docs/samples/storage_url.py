"""Choose the storage in configuration: ``storage_from_url``."""

import os

import anyio

from anybreaker import CircuitBreaker, storage_from_url

# memory://, sqlite:///breakers.db, postgresql+psycopg://..., redis://...
STORAGE_URL = os.environ.get("BREAKER_STORAGE", "sqlite:///breakers.db?staleness=0.05")


async def main() -> None:
    async with storage_from_url(STORAGE_URL) as storage:
        breaker = CircuitBreaker("search-tool", storage=storage)
        async with breaker:
            pass  # the guarded call
        print(type(storage).__name__, storage.staleness)


if __name__ == "__main__":
    anyio.run(main)
