"""``CircuitBreakerConfig``: the settings of a breaker, validated at construction."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["CircuitBreakerConfig", "StorageErrorPolicy", "check_settings"]

StorageErrorPolicy = Literal["local", "allow", "reject", "raise"]
_POLICIES: tuple[str, ...] = get_args(StorageErrorPolicy)


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """The settings of a circuit breaker.

    Every field has a default; invalid values raise ``ValueError`` or
    ``TypeError`` naming the field.
    """

    failure_threshold: int = 5
    """Failures within ``window_size`` seconds that open the breaker."""
    success_threshold: int = 2
    """Successful trial calls in half-open that close the breaker."""
    timeout: float = 30.0
    """Seconds the breaker stays open before it admits a trial call."""
    window_size: float = 60.0
    """Seconds a failure counts for."""
    half_open_max_calls: int = 1
    """Trial calls allowed at once in half-open, across every process sharing the storage."""
    ignored_exceptions: tuple[type[BaseException], ...] = ()
    """Exception types that pass through and count as neither failure nor success."""
    is_failure: Callable[[Exception], bool] | None = None
    """Decides whether an exception (not ignored) is a failure; ``None``: every one is."""
    backoff_multiplier: float = 1.0
    """Each consecutive re-opening multiplies the open period by this (1.0: no back-off)."""
    max_timeout: float | None = None
    """Cap of the backed-off open period; ``None``: no cap."""
    trial_lease: float = 120.0
    """Seconds a half-open trial permit is held before it expires if never reported."""
    on_storage_error: StorageErrorPolicy = "local"
    """What a storage failure means for the guarded call: see the storage docs."""
    storage_timeout: float = 2.0
    """Seconds one storage operation may take before it counts as a storage failure."""
    storage_retry_interval: float = 1.0
    """While the storage fails, seconds between attempts to reach it again."""

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "success_threshold", "half_open_max_calls"):
            _positive_int(name, getattr(self, name))
        _duration("timeout", self.timeout, allow_zero=True)
        _duration("window_size", self.window_size, allow_zero=False)
        _duration("trial_lease", self.trial_lease, allow_zero=False)
        _duration("storage_timeout", self.storage_timeout, allow_zero=False)
        _duration("storage_retry_interval", self.storage_retry_interval, allow_zero=True)
        multiplier = _number("backoff_multiplier", self.backoff_multiplier)
        if not math.isfinite(multiplier) or multiplier < 1.0:
            raise ValueError(
                f"backoff_multiplier must be a finite number >= 1.0, got {multiplier!r}"
            )
        if self.max_timeout is not None:
            _duration("max_timeout", self.max_timeout, allow_zero=True)
            if self.max_timeout < self.timeout:
                raise ValueError(
                    f"max_timeout ({self.max_timeout!r}) must not be smaller than "
                    f"timeout ({self.timeout!r})"
                )
        _exception_types(self)
        if self.is_failure is not None and not callable(self.is_failure):
            raise TypeError(f"is_failure must be callable, got {self.is_failure!r}")
        if self.on_storage_error not in _POLICIES:
            raise ValueError(
                f"on_storage_error must be one of {', '.join(map(repr, _POLICIES))}, "
                f"got {self.on_storage_error!r}"
            )

    def replace(self, **changes: Any) -> CircuitBreakerConfig:
        """Return a copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes)

    def open_duration(self, openings: int) -> float:
        """Seconds the breaker stays open after its ``openings``-th opening in a row."""
        if openings <= 1 or self.backoff_multiplier == 1.0:
            return self.timeout
        try:
            duration = self.timeout * self.backoff_multiplier ** (openings - 1)
        except OverflowError:
            duration = math.inf
        if self.max_timeout is not None:
            duration = min(duration, self.max_timeout)
        return duration


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")


def _duration(name: str, value: object, *, allow_zero: bool) -> None:
    number = _number(name, value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")


def _exception_types(config: CircuitBreakerConfig) -> None:
    ignored: Any = config.ignored_exceptions
    if isinstance(ignored, type):
        ignored = (ignored,)
    elif isinstance(ignored, list):
        ignored = tuple(ignored)
    if not isinstance(ignored, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in ignored
    ):
        raise TypeError(
            "ignored_exceptions must be a tuple of exception types, "
            f"got {config.ignored_exceptions!r}"
        )
    object.__setattr__(config, "ignored_exceptions", ignored)


_FIELDS = frozenset(f.name for f in dataclasses.fields(CircuitBreakerConfig))


def check_settings(settings: dict[str, Any]) -> None:
    """Refuse keyword settings that are not fields of ``CircuitBreakerConfig``."""
    unknown = sorted(set(settings) - _FIELDS)
    if unknown:
        raise TypeError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            "the settings are the fields of CircuitBreakerConfig"
        )
