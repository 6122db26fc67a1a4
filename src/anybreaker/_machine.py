"""The state machine: pure functions of (record, config, now).

Nothing here does I/O, awaits, reads a clock or logs; the breaker feeds in
the time and writes back what these functions return. Every transition rule
of the breaker lives in this module:

- CLOSED admits every call. A failure adds its time to ``failures``; when
  ``failure_threshold`` of them fall within the last ``window_size``
  seconds, the breaker opens for ``timeout`` seconds (backed off by
  ``backoff_multiplier`` per consecutive opening, up to ``max_timeout``).
- OPEN rejects every call until its open period has passed; then it is
  half-open, with no write needed (the time-driven change).
- HALF_OPEN grants at most ``half_open_max_calls`` trial permits at once,
  each a lease that expires ``trial_lease`` seconds after it was granted.
  ``success_threshold`` successful trials close the breaker and clear its
  history; one failed trial re-opens it.
- ``force_open`` opens it until ``reset``; ``reset`` closes it and clears
  its history. Both are state changes.
- Every state change bumps ``generation``. An outcome reported for a
  generation that is no longer current, or for a trial permit that is no
  longer leased, changes nothing.

A stored time later than ``now`` (the clock stepped back) is taken as
``now``: it never lengthens an open period or a lease.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ._config import CircuitBreakerConfig
from ._state import CircuitState
from .storage._protocol import BreakerRecord, Trial

__all__ = [
    "Admission",
    "Outcome",
    "admit",
    "force_open",
    "reset",
    "settle",
    "time_until_retry",
    "view",
]

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN


class Outcome(enum.Enum):
    """How a guarded call ended, as far as the breaker is concerned."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"
    """Neither: an ignored exception, a cancellation, a ``BaseException``."""


@dataclass(frozen=True, slots=True)
class Admission:
    """The machine's answer to "may a call run now?"."""

    allowed: bool
    generation: int
    """The generation the call runs in (its outcome counts only in it)."""
    token: str | None = None
    """The trial permit the call holds, in half-open."""
    record: BreakerRecord | None = None
    """The record to write before the call may run, if any."""
    retry_after: float = 0.0
    """For a rejected call: seconds until a trial may be admitted (> 0)."""


def _elapsed(since: float, now: float) -> float:
    return max(0.0, now - since)


def view(record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> CircuitState:
    """Return the state ``record`` is in at ``now``, the time-driven change included."""
    if record.state is OPEN and time_until_retry(record, config, now) <= 0:
        return HALF_OPEN
    return record.state


def time_until_retry(record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> float:
    """Seconds until an OPEN breaker admits a trial; 0 when it is not open.

    ``admit`` rejects every call while this is above 0.
    """
    if record.state is not OPEN:
        return 0.0
    if record.forced:
        return math.inf
    # Written out rather than through _elapsed: this runs on every rejection.
    since = record.changed_at
    remaining = record.open_duration - (now - since if now > since else 0.0)
    return remaining if remaining > 0.0 else 0.0


def _live_trials(
    record: BreakerRecord, config: CircuitBreakerConfig, now: float
) -> tuple[Trial, ...]:
    if record.state is not HALF_OPEN:
        return ()
    return tuple(
        (token, min(granted_at, now))
        for token, granted_at in record.trials
        if _elapsed(granted_at, now) < config.trial_lease
    )


def admit(
    record: BreakerRecord,
    config: CircuitBreakerConfig,
    now: float,
    new_token: Callable[[], str],
) -> Admission:
    """Decide whether a call may run now; a trial's permit is named by ``new_token()``."""
    if record.state is CLOSED:
        return Admission(allowed=True, generation=record.generation)
    if record.state is OPEN:
        remaining = time_until_retry(record, config, now)
        if remaining > 0:
            return Admission(False, record.generation, retry_after=remaining)
        trials: tuple[Trial, ...] = ()
        half_open = replace(
            record,
            state=HALF_OPEN,
            generation=record.generation + 1,
            changed_at=now,
            successes=0,
            failures=(),
        )
    else:
        trials = _live_trials(record, config, now)
        half_open = record
    if len(trials) >= config.half_open_max_calls:
        first_expiry = min(granted_at for _, granted_at in trials) + config.trial_lease
        return Admission(False, record.generation, retry_after=max(first_expiry - now, 1e-3))
    token = new_token()
    granted = replace(half_open, version=record.version + 1, trials=(*trials, (token, now)))
    return Admission(True, granted.generation, token=token, record=granted)


def settle(
    record: BreakerRecord,
    config: CircuitBreakerConfig,
    now: float,
    generation: int,
    token: str | None,
    outcome: Outcome,
) -> BreakerRecord | None:
    """Apply a call's outcome; return the record to write, or ``None`` for no change.

    ``generation`` and ``token`` are the call's ``Admission``'s.
    """
    if record.generation != generation:
        return None
    if token is not None:
        return _settle_trial(record, config, now, token, outcome)
    if record.state is not CLOSED or outcome is not Outcome.FAILURE:
        return None
    # A failure counts while less than window_size has elapsed since it
    # (one stored in the future has elapsed 0): exactly the times after cutoff.
    cutoff = now - config.window_size
    failures = [t for t in record.failures if t > cutoff]
    failures.append(now)
    if len(failures) >= config.failure_threshold:
        return _opened(record, config, now, openings=1)
    # Built field by field: this runs for every failure, and replace() is slow.
    return BreakerRecord(
        state=CLOSED,
        version=record.version + 1,
        generation=record.generation,
        changed_at=record.changed_at,
        openings=record.openings,
        failures=tuple(failures),
    )


def _settle_trial(
    record: BreakerRecord,
    config: CircuitBreakerConfig,
    now: float,
    token: str,
    outcome: Outcome,
) -> BreakerRecord | None:
    if record.state is not HALF_OPEN or all(t != token for t, _ in record.trials):
        return None
    live = _live_trials(record, config, now)
    others = tuple(trial for trial in live if trial[0] != token)
    if len(others) == len(live):  # the lease expired: the report is neutral
        outcome = Outcome.NEUTRAL
    if outcome is Outcome.FAILURE:
        return _opened(record, config, now, openings=record.openings + 1)
    successes = record.successes + (outcome is Outcome.SUCCESS)
    if successes >= config.success_threshold:
        return _closed(record, now)
    return replace(record, version=record.version + 1, successes=successes, trials=others)


def _opened(
    record: BreakerRecord, config: CircuitBreakerConfig, now: float, openings: int
) -> BreakerRecord:
    return BreakerRecord(
        state=OPEN,
        version=record.version + 1,
        generation=record.generation + 1,
        changed_at=now,
        open_duration=config.open_duration(openings),
        openings=openings,
    )


def _closed(record: BreakerRecord, now: float) -> BreakerRecord:
    return BreakerRecord(
        state=CLOSED,
        version=record.version + 1,
        generation=record.generation + 1,
        changed_at=now,
    )


def reset(record: BreakerRecord, now: float) -> BreakerRecord:
    """Close the breaker and clear its history (a state change, even from closed)."""
    return _closed(record, now)


def force_open(record: BreakerRecord, now: float) -> BreakerRecord:
    """Open the breaker until ``reset`` (a state change, even from open)."""
    return BreakerRecord(
        state=OPEN,
        version=record.version + 1,
        generation=record.generation + 1,
        changed_at=now,
        forced=True,
        openings=record.openings,
    )
