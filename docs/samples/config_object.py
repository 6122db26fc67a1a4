"""Settings as keywords, or as one ``CircuitBreakerConfig`` shared by many breakers."""

import anyio

from anybreaker import CircuitBreaker, CircuitBreakerConfig

# For one breaker, the settings go straight in as keywords...
search = CircuitBreaker("search-tool", failure_threshold=3, timeout=10.0)

# ...or, for several, as one frozen, validated config.
MODEL_SETTINGS = CircuitBreakerConfig(
    failure_threshold=5,
    timeout=30.0,
    backoff_multiplier=2.0,
    max_timeout=300.0,
)
primary = CircuitBreaker("gpt-4o", config=MODEL_SETTINGS)
# replace() returns a validated copy with some fields changed.
backup = CircuitBreaker("local-llama", MODEL_SETTINGS.replace(timeout=5.0))


async def main() -> None:
    print(search.config.failure_threshold, search.config.success_threshold)
    print(primary.config.max_timeout, backup.config.timeout)

    # A bad value is refused at construction, naming the field.
    for bad in ({"timeout": -1}, {"failure_threshold": 0}, {"window_size": "60"}):
        try:
            CircuitBreakerConfig(**bad)
        except (TypeError, ValueError) as error:
            print(f"{type(error).__name__}: {error}")
    try:
        CircuitBreaker("x", MODEL_SETTINGS, timeout=1.0)
    except TypeError as error:
        print(f"TypeError: {error}")


if __name__ == "__main__":
    anyio.run(main)
