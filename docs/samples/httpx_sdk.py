"""An OpenAI client whose requests go through a BreakerTransport."""

import anyio
import httpx
import openai

from anybreaker import CircuitBreakerOpenError, CircuitBreakerRegistry
from anybreaker.httpx import BreakerTransport


def model_api(request: httpx.Request) -> httpx.Response:
    """The model API of this example: overloaded, it answers every request with a 500."""
    return httpx.Response(500, json={"error": {"message": "overloaded", "type": "server_error"}})


breakers = CircuitBreakerRegistry(failure_threshold=3, timeout=30.0)
transport = BreakerTransport(
    httpx.MockTransport(model_api),  # leave it out to send with httpx's own transport
    registry=breakers,
)
client = openai.AsyncOpenAI(
    base_url="https://api.example.com/v1",
    api_key="sk-example",
    max_retries=0,
    http_client=httpx.AsyncClient(transport=transport),
)


async def main() -> None:
    async with client:
        for attempt in range(1, 5):
            try:
                await client.chat.completions.create(
                    model="big-model", messages=[{"role": "user", "content": "hello"}]
                )
            except openai.InternalServerError as error:
                print(f"attempt {attempt}: the API answered {error.status_code}")
            except CircuitBreakerOpenError as error:
                print(
                    f"attempt {attempt}: not sent, {error.circuit_name} "
                    f"is open for {error.time_until_retry:.0f} s"
                )
    print(breakers["https://api.example.com"].state)


if __name__ == "__main__":
    anyio.run(main)
