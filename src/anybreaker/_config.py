"""``CircuitBreakerConfig``: the settings of a breaker, validated at construction."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ._state import WindowStats

__all__ = ["CircuitBreakerConfig", "StorageErrorPolicy", "check_settings"]

StorageErrorPolicy = Literal["local", "allow", "reject", "raise"]
_POLICIES: tuple[str, ...] = get_args(StorageErrorPolicy)

WINDOW_BUCKETS = 10
"""The window is kept as this many buckets of ``window_size / WINDOW_BUCKETS`` seconds."""

OTHER_RULES = ("failure_rate_threshold", "consecutive_failures", "slow_call_rate_threshold", "trip")
"""The trip rules besides ``failure_threshold``."""
_RULES = ("failure_threshold", *OTHER_RULES)


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """The settings of a circuit breaker.

    Every field has a default; invalid values raise ``ValueError`` or
    ``TypeError`` naming the field. Every trip rule that is set (not
    ``None``) can open the breaker; at least one must be set.
    """

    failure_threshold: int | None = 5
    """Failures within ``window_size`` seconds that open the breaker; ``None``: rule off."""
    success_threshold: int = 2
    """Successful trial calls in half-open that close the breaker."""
    timeout: float = 30.0
    """Seconds the breaker stays open before it admits a trial call."""
    window_size: float = 60.0
    """Seconds an outcome counts for (within one tenth of it: the window is 10 buckets)."""
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
    failure_rate_threshold: float | None = None
    """Share of failures (0 < x <= 1) among the window's calls that opens the breaker."""
    minimum_calls: int = 10
    """Calls the window must hold before a rate rule (failures or slow calls) may open it."""
    consecutive_failures: int | None = None
    """Failures in a row, with no success between them, that open the breaker."""
    slow_call_duration: float | None = None
    """Seconds after which a call counts as slow (whether it succeeded or failed)."""
    slow_call_rate_threshold: float | None = None
    """Share of slow calls (0 < x <= 1) among the window's calls that opens the breaker."""
    call_timeout: float | None = None
    """Seconds the breaker lets a guarded call run before it cancels it (a failure)."""
    trip: Callable[[WindowStats], bool] | None = None
    """A rule of your own over the window's numbers: ``True`` opens the breaker."""
    enforce: bool = True
    """``False``: shadow mode; the breaker records, changes state and reports, never refuses."""

    def __post_init__(self) -> None:
        for name in ("success_threshold", "half_open_max_calls", "minimum_calls"):
            _positive_int(name, getattr(self, name))
        for name in ("failure_threshold", "consecutive_failures"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        _duration("timeout", self.timeout, allow_zero=True)
        _duration("window_size", self.window_size, allow_zero=False)
        _duration("trial_lease", self.trial_lease, allow_zero=False)
        _duration("storage_timeout", self.storage_timeout, allow_zero=False)
        _duration("storage_retry_interval", self.storage_retry_interval, allow_zero=True)
        for name in ("slow_call_duration", "call_timeout"):
            if getattr(self, name) is not None:
                _duration(name, getattr(self, name), allow_zero=False)
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if getattr(self, name) is not None:
                _rate(name, getattr(self, name))
        if self.slow_call_rate_threshold is not None and self.slow_call_duration is None:
            raise ValueError(
                "slow_call_rate_threshold needs slow_call_duration: the seconds after "
                "which a call counts as slow"
            )
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
        for name in ("is_failure", "trip"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {value!r}")
        if not isinstance(self.enforce, bool):
            raise TypeError(f"enforce must be a bool, got {self.enforce!r}")
        if self.on_storage_error not in _POLICIES:
            raise ValueError(
                f"on_storage_error must be one of {', '.join(map(repr, _POLICIES))}, "
                f"got {self.on_storage_error!r}"
            )
        if all(getattr(self, name) is None for name in _RULES):
            raise ValueError("no trip rule is set: give at least one of " + ", ".join(_RULES))

    def replace(self, **changes: Any) -> CircuitBreakerConfig:
        """Return a copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes)

    def open_duration(self, openings: int) -> float:
        """Seconds the breaker stays open after its ``openings``-th opening in a row.

        ``math.inf`` when the back-off overflows a float and no ``max_timeout``
        caps it: the breaker then stays open until ``reset()``.
        """
        if openings <= 1 or self.backoff_multiplier == 1.0:
            return self.timeout
        try:
            duration = self.timeout * self.backoff_multiplier ** (openings - 1)
        except OverflowError:
            duration = math.inf
        if self.max_timeout is not None:
            duration = min(duration, self.max_timeout)
        return duration

    @property
    def bucket_width(self) -> float:
        """Seconds one bucket of the window spans: ``window_size / 10``."""
        return self.window_size / WINDOW_BUCKETS


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large to be a number of seconds: {value!r}") from None


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


def _rate(name: str, value: object) -> None:
    number = _number(name, value)
    if not 0.0 < number <= 1.0:
        raise ValueError(f"{name} must be a share in (0, 1], got {value!r}")


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
