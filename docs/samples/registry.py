"""One breaker per model, with shared defaults, from a registry."""

import anyio

from anybreaker import CircuitBreakerRegistry, MemoryStorage

breakers = CircuitBreakerRegistry(
    storage=MemoryStorage(),  # one storage for all of them
    failure_threshold=5,
    timeout=30.0,
)


async def complete(model: str, prompt: str) -> str:
    async with breakers.get(model):
        await anyio.sleep(0.01)  # call the model here
        return f"{model}: ok"


async def main() -> None:
    print(await complete("gpt-4o", "hi"))
    print(await complete("claude-sonnet", "hi"))
    # Settings for one key, given the first time it is asked for.
    slow = breakers.get("local-llama", timeout=120.0)
    print(slow.config.timeout, breakers["gpt-4o"].config.timeout)
    print(sorted(breaker.name for breaker in breakers))


if __name__ == "__main__":
    anyio.run(main)
