"""Tools for testing code that uses breakers, and storages written for them.

``FakeClock`` needs nothing beyond anybreaker. ``StorageTests`` (the
conformance kit for storage backends) needs pytest; it is imported on first
use, so that ``FakeClock`` works without pytest installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import FakeClock

if TYPE_CHECKING:
    from ._kit import StorageTests

__all__ = ["FakeClock", "StorageTests"]


def __getattr__(name: str) -> Any:
    if name == "StorageTests":
        from ._kit import StorageTests

        globals()[name] = StorageTests
        return StorageTests
    raise AttributeError(f"module 'anybreaker.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
