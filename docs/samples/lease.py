"""A trial permit is a lease: one that is never reported expires after ``trial_lease``."""

import anyio

from anybreaker import CircuitBreaker
from anybreaker.testing import FakeClock


async def main() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "mcp-server", failure_threshold=1, timeout=10.0, trial_lease=30.0, clock=clock
    )
    await breaker.record_failure(ConnectionError())
    clock.advance(10.0)

    print(await breaker.allow_request())  # takes the only trial permit...
    # ...and the caller crashes without reporting. Others are refused for now:
    print(await breaker.allow_request())
    clock.advance(30.0)  # the lease has expired
    print(await breaker.allow_request())  # a new trial may run
    await breaker.record_success()


if __name__ == "__main__":
    anyio.run(main)
