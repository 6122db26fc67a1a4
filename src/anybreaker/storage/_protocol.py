"""The storage protocol and the record a storage keeps for each breaker."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from .._state import CircuitState

__all__ = ["INITIAL_RECORD", "BreakerRecord", "Bucket", "Storage", "Trial"]

Trial = tuple[str, float]
"""A half-open trial permit: its token and the time it was granted."""

Bucket = tuple[float, int, int, int]
"""Counts of one slice of the window: its start time, calls, failures and slow calls."""

_RECORD_FORMAT = 2
"""The layout ``to_dict()`` writes; ``from_dict()`` also reads format 1 (release 0.1)."""


# Not slotted: the breaker derives a record from the last one by copying its
# __dict__ (see ``_machine._counted``), far cheaper than the frozen __init__.
@dataclass(frozen=True)
class BreakerRecord:
    """The persisted state of one breaker.

    A storage keeps it as it is and knows nothing of its meaning; every rule
    that reads or changes it lives in ``anybreaker._machine``. Times are the
    breaker clock's (wall-clock seconds), so they mean the same thing to
    another process and after a restart. Its size is bounded: the window is
    kept as counts in at most a few buckets, whatever the traffic.
    """

    state: CircuitState = CircuitState.CLOSED
    version: int = 0
    """Bumped by every write; ``compare_and_set`` checks it."""
    generation: int = 0
    """Bumped by every state change; outcomes of older calls are ignored."""
    changed_at: float = 0.0
    """When the state last changed (for OPEN: when it opened)."""
    open_duration: float = 0.0
    """For OPEN: seconds it stays open (``math.inf``: until reset)."""
    openings: int = 0
    """Consecutive openings without closing in between (drives back-off)."""
    forced: bool = False
    """Forced open by ``force_open()``: open until ``reset()``."""
    window_size: float = 0.0
    """The ``window_size`` the buckets were counted for (0.0 before any count)."""
    buckets: tuple[Bucket, ...] = ()
    """The window's counts, oldest bucket first: ``(start, calls, failures, slow_calls)``."""
    consecutive_failures: int = 0
    """Failures with no success between them, in the order writes reached the storage."""
    successes: int = 0
    """For HALF_OPEN: successful trial calls so far."""
    trials: tuple[Trial, ...] = ()
    """For HALF_OPEN: the trial permits currently leased."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict that ``from_dict`` turns back into this record."""
        return {
            "format": _RECORD_FORMAT,
            "state": self.state.value,
            "version": self.version,
            "generation": self.generation,
            "changed_at": self.changed_at,
            "open_duration": self.open_duration,
            "openings": self.openings,
            "forced": self.forced,
            "window_size": self.window_size,
            "buckets": [list(bucket) for bucket in self.buckets],
            "consecutive_failures": self.consecutive_failures,
            "successes": self.successes,
            "trials": [[token, granted_at] for token, granted_at in self.trials],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakerRecord:
        """Rebuild a record from ``to_dict()``'s output; ``ValueError`` if malformed.

        A record written by release 0.1 (format 1, failure times) reads as
        one failure per bucket, so that its failures keep counting.
        """
        try:
            form = data.get("format", 1)
            if form not in (1, _RECORD_FORMAT) or isinstance(form, bool):
                raise ValueError(f"unknown record format {form!r}")
            if form == 1:
                buckets = tuple(
                    (_time(t), 1, 1, 0) for t in sorted(_float(t) for t in data.get("failures", ()))
                )
                streak = len(buckets)
                window_size = 0.0
            else:
                buckets = tuple(_bucket(bucket) for bucket in data.get("buckets", ()))
                streak = _count(data.get("consecutive_failures", 0))
                window_size = _time(data.get("window_size", 0.0))
                if window_size < 0:
                    raise ValueError(f"window_size must be >= 0, got {window_size!r}")
            open_duration = _float(data.get("open_duration", 0.0))
            if open_duration < 0:
                raise ValueError(f"open_duration must be >= 0, got {open_duration!r}")
            record = cls(
                state=CircuitState(data["state"]),
                version=_count(data["version"]),
                generation=_count(data.get("generation", 0)),
                changed_at=_time(data.get("changed_at", 0.0)),
                open_duration=open_duration,
                openings=_count(data.get("openings", 0)),
                forced=_bool(data.get("forced", False)),
                window_size=window_size,
                buckets=buckets,
                consecutive_failures=streak,
                successes=_count(data.get("successes", 0)),
                trials=tuple(
                    (_str(token), _time(granted_at)) for token, granted_at in data.get("trials", ())
                ),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a valid breaker record: {error}") from error
        return record


# The dataclass keeps each default as a class attribute of the field's name,
# and CPython (3.11, 3.12) does not specialize reading an instance attribute
# that a class attribute shadows: every field read would take the slow path,
# two and a half times slower. ``__init__`` and ``fields()`` keep their own copies.
for _field in fields(BreakerRecord):
    delattr(BreakerRecord, _field.name)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {value!r}")
    return value


def _count(value: Any) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError(f"expected an int >= 0, got {value!r}")
    return number


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    if math.isnan(value):
        raise ValueError("expected a number, got NaN")
    return float(value)


def _time(value: Any) -> float:
    """A time or duration that must be finite: an infinite one would never pass."""
    number = _float(value)
    if math.isinf(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _bucket(value: Any) -> Bucket:
    start, calls, failures, slow = value
    bucket = (_time(start), _count(calls), _count(failures), _count(slow))
    if failures > calls or slow > calls:
        raise ValueError(f"a bucket counts more failures or slow calls than calls: {value!r}")
    return bucket


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a bool, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {value!r}")
    return value


INITIAL_RECORD = BreakerRecord()
"""What a breaker assumes while nothing is stored under its name."""


@runtime_checkable
class Storage(Protocol):
    """Where breakers keep their records, keyed by breaker name.

    Implementations persist ``BreakerRecord`` values and nothing else. They
    raise ``StorageError`` (chaining the driver's exception) for their own
    failures, are async context managers, and close idempotently with
    ``aclose()``.

    A storage may also have a float attribute ``staleness``: how many seconds
    a breaker may act on a record it read before reading it again. Without
    it the breaker reads on every call.

    It may also have ``async compare_and_set_or_get(name, expected_version,
    record)``: ``compare_and_set()`` that, when it does not store, also says
    what is stored. It returns ``(True, None)`` when it stored, else
    ``(False, current)``, ``current`` being the stored record or ``None``.
    With it, a breaker whose write lost a race to another process retries
    without first reading again: under contention the losers are not a
    round trip behind the winner. Without it the breaker calls ``get()``.
    """

    async def get(self, name: str) -> BreakerRecord | None:
        """Return the record stored under ``name``, or ``None``."""
        ...

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is ``expected_version``.

        ``None`` means "only if nothing is stored". Atomic with respect to
        every other caller in every process. ``record.version`` is always
        ``(expected_version or 0) + 1``. Returns whether it stored.
        """
        ...

    async def delete(self, name: str) -> None:
        """Remove the record stored under ``name``, if any."""
        ...

    async def names(self) -> list[str]:
        """Return exactly the names that have a record."""
        ...

    async def aclose(self) -> None:
        """Release the storage's resources; calling it again does nothing."""
        ...


class ContextManagedStorage(Storage, Protocol):
    """A storage used as ``async with storage:``, as every shipped storage is."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


def check_new_version(expected_version: int | None, record: BreakerRecord) -> None:
    """Refuse a compare-and-set whose record does not carry the next version."""
    if record.version != (expected_version or 0) + 1:
        raise ValueError(
            f"record.version must be {(expected_version or 0) + 1} when "
            f"expected_version is {expected_version!r}, got {record.version}"
        )
