"""Exceptions raised by anybreaker, and the one guarded code may raise to it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._state import CircuitState

__all__ = ["CircuitBreakerOpenError", "RetryAfter", "StorageError"]


class CircuitBreakerOpenError(Exception):
    """A call was refused because its breaker is open, or every trial permit is taken.

    ``time_until_retry`` is always greater than zero: the seconds until the
    breaker will admit a trial call, ``math.inf`` while it is open until
    ``reset()``. ``state`` is ``OPEN``, or ``HALF_OPEN`` when the breaker is
    half-open and every trial permit is taken; ``time_until_retry`` is then
    short (a trial may end at any moment), not the permits' lease.
    """

    # No __init__ of its own: the arguments live in ``args``, set by the
    # exception's C constructor, which keeps a rejection cheap.
    if TYPE_CHECKING:

        def __init__(
            self,
            circuit_name: str,
            time_until_retry: float,
            state: CircuitState = CircuitState.OPEN,
        ) -> None: ...

    @property
    def circuit_name(self) -> str:
        """The name of the breaker that refused the call."""
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def time_until_retry(self) -> float:
        """Seconds until a trial may be admitted (> 0); ``inf`` while open until reset."""
        return self.args[1]  # type: ignore[no-any-return]

    @property
    def state(self) -> CircuitState:
        """``OPEN``, or ``HALF_OPEN`` when every trial permit is taken."""
        return self.args[2] if len(self.args) > 2 else CircuitState.OPEN

    def __str__(self) -> str:
        # Formatted on demand: rejections are frequent, their messages rarely read.
        name = self.circuit_name
        if self.state is CircuitState.HALF_OPEN:
            return (
                f"circuit {name!r} is half-open and every trial permit is taken: "
                f"retry in {self.time_until_retry:.3g} s"
            )
        if math.isinf(self.time_until_retry):
            return f"circuit {name!r} is open until reset()"
        return f"circuit {name!r} is open: retry in {self.time_until_retry:.3g} s"


class StorageError(Exception):
    """A storage backend failed; the driver's exception is the ``__cause__``."""


class RetryAfter(Exception):
    """Raised by guarded code: the dependency asked not to be called for ``seconds``.

    The breaker opens for at least that long, for every process sharing its
    storage, and the exception reaches the caller as itself. A rate-limited
    API's ``429`` with ``Retry-After: 30`` is ``raise RetryAfter(30)``.
    """

    def __init__(self, seconds: float, message: str | None = None) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"RetryAfter needs seconds as a number, got {seconds!r}")
        try:
            value = float(seconds)
        except OverflowError:
            value = math.inf
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"RetryAfter needs finite seconds >= 0, got {seconds!r}")
        super().__init__(*((value,) if message is None else (value, message)))
        self.seconds = value
        self.message = message

    def __str__(self) -> str:
        detail = f"retry after {self.seconds:g} s"
        return f"{self.message} ({detail})" if self.message else detail
