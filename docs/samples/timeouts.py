"""Where a timeout belongs: inside the breaker, so that a hang counts as a failure."""

import anyio

from anybreaker import CircuitBreaker


async def hanging_model_api() -> str:
    await anyio.sleep_forever()  # the server accepted the connection and went quiet
    return "never"


async def main() -> None:
    # Wrong: a deadline around the breaker cancels the call from outside. A
    # cancellation is neither a success nor a failure: hangs never open it.
    outside = CircuitBreaker("model-api", failure_threshold=2)
    for _ in range(3):
        with anyio.move_on_after(0.05):
            async with outside:
                await hanging_model_api()
    print("deadline around the breaker:", outside.state, outside.stats.failed_calls, "failures")

    # Right: the breaker bounds the call itself. The caller gets TimeoutError,
    # and the breaker counts a failure.
    inside = CircuitBreaker("model-api", failure_threshold=2, call_timeout=0.05)
    for _ in range(2):
        try:
            await inside.call(hanging_model_api)
        except TimeoutError as error:
            print("call_timeout:", error)
    print("call_timeout on the breaker:", inside.state)


if __name__ == "__main__":
    anyio.run(main)
