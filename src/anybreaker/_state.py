"""The breaker states and the values the breaker reports about them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = ["CallEvent", "CircuitState", "CircuitStats", "StateChange", "WindowStats"]


class CircuitState(enum.StrEnum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    """Calls pass; their outcomes are counted."""
    OPEN = "open"
    """Calls are rejected until the open period has passed (or until reset when forced)."""
    HALF_OPEN = "half_open"
    """A limited number of trial calls probe whether the dependency recovered."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """A state change seen by one breaker object, as given to listeners."""

    name: str
    old_state: CircuitState
    new_state: CircuitState
    at: float
    """The breaker clock's time when the change was seen (never earlier than the last one's)."""


@dataclass(frozen=True, slots=True)
class CircuitStats:
    """Counters of one breaker object in this process."""

    total_calls: int
    """Calls that ran: successful, failed, or neutral (ignored or cancelled)."""
    successful_calls: int
    failed_calls: int
    rejected_calls: int
    """Calls refused with ``CircuitBreakerOpenError`` (in shadow mode: that would have been)."""
    state_changes: int
    """State changes this breaker object saw, time-driven ones included."""


@dataclass(frozen=True, slots=True)
class WindowStats:
    """The shared window's numbers, as the storage holds them for every process.

    ``calls`` counts the calls that ended as a success or a failure within
    ``window_size`` (neutral ones do not count); ``failure_rate`` is
    ``failures / calls``, 0.0 when there were no calls.
    """

    calls: int
    failures: int
    slow_calls: int
    consecutive_failures: int
    """Failures with no success between them, in the order the storage received them."""
    failure_rate: float


CallOutcome = Literal["success", "failure", "neutral", "rejected"]


class CallEvent(NamedTuple):
    """One guarded call as seen by this breaker object, as given to call listeners.

    A named tuple: made for every call of a breaker with call listeners, it
    must cost little.
    """

    name: str
    outcome: CallOutcome
    """``"success"``, ``"failure"``, ``"neutral"`` or ``"rejected"`` (refused; it did not run)."""
    duration: float
    """Seconds the guarded code ran, by the breaker's clock (0.0 for a rejected call)."""
    slow: bool
    """Whether it ran longer than ``slow_call_duration``."""
    at: float
    """The breaker clock's time when the call ended (or was refused)."""
