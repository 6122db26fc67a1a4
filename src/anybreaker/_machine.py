"""The state machine: pure functions of (record, config, now).

Nothing here does I/O, awaits, reads a clock or logs; the breaker feeds in
the time and writes back what these functions return. Every transition rule
of the breaker lives in this module:

- The window is ``WINDOW_BUCKETS`` (10) buckets of ``window_size / 10``
  seconds, each counting calls (successes and failures), failures and slow
  calls. An outcome counts while its bucket is one of the last ten: for
  between 0.9 and 1.0 ``window_size`` seconds after it happened.
- CLOSED admits every call. Outcomes reach the record as counts
  (``Tally``); after merging them the trip rules are checked, and any rule
  that is set and met opens the breaker: ``failure_threshold`` failures in
  the window; a ``failure_rate_threshold`` or ``slow_call_rate_threshold``
  share of the window's calls, once it holds ``minimum_calls``;
  ``consecutive_failures`` failures with no success between them; the
  user's ``trip(WindowStats)``.
- OPEN rejects every call until its open period has passed (``timeout``,
  backed off by ``backoff_multiplier`` per consecutive opening, up to
  ``max_timeout``); then it is half-open, with no write needed (the
  time-driven change).
- HALF_OPEN grants at most ``half_open_max_calls`` trial permits at once,
  each a lease that expires ``trial_lease`` seconds after it was granted.
  ``success_threshold`` successful trials close the breaker and clear its
  window; one failed trial (or a slow one, when a slow-call rule is set)
  re-opens it.
- ``force_open`` opens it until ``reset``; ``open_for`` opens it for a
  given time; ``reset`` closes it and clears its window. All are state
  changes.
- Every state change bumps ``generation``. Counts or a trial outcome from a
  generation that is no longer current, or for a trial permit that is no
  longer leased, change nothing.

A stored time later than ``now`` (the clock stepped back) counts as ``now``:
``rebase`` moves it there once, so it never lengthens an open period, a
lease or a bucket's life.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ._config import WINDOW_BUCKETS, CircuitBreakerConfig
from ._state import CircuitState, WindowStats
from .storage._protocol import BreakerRecord, Bucket, Trial

__all__ = [
    "HALF_OPEN_RETRY",
    "Admission",
    "Outcome",
    "Tally",
    "admit",
    "bucket_start",
    "counted",
    "force_open",
    "open_for",
    "opened_by_rules",
    "rebase",
    "record_outcomes",
    "reset",
    "settle",
    "time_until_retry",
    "trips",
    "view",
    "window_stats",
]

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN

HALF_OPEN_RETRY = 1.0
"""The longest ``retry_after`` of a call refused because every trial permit is taken."""

Trip = Callable[[WindowStats], bool]


class Outcome(enum.StrEnum):
    """How a guarded call ended, as far as the breaker is concerned (a ``str``)."""

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
    state: CircuitState = OPEN
    """For a rejected call: OPEN, or HALF_OPEN when every trial permit is taken."""


class Tally:
    """Counts of outcomes per bucket of the window, their totals, and the streak of failures.

    Plain data, changed in place by its own methods, never by I/O. Used two
    ways: as the counts a breaker object has not written yet (a delta of
    one generation, merged into a record's window when written: counts add
    up, so a tally that failed to be written is merged into the next one,
    unchanged), and as the whole window of a record (``Tally.of``).
    """

    __slots__ = ("buckets", "calls", "failures", "generation", "reset_streak", "slow", "streak")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.buckets: dict[float, list[int]] = {}
        """Bucket start -> [calls, failures, slow calls]."""
        self.calls = self.failures = self.slow = 0
        """The totals over every bucket."""
        self.reset_streak = False
        """Whether a success came: a streak of failures before it has ended."""
        self.streak = 0
        """Failures since the last success (all of them if none came)."""

    @classmethod
    def of(cls, record: BreakerRecord, window_size: float, now: float) -> Tally:
        """The window of ``record`` at ``now``, for a window of ``window_size`` seconds."""
        window = cls(record.generation)
        window.streak = record.consecutive_failures
        width = window_size / WINDOW_BUCKETS
        realign = record.window_size != window_size
        for start, calls, failures, slow in record.buckets:
            if realign:
                # Counted for another window_size (or by release 0.1): put
                # each count in the bucket its time falls in now.
                start = (start // width) * width
            window._add_counts(start, calls, failures, slow)
        window.prune(window_size, now)
        return window

    def __bool__(self) -> bool:
        return bool(self.buckets)

    def __repr__(self) -> str:
        return f"<Tally generation={self.generation} {self.buckets} streak={self.streak}>"

    def add(self, start: float, outcome: Outcome, slow: bool = False, count: int = 1) -> None:
        """Count ``count`` calls that ended with ``outcome`` (not neutral) in bucket ``start``."""
        counts = self.buckets.get(start)
        if counts is None:
            counts = self.buckets[start] = [0, 0, 0]
        counts[0] += count
        self.calls += count
        if outcome is Outcome.FAILURE:
            counts[1] += count
            self.failures += count
            self.streak += count
        else:
            self.reset_streak = True
            self.streak = 0
        if slow:
            counts[2] += count
            self.slow += count

    def _add_counts(self, start: float, calls: int, failures: int, slow: int) -> None:
        counts = self.buckets.get(start)
        if counts is None:
            self.buckets[start] = [calls, failures, slow]
        else:
            counts[0] += calls
            counts[1] += failures
            counts[2] += slow
        self.calls += calls
        self.failures += failures
        self.slow += slow

    def merge(self, later: Tally) -> None:
        """Add the counts of ``later``, whose outcomes came after these."""
        for start, (calls, failures, slow) in later.buckets.items():
            self._add_counts(start, calls, failures, slow)
        if later.reset_streak:
            self.reset_streak = True
            self.streak = later.streak
        else:
            self.streak += later.streak

    def prune(self, window_size: float, now: float) -> None:
        """Drop the buckets that left the window at ``now``; count future ones as now."""
        width = window_size / WINDOW_BUCKETS
        index = now // width
        current = index * width
        cutoff = (index - (WINDOW_BUCKETS - 1)) * width
        for start in [start for start in self.buckets if not cutoff <= start <= current]:
            calls, failures, slow = self.buckets.pop(start)
            self.calls -= calls
            self.failures -= failures
            self.slow -= slow
            if start > current:  # the clock stepped back: counted as now
                self._add_counts(current, calls, failures, slow)

    def as_buckets(self) -> tuple[Bucket, ...]:
        """The counts as a record keeps them, oldest bucket first."""
        return tuple((start, *self.buckets[start]) for start in sorted(self.buckets))  # type: ignore[misc]

    def stats(self) -> WindowStats:
        """The window's numbers."""
        return WindowStats(
            calls=self.calls,
            failures=self.failures,
            slow_calls=self.slow,
            consecutive_failures=self.streak,
            failure_rate=self.failures / self.calls if self.calls else 0.0,
        )


