"""PostgreSQL through an asyncpg ``AsyncEngine``: asyncio only."""

import asyncio
import os

from sqlalchemy.ext.asyncio import create_async_engine

from anybreaker import CircuitBreaker, SQLAlchemyStorage

URL = os.environ.get("DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def main() -> None:
    engine = create_async_engine(URL)
    try:
        async with SQLAlchemyStorage(engine) as storage:
            breaker = CircuitBreaker("docs-asyncpg", storage=storage)
            async with breaker:
                pass  # the guarded call
            print(await breaker.get_state())
            await storage.delete("docs-asyncpg")  # this demo cleans up after itself
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
