"""Calls that began before the breaker changed state do not move the new state."""

import anyio

from anybreaker import CircuitBreaker
from anybreaker.testing import FakeClock


async def main() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "model-api", failure_threshold=2, success_threshold=1, timeout=30.0, clock=clock
    )
    give_up = anyio.Event()

    async def straggler() -> None:
        try:
            async with breaker:  # begins during the outage, while still closed...
                await give_up.wait()
                raise TimeoutError("no answer")  # ...and fails long after
        except TimeoutError:
            pass

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(straggler)
        tasks.start_soon(straggler)
        await anyio.wait_all_tasks_blocked()

        for _ in range(2):  # two quick failures open the breaker
            await breaker.record_failure(ConnectionError())
        print(breaker.state)
        clock.advance(30.0)
        async with breaker:  # the trial call succeeds: closed again
            pass
        print(breaker.state)

        give_up.set()  # now the two stragglers from the outage fail

    # They began before the breaker opened: they do not re-open it.
    print(breaker.state, breaker.stats.failed_calls)


if __name__ == "__main__":
    anyio.run(main)
