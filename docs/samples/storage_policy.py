"""What a breaker does when its storage fails: ``on_storage_error``."""

import anyio

from anybreaker import (
    BreakerRecord,
    CircuitBreaker,
    CircuitBreakerOpenError,
    MemoryStorage,
    StorageError,
)
from anybreaker.testing import FakeClock


class FlakyStorage(MemoryStorage):
    """A storage we can take down at will (think: the database is restarting)."""

    down = False

    async def get(self, name: str) -> BreakerRecord | None:
        if self.down:
            raise StorageError("connection refused")
        return await super().get(name)

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        if self.down:
            raise StorageError("connection refused")
        return await super().compare_and_set(name, expected_version, record)


async def model_api() -> None:
    raise ConnectionError("model API down too")


async def each_policy() -> None:
    for policy in ("local", "allow", "reject", "raise"):
        storage = FlakyStorage()
        breaker = CircuitBreaker("orders-db", storage=storage, on_storage_error=policy)
        storage.down = True
        try:
            async with breaker:
                outcome = "the call ran"
        except CircuitBreakerOpenError:
            outcome = "refused with CircuitBreakerOpenError"
        except StorageError as error:
            outcome = f"StorageError: {error}"
        print(f"{policy:>6}: {outcome}")


async def local_keeps_protecting() -> None:
    clock = FakeClock()
    storage = FlakyStorage()
    breaker = CircuitBreaker("model-api", failure_threshold=2, storage=storage, clock=clock)

    storage.down = True  # "local": the breaker counts in this process meanwhile
    for _ in range(3):
        try:
            await breaker.call(model_api)
        except ConnectionError:
            print("failed")
        except CircuitBreakerOpenError:
            print("refused: the breaker opened without its storage")

    storage.down = False
    clock.advance(breaker.config.storage_retry_interval)
    # The storage answers again: the failures counted meanwhile reach its
    # window, so the breaker opens there too, for every process.
    print(await breaker.get_state())


async def main() -> None:
    await each_policy()
    await local_keeps_protecting()


if __name__ == "__main__":
    anyio.run(main)