def bucket_start(now: float, config: CircuitBreakerConfig) -> float:
    """The start of the bucket that an outcome at ``now`` counts in."""
    width = config.window_size / WINDOW_BUCKETS
    return (now // width) * width


# -- reading a record ---------------------------------------------------------


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
    # Written out rather than through helpers: this runs on every rejection.
    since = record.changed_at
    remaining = record.open_duration - (now - since if now > since else 0.0)
    return remaining if remaining > 0.0 else 0.0


def window_stats(record: BreakerRecord, window_size: float, now: float) -> WindowStats:
    """The window's numbers at ``now``, counting the buckets of the last ``window_size``."""
    return Tally.of(record, window_size, now).stats()


def rebase(record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> BreakerRecord:
    """Return ``record`` with every time later than ``now`` moved to ``now``.

    A stored time in the future means the clock stepped back (or another
    host's clock is ahead). The breaker rebases a record once, when it
    adopts it, so that an open period or a lease counts from then instead
    of from a moment that keeps receding. ``record`` itself when nothing is
    in the future.
    """
    trials = record.trials
    buckets = record.buckets
    late_trials = any(granted_at > now for _, granted_at in trials)
    late_buckets = bool(buckets) and buckets[-1][0] > bucket_start(now, config)
    if record.changed_at <= now and not late_trials and not late_buckets:
        return record
    if late_trials:
        trials = tuple((token, min(granted_at, now)) for token, granted_at in trials)
    if late_buckets:
        buckets = Tally.of(record, config.window_size, now).as_buckets()
    return replace(record, changed_at=min(record.changed_at, now), trials=trials, buckets=buckets)


# -- admission ----------------------------------------------------------------


def _live_trials(
    record: BreakerRecord, config: CircuitBreakerConfig, now: float
) -> tuple[Trial, ...]:
    if record.state is not HALF_OPEN:
        return ()
    return tuple(
        (token, granted_at)
        for token, granted_at in record.trials
        if now - granted_at < config.trial_lease
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
            forced=False,
            successes=0,
            trials=(),
        )
    else:
        trials = _live_trials(record, config, now)
        half_open = record
    if len(trials) >= config.half_open_max_calls:
        first_expiry = min(granted_at for _, granted_at in trials) + config.trial_lease
        retry = min(max(first_expiry - now, 1e-3), HALF_OPEN_RETRY)
        return Admission(False, record.generation, retry_after=retry, state=HALF_OPEN)
    token = new_token()
    granted = replace(half_open, version=record.version + 1, trials=(*trials, (token, now)))
    return Admission(True, granted.generation, token=token, record=granted)


# -- outcomes -----------------------------------------------------------------


def record_outcomes(
    record: BreakerRecord,
    config: CircuitBreakerConfig,
    now: float,
    tally: Tally,
    trip: Trip | None = None,
) -> BreakerRecord | None:
    """Merge closed-state counts into the window; open if a rule trips. ``None``: no change.

    ``trip`` is the breaker's guarded call of ``config.trip`` (it never raises).
    Counts of another generation, or that arrive while the breaker is not
    closed, are stale: they change nothing.
    """
    if not tally or record.state is not CLOSED or record.generation != tally.generation:
        return None
    window = Tally.of(record, config.window_size, now)
    window.merge(tally)
    window.prune(config.window_size, now)
    if trips(config, window, trip):
        return opened_by_rules(record, config, now, window)
    return counted(record, config.window_size, window)


def trips(config: CircuitBreakerConfig, window: Tally, trip: Trip | None = None) -> bool:
    """Whether any rule that is set is met by the closed-state ``window``."""
    if config.failure_threshold is not None and window.failures >= config.failure_threshold:
        return True
    if config.consecutive_failures is not None and window.streak >= config.consecutive_failures:
        return True
    calls = window.calls
    if calls >= config.minimum_calls:
        rate = config.failure_rate_threshold
        if rate is not None and window.failures >= rate * calls:
            return True
        rate = config.slow_call_rate_threshold
        if rate is not None and window.slow >= rate * calls:
            return True
    return trip is not None and trip(window.stats())


_new = object.__new__
_set = object.__setattr__


def counted(record: BreakerRecord, window_size: float, window: Tally) -> BreakerRecord:
    """The closed ``record`` with ``window`` (of ``window_size``) as its counts, next version.

    Derived from the record's fields by copying them: a fraction of the cost
    of the frozen dataclass's ``__init__``, for the most frequent write.
    """
    fields = record.__dict__.copy()
    fields["version"] = record.version + 1
    fields["window_size"] = window_size
    fields["buckets"] = window.as_buckets()
    fields["consecutive_failures"] = window.streak
    new: BreakerRecord = _new(BreakerRecord)
    _set(new, "__dict__", fields)
    return new


def opened_by_rules(
    record: BreakerRecord, config: CircuitBreakerConfig, now: float, window: Tally
) -> BreakerRecord:
    """The closed ``record`` opened at ``now`` because ``window`` met a rule."""
    return _opened(record, config, now, 1, window)


def settle(
    record: BreakerRecord,
    config: CircuitBreakerConfig,
    now: float,
    generation: int,
    token: str,
    outcome: Outcome,
    slow: bool = False,
) -> BreakerRecord | None:
    """Apply a trial call's outcome; return the record to write, or ``None`` for no change.

    ``generation`` and ``token`` are the call's ``Admission``'s. A slow trial
    counts as a failed one when a slow-call rule is set.
    """
    if record.generation != generation or record.state is not HALF_OPEN:
        return None
    if all(held != token for held, _ in record.trials):
        return None
    live = _live_trials(record, config, now)
    others = tuple(trial for trial in live if trial[0] != token)
    if len(others) == len(live):  # the lease expired: the report is neutral
        outcome = Outcome.NEUTRAL
    elif slow and outcome is Outcome.SUCCESS and config.slow_call_rate_threshold is not None:
        outcome = Outcome.FAILURE
    if outcome is Outcome.FAILURE:
        return _opened(record, config, now, record.openings + 1)
    successes = record.successes + (outcome is Outcome.SUCCESS)
    if successes >= config.success_threshold:
        return _closed(record, now)
    return replace(record, version=record.version + 1, successes=successes, trials=others)


def _opened(
    record: BreakerRecord,
    config: CircuitBreakerConfig,
    now: float,
    openings: int,
    window: Tally | None = None,
    duration: float | None = None,
) -> BreakerRecord:
    """The record opened at ``now``; the window stays, for whoever looks at it."""
    return BreakerRecord(
        state=OPEN,
        version=record.version + 1,
        generation=record.generation + 1,
        changed_at=now,
        open_duration=config.open_duration(openings) if duration is None else duration,
        openings=openings,
        window_size=record.window_size if window is None else config.window_size,
        buckets=record.buckets if window is None else window.as_buckets(),
        consecutive_failures=record.consecutive_failures if window is None else window.streak,
    )


def _closed(record: BreakerRecord, now: float) -> BreakerRecord:
    return BreakerRecord(
        state=CLOSED,
        version=record.version + 1,
        generation=record.generation + 1,
        changed_at=now,
    )


# -- administration -----------------------------------------------------------


def reset(record: BreakerRecord, now: float) -> BreakerRecord:
    """Close the breaker and clear its window (a state change, even from closed)."""
    return _closed(record, now)


def force_open(record: BreakerRecord, now: float) -> BreakerRecord:
    """Open the breaker until ``reset`` (a state change, even from open)."""
    return replace(
        _opened(record, _NO_BACKOFF, now, record.openings, duration=math.inf), forced=True
    )


def open_for(
    record: BreakerRecord,
    config: CircuitBreakerConfig,
    now: float,
    seconds: float,
    tally: Tally | None = None,
    *,
    extend_only: bool = False,
) -> BreakerRecord | None:
    """Open the breaker for ``seconds`` from ``now`` (then half-open as usual).

    ``tally``'s counts join the window first, when they are current.
    ``extend_only`` (a dependency's ``Retry-After``): leave an open period
    that already lasts at least that long as it is, returning ``None``.
    """
    if extend_only and record.state is OPEN:
        remaining = time_until_retry(record, config, now)
        if remaining >= seconds:
            return None
    window = None
    if tally and record.state is CLOSED and record.generation == tally.generation:
        window = Tally.of(record, config.window_size, now)
        window.merge(tally)
        window.prune(config.window_size, now)
    return _opened(record, config, now, record.openings, window, duration=seconds)


# Any valid config serves where the opening's duration is given.
_NO_BACKOFF = CircuitBreakerConfig()
