"""Workers sharing one breaker through PostgreSQL (psycopg: asyncio and trio)."""

import os

import anyio

from anybreaker import CircuitBreaker, SQLAlchemyStorage

URL = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


async def main() -> None:
    # Two workers (two processes, or two hosts, in real life).
    async with SQLAlchemyStorage(URL) as one, SQLAlchemyStorage(URL) as other:
        worker_a = CircuitBreaker("docs-model-api", failure_threshold=1, storage=one)
        worker_b = CircuitBreaker("docs-model-api", failure_threshold=1, storage=other)

        await worker_a.record_failure(ConnectionError())  # A sees the API fail
        print(await worker_b.get_state())  # B stops calling it too

        await one.delete("docs-model-api")  # this demo cleans up after itself


if __name__ == "__main__":
    anyio.run(main)
