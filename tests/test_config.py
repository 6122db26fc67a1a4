"""Settings are validated at construction, and errors name the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from anybreaker import CircuitBreaker, CircuitBreakerConfig, CircuitBreakerRegistry


def test_defaults_match_the_documented_table() -> None:
    """The defaults are the documented ones."""
    config = CircuitBreakerConfig()
    assert (
        config.failure_threshold,
        config.success_threshold,
        config.timeout,
        config.window_size,
        config.half_open_max_calls,
        config.ignored_exceptions,
        config.on_storage_error,
        config.backoff_multiplier,
        config.max_timeout,
    ) == (5, 2, 30.0, 60.0, 1, (), "local", 1.0, None)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("failure_threshold", 0, ValueError),
        ("failure_threshold", -1, ValueError),
        ("failure_threshold", 2.5, TypeError),
        ("failure_threshold", True, TypeError),
        ("success_threshold", 0, ValueError),
        ("half_open_max_calls", 0, ValueError),
        ("half_open_max_calls", "3", TypeError),
        ("timeout", -1.0, ValueError),
        ("timeout", math.nan, ValueError),
        ("timeout", math.inf, ValueError),
        ("timeout", "30", TypeError),
        ("window_size", 0.0, ValueError),
        ("window_size", math.inf, ValueError),
        ("trial_lease", 0.0, ValueError),
        ("storage_timeout", -0.5, ValueError),
        ("storage_retry_interval", math.nan, ValueError),
        ("backoff_multiplier", 0.5, ValueError),
        ("backoff_multiplier", math.inf, ValueError),
        ("max_timeout", -1.0, ValueError),
        ("ignored_exceptions", (KeyError, "nope"), TypeError),
        ("ignored_exceptions", 42, TypeError),
        ("is_failure", 42, TypeError),
        ("on_storage_error", "explode", ValueError),
        ("timeout", 10**400, ValueError),
        ("failure_rate_threshold", 0.0, ValueError),
        ("failure_rate_threshold", 1.5, ValueError),
        ("failure_rate_threshold", "half", TypeError),
        ("slow_call_rate_threshold", -0.1, ValueError),
        ("minimum_calls", 0, ValueError),
        ("consecutive_failures", 0, ValueError),
        ("slow_call_duration", 0.0, ValueError),
        ("call_timeout", math.inf, ValueError),
        ("call_timeout", -1, ValueError),
        ("trip", "always", TypeError),
        ("enforce", "no", TypeError),
    ],
)
def test_invalid_setting_names_the_field(field: str, value: Any, error: type[Exception]) -> None:
    """Each invalid value raises the right error with the field's name in it."""
    with pytest.raises(error, match=field):
        CircuitBreakerConfig(**{field: value})
    with pytest.raises(error, match=field):
        CircuitBreaker("api", **{field: value})


def test_a_slow_call_rate_needs_a_duration() -> None:
    """slow_call_rate_threshold without slow_call_duration is refused, naming both."""
    with pytest.raises(ValueError, match="slow_call_rate_threshold needs slow_call_duration"):
        CircuitBreakerConfig(slow_call_rate_threshold=0.5)


def test_at_least_one_rule_must_be_set() -> None:
    """A config with every rule off is refused, naming the rules."""
    with pytest.raises(ValueError, match=r"no trip rule is set.*failure_threshold"):
        CircuitBreakerConfig(failure_threshold=None)
    assert CircuitBreakerConfig(failure_threshold=None, consecutive_failures=3)


def test_max_timeout_below_timeout_is_refused() -> None:
    """A cap below the base timeout makes no sense and is refused."""
    with pytest.raises(ValueError, match="max_timeout"):
        CircuitBreakerConfig(timeout=30.0, max_timeout=10.0)


def test_single_exception_type_is_accepted() -> None:
    """ignored_exceptions may be one type or a list; it is kept as a tuple."""
    assert CircuitBreakerConfig(ignored_exceptions=KeyError).ignored_exceptions == (KeyError,)  # type: ignore[arg-type]
    assert CircuitBreakerConfig(
        ignored_exceptions=[KeyError, ValueError]  # type: ignore[arg-type]
    ).ignored_exceptions == (KeyError, ValueError)


def test_config_is_frozen_and_replace_validates() -> None:
    """A config cannot change in place; replace() returns a validated copy."""
    config = CircuitBreakerConfig()
    with pytest.raises(AttributeError):
        config.timeout = 1.0  # type: ignore[misc]
    assert config.replace(timeout=5.0).timeout == 5.0
    with pytest.raises(ValueError, match="timeout"):
        config.replace(timeout=-5.0)


def test_settings_as_keywords_or_config_not_both() -> None:
    """Keyword settings build the config; giving both is a TypeError."""
    breaker = CircuitBreaker("model-api", failure_threshold=7, timeout=3.0)
    assert breaker.config == CircuitBreakerConfig(failure_threshold=7, timeout=3.0)
    config = CircuitBreakerConfig(timeout=9.0)
    assert CircuitBreaker("model-api", config).config is config
    with pytest.raises(TypeError, match="not both"):
        CircuitBreaker("model-api", config, timeout=3.0)
    with pytest.raises(TypeError, match="CircuitBreakerConfig"):
        CircuitBreaker("model-api", {"timeout": 3.0})  # type: ignore[arg-type]


def test_unknown_setting_is_named() -> None:
    """A misspelt setting is refused with its name."""
    with pytest.raises(TypeError, match="failure_treshold"):
        CircuitBreaker("model-api", failure_treshold=3)
    with pytest.raises(TypeError, match="timout"):
        CircuitBreakerRegistry(timout=3)


@pytest.mark.parametrize(
    ("name", "error"), [("", ValueError), ("   ", ValueError), (None, TypeError), (42, TypeError)]
)
def test_bad_breaker_name_is_refused(name: Any, error: type[Exception]) -> None:
    """The name must be a non-empty string."""
    with pytest.raises(error, match="name"):
        CircuitBreaker(name)


def test_bad_storage_and_clock_are_refused() -> None:
    """A storage that lacks the protocol, or a clock that is not callable, is refused."""
    with pytest.raises(TypeError, match="storage"):
        CircuitBreaker("api", storage=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        CircuitBreaker("api", clock=12.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="listener"):
        CircuitBreaker("api", listeners=[42])  # type: ignore[list-item]
