"""The breaker states and the values the breaker reports about them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CircuitState", "CircuitStats", "StateChange"]


class CircuitState(enum.StrEnum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    """Calls pass; failures are counted."""
    OPEN = "open"
    """Calls are rejected until ``timeout`` has passed (or until reset when forced)."""
    HALF_OPEN = "half_open"
    """A limited number of trial calls probe whether the dependency recovered."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """A state change seen by one breaker object, as given to listeners."""

    name: str
    old_state: CircuitState
    new_state: CircuitState
    at: float
    """The breaker clock's time when the change was seen."""


@dataclass(frozen=True, slots=True)
class CircuitStats:
    """Counters of one breaker object in this process."""

    total_calls: int
    """Calls that ran: successful, failed, or neutral (ignored or cancelled)."""
    successful_calls: int
    failed_calls: int
    rejected_calls: int
    """Calls refused with ``CircuitBreakerOpenError``; their code did not run."""
    state_changes: int
    """State changes this breaker object saw, time-driven ones included."""
