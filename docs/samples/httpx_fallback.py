"""One breaker per model, and a fallback to a second model while the first one's is open."""

import json

import anyio
import httpx
import openai

from anybreaker import CircuitBreakerOpenError, CircuitBreakerRegistry
from anybreaker.httpx import BreakerTransport, origin_key


def per_model(request: httpx.Request) -> str:
    """The breaker of a request: its origin and the model its JSON body names."""
    try:
        model = json.loads(request.content).get("model")
    except (httpx.RequestNotRead, ValueError, AttributeError):
        model = None  # a streamed body, or one that is not a JSON object
    return f"{origin_key(request)}/{model}" if model else origin_key(request)


def model_api(request: httpx.Request) -> httpx.Response:
    """The API of this example: big-model is overloaded, small-model answers."""
    model = json.loads(request.content)["model"]
    if model == "big-model":
        return httpx.Response(503, json={"error": {"message": "overloaded"}})
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{model} says hi"},
                    "finish_reason": "stop",
                }
            ],
        },
    )


breakers = CircuitBreakerRegistry(failure_threshold=2, timeout=60.0)
transport = BreakerTransport(httpx.MockTransport(model_api), registry=breakers, key=per_model)
client = openai.AsyncOpenAI(
    base_url="https://api.example.com/v1",
    api_key="sk-example",
    max_retries=0,
    http_client=httpx.AsyncClient(transport=transport),
)


async def ask(model: str, prompt: str) -> str:
    completion = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return completion.choices[0].message.content or ""


async def answer(prompt: str) -> str:
    """Ask big-model; while its breaker is open, ask small-model instead."""
    try:
        return await ask("big-model", prompt)
    except CircuitBreakerOpenError as error:
        print(f"  ({error.circuit_name} is open: falling back)")
        return await ask("small-model", prompt)


async def main() -> None:
    async with client:
        for turn in range(1, 5):
            try:
                print(f"turn {turn}: {await answer('hello')}")
            except openai.APIStatusError as error:
                print(f"turn {turn}: big-model failed with {error.status_code}")
    print(sorted(breaker.name for breaker in breakers))


if __name__ == "__main__":
    anyio.run(main)
