"""Exceptions raised by anybreaker."""

from __future__ import annotations

import math

__all__ = ["CircuitBreakerOpenError", "StorageError"]


class CircuitBreakerOpenError(Exception):
    """A call was refused because its breaker is open (or its trials are taken).

    ``time_until_retry`` is always greater than zero: the seconds until the
    breaker will admit a trial call, or ``math.inf`` when it was forced open.
    """

    def __init__(self, circuit_name: str, time_until_retry: float) -> None:
        self.circuit_name = circuit_name
        self.time_until_retry = time_until_retry
        if math.isinf(time_until_retry):
            detail = "forced open until reset"
        else:
            detail = f"retry in {time_until_retry:.3g} s"
        super().__init__(f"circuit {circuit_name!r} is open: {detail}")

    def __reduce__(self) -> tuple[type[CircuitBreakerOpenError], tuple[str, float]]:
        return (type(self), (self.circuit_name, self.time_until_retry))


class StorageError(Exception):
    """A storage backend failed; the driver's exception is the ``__cause__``."""
