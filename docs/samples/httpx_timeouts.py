"""Where the timeout goes decides whether a hanging dependency opens the breaker."""

import anyio
import httpx

from anybreaker import CircuitBreakerOpenError, CircuitBreakerRegistry
from anybreaker.httpx import BreakerTransport, CallTimeout


async def hanging_tool(request: httpx.Request) -> httpx.Response:
    """The tool server of this example: it accepts requests and never answers them."""
    await anyio.sleep(3600)
    return httpx.Response(200)


def client_for(breakers: CircuitBreakerRegistry) -> httpx.AsyncClient:
    transport = BreakerTransport(httpx.MockTransport(hanging_tool), registry=breakers)
    return httpx.AsyncClient(transport=transport, base_url="https://tools.example.com")


async def main() -> None:
    # A cancel scope around the request: the breaker sees a cancellation, which is
    # neither a success nor a failure, so a tool that hangs never opens it.
    around = CircuitBreakerRegistry(failure_threshold=2)
    async with client_for(around) as client:
        for _ in range(3):
            with anyio.move_on_after(0.05):
                await client.get("/search")
    print("cancel scope around the request:", around["https://tools.example.com"].state)

    # call_timeout (like the client's own timeout) acts inside the breaker: a failure.
    inside = CircuitBreakerRegistry(failure_threshold=2, call_timeout=0.05)
    async with client_for(inside) as client:
        for _ in range(3):
            try:
                await client.get("/search")
            except CallTimeout:
                print("timed out after call_timeout: a failure")
            except CircuitBreakerOpenError as error:
                print(f"not sent: {error.circuit_name} is open")
    print("call_timeout:", inside["https://tools.example.com"].state)


if __name__ == "__main__":
    anyio.run(main)
