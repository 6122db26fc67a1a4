"""Tools for testing code that uses breakers, and storages written for them."""

from ._clock import FakeClock

__all__ = ["FakeClock"]
