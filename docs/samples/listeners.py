"""React to state changes: a listener (sync or async), and the ``anybreaker`` logger."""

import anyio

from anybreaker import CircuitBreaker, CircuitState, StateChange
from anybreaker.testing import FakeClock


def log_change(change: StateChange) -> None:
    print(f"{change.name}: {change.old_state} -> {change.new_state}")


async def alert(change: StateChange) -> None:
    if change.new_state is CircuitState.OPEN:
        await anyio.sleep(0.01)  # page someone, post to a channel...
        print(f"ALERT: {change.name} is down")


async def main() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "payments", failure_threshold=1, timeout=10.0, clock=clock, listeners=[log_change]
    )
    breaker.add_listener(alert)

    try:
        async with breaker:
            raise ConnectionError("payments API down")
    except ConnectionError:
        pass
    clock.advance(10.0)
    async with breaker:  # the trial call
        pass
    async with breaker:  # success_threshold=2: this one closes it
        pass


if __name__ == "__main__":
    anyio.run(main)
