"""pybreaker code, on anybreaker."""

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerOpenError, StateChange


class NotFound(Exception):
    """A business error: it says nothing about the service's health."""


def log_change(change: StateChange) -> None:
    print(f"{change.name}: {change.old_state} -> {change.new_state}")


# pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, exclude=[NotFound],
#                          listeners=[...], name="db")
db_breaker = CircuitBreaker(
    "db",
    failure_threshold=2,
    timeout=60.0,
    success_threshold=1,
    is_failure=lambda error: not isinstance(error, NotFound),  # excluded: a success
    listeners=[log_change],
)


@db_breaker  # @db_breaker on an async def
async def load_user(user_id: int) -> dict[str, int]:
    raise ConnectionError("database unreachable")


async def main() -> None:
    for user_id in range(3):
        try:
            await load_user(user_id)  # or: await db_breaker.call(load_user, user_id)
        except ConnectionError:
            print("failed")  # the original error, also on the call that trips
        except CircuitBreakerOpenError:  # pybreaker.CircuitBreakerError
            print("rejected")


if __name__ == "__main__":
    anyio.run(main)
