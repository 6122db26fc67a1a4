"""Report outcomes yourself with ``allow_request()`` and ``record_*()``."""

import anyio

from anybreaker import CircuitBreaker

breaker = CircuitBreaker("mcp-server", failure_threshold=2)


async def call_tool(name: str) -> str:
    await anyio.sleep(0.01)
    raise TimeoutError(f"{name} timed out")


async def main() -> None:
    for _ in range(3):
        if not await breaker.allow_request():
            print("skipped: the breaker is open")
            continue
        try:
            await call_tool("fetch")
        except TimeoutError as error:
            await breaker.record_failure(error)
            print(f"failed: {error}")
        else:
            await breaker.record_success()


if __name__ == "__main__":
    anyio.run(main)
