"""Breakers of one name on one ``MemoryStorage`` share one state."""

import anyio

from anybreaker import CircuitBreaker, MemoryStorage


async def main() -> None:
    storage = MemoryStorage()
    # Two parts of one application, each with its own breaker object:
    in_chat = CircuitBreaker("model-api", failure_threshold=1, storage=storage)
    in_summaries = CircuitBreaker("model-api", failure_threshold=1, storage=storage)

    await in_chat.record_failure(ConnectionError())
    print(in_chat.state, await in_summaries.get_state())


if __name__ == "__main__":
    anyio.run(main)
