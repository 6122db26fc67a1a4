"""The storage protocol and the record a storage keeps for each breaker."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from .._state import CircuitState

__all__ = ["INITIAL_RECORD", "BreakerRecord", "Storage", "Trial"]

Trial = tuple[str, float]
"""A half-open trial permit: its token and the time it was granted."""

_RECORD_FORMAT = 1


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The persisted state of one breaker.

    A storage keeps it as it is and knows nothing of its meaning; every rule
    that reads or changes it lives in ``anybreaker._machine``. Times are the
    breaker clock's (wall-clock seconds), so they mean the same thing to
    another process and after a restart.
    """

    state: CircuitState = CircuitState.CLOSED
    version: int = 0
    """Bumped by every write; ``compare_and_set`` checks it."""
    generation: int = 0
    """Bumped by every state change; outcomes of older calls are ignored."""
    changed_at: float = 0.0
    """When the state last changed (for OPEN: when it opened)."""
    open_duration: float = 0.0
    """For OPEN: seconds it stays open (``timeout`` after back-off)."""
    openings: int = 0
    """Consecutive openings without closing in between (drives back-off)."""
    forced: bool = False
    """Forced open by ``force_open()``: open until ``reset()``."""
    failures: tuple[float, ...] = ()
    """For CLOSED: times of the recent failures, oldest first."""
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
            "failures": list(self.failures),
            "successes": self.successes,
            "trials": [[token, granted_at] for token, granted_at in self.trials],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakerRecord:
        """Rebuild a record from ``to_dict()``'s output; ``ValueError`` if malformed."""
        try:
            if data.get("format", _RECORD_FORMAT) != _RECORD_FORMAT:
                raise ValueError(f"unknown record format {data.get('format')!r}")
            record = cls(
                state=CircuitState(data["state"]),
                version=_int(data["version"]),
                generation=_int(data.get("generation", 0)),
                changed_at=_float(data.get("changed_at", 0.0)),
                open_duration=_float(data.get("open_duration", 0.0)),
                openings=_int(data.get("openings", 0)),
                forced=_bool(data.get("forced", False)),
                failures=tuple(_float(t) for t in data.get("failures", ())),
                successes=_int(data.get("successes", 0)),
                trials=tuple(
                    (_str(token), _float(granted_at))
                    for token, granted_at in data.get("trials", ())
                ),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a valid breaker record: {error}") from error
        return record


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {value!r}")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    if math.isnan(value):
        raise ValueError("expected a number, got NaN")
    return float(value)


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
