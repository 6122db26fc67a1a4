"""Decide which exceptions are failures: ``ignored_exceptions`` and ``is_failure``."""

import anyio

from anybreaker import CircuitBreaker


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class BudgetExceeded(Exception):
    """Raised by our own spending guard: it says nothing about the API's health."""


def server_side(error: Exception) -> bool:
    """A failure of the API itself: 5xx or 429, not a bad request of ours."""
    if isinstance(error, HTTPError):
        return error.status >= 500 or error.status == 429
    return True


breaker = CircuitBreaker(
    "model-api",
    failure_threshold=2,
    ignored_exceptions=(BudgetExceeded,),  # neither failure nor success
    is_failure=server_side,  # False: the call counts as a success
)


async def request(status: int | None) -> None:
    async with breaker:
        if status is None:
            raise BudgetExceeded("daily budget spent")
        await anyio.sleep(0.01)
        if status >= 400:
            raise HTTPError(status)


async def main() -> None:
    for status in (400, None, 422, 503, 200, 429):
        try:
            await request(status)
            print(f"{status}: ok")
        except Exception as error:
            print(f"{status}: {error!r}, breaker {breaker.state}")
    print(breaker.stats)


if __name__ == "__main__":
    anyio.run(main)
