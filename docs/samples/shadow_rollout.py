"""Roll out a breaker in shadow mode: it records and reports, and never refuses a call."""

import anyio

from anybreaker import CallEvent, CircuitBreaker, StateChange
from anybreaker.testing import FakeClock

clock = FakeClock()
would_refuse = 0


def log_change(change: StateChange) -> None:
    print(f"{change.name}: {change.old_state} -> {change.new_state} (shadow: calls still run)")


def count_refusals(event: CallEvent) -> None:
    global would_refuse
    if event.outcome == "rejected":
        would_refuse += 1


breaker = CircuitBreaker(
    "search-tool",
    failure_rate_threshold=0.5,  # the settings under trial
    minimum_calls=10,
    failure_threshold=None,
    timeout=30.0,
    enforce=False,  # shadow mode
    clock=clock,
    listeners=[log_change],
    call_listeners=[count_refusals],
)


async def search(query: str, fails: bool) -> str:
    if fails:
        raise ConnectionError("search index unreachable")
    return f"results for {query}"


async def main() -> None:
    ran = 0
    for second in range(60):
        clock.advance(1.0)
        try:
            async with breaker:
                ran += 1
                await search("circuit breakers", fails=10 <= second < 25)
        except ConnectionError:
            pass
    stats = breaker.get_stats()
    print(f"ran {ran} of 60 calls; it would have refused {would_refuse}")
    print(f"stats: {stats.total_calls} calls, {stats.rejected_calls} would-be refusals")


if __name__ == "__main__":
    anyio.run(main)
