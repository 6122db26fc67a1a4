"""Exceptions raised by anybreaker."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

__all__ = ["CircuitBreakerOpenError", "StorageError"]


class CircuitBreakerOpenError(Exception):
    """A call was refused because its breaker is open (or its trials are taken).

    ``time_until_retry`` is always greater than zero: the seconds until the
    breaker will admit a trial call, or ``math.inf`` when it was forced open.
    """

    # No __init__ of its own: the arguments live in ``args``, set by the
    # exception's C constructor, which keeps a rejection cheap.
    if TYPE_CHECKING:

        def __init__(self, circuit_name: str, time_until_retry: float) -> None: ...

    @property
    def circuit_name(self) -> str:
        """The name of the breaker that refused the call."""
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def time_until_retry(self) -> float:
        """Seconds until a trial may be admitted (> 0); ``inf`` when forced open."""
        return self.args[1]  # type: ignore[no-any-return]

    def __str__(self) -> str:
        # Formatted on demand: rejections are frequent, their messages rarely read.
        if math.isinf(self.time_until_retry):
            detail = "forced open until reset"
        else:
            detail = f"retry in {self.time_until_retry:.3g} s"
        return f"circuit {self.circuit_name!r} is open: {detail}"


class StorageError(Exception):
    """A storage backend failed; the driver's exception is the ``__cause__``."""
