"""In half-open, at most ``half_open_max_calls`` trial calls run at once."""

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError
from anybreaker.testing import FakeClock


async def main() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("search", failure_threshold=1, timeout=5.0, clock=clock)
    await breaker.record_failure(ConnectionError())
    clock.advance(5.0)

    outcomes: list[str] = []
    release = anyio.Event()

    async def caller() -> None:
        try:
            async with breaker:
                outcomes.append("trial")
                await release.wait()  # the trial call is slow
        except CircuitBreakerOpenError:
            outcomes.append("rejected")

    async with anyio.create_task_group() as tasks:
        for _ in range(10):
            tasks.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        release.set()
    print(outcomes.count("trial"), "trial,", outcomes.count("rejected"), "rejected")


if __name__ == "__main__":
    anyio.run(main)
