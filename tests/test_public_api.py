"""The public surface: what ``anybreaker`` exports is exactly its ``__all__``."""

from __future__ import annotations

import importlib.metadata
import inspect
import pickle
import subprocess
import sys

import pytest

import anybreaker
import anybreaker.testing
from anybreaker import CircuitBreakerOpenError, CircuitState

CONTRACT = {
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitState",
    "CircuitStats",
    "StateChange",
    "CircuitBreakerOpenError",
    "StorageError",
    "BreakerRecord",
    "Storage",
    "MemoryStorage",
    "SQLiteStorage",
    "SQLAlchemyStorage",
    "RedisStorage",
    "storage_from_url",
    "WindowStats",
    "RetryAfter",
}


def test_all_lists_the_contract() -> None:
    """Every name of the design's public surface is in __all__."""
    assert set(anybreaker.__all__) >= CONTRACT
    assert sorted(anybreaker.__all__) == anybreaker.__all__


def test_every_name_in_all_is_importable_or_names_its_extra() -> None:
    """Each name in __all__ resolves, or raises ImportError naming the extra to install."""
    for name in anybreaker.__all__:
        try:
            value = getattr(anybreaker, name)
        except ImportError as error:
            message = str(error)
            value = None
        else:
            message = "pip install"
        assert "pip install" in message, f"{name}: {message}"
        assert value is not None or "anybreaker[" in message


def test_no_public_name_is_missing_from_all() -> None:
    """Public names defined in the package namespace all appear in __all__."""
    public = {
        name
        for name, value in vars(anybreaker).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name not in {"annotations", "TYPE_CHECKING", "Any", "importlib"}
    }
    assert public <= set(anybreaker.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    """A name the package does not have raises AttributeError."""
    with pytest.raises(AttributeError, match="NoSuchThing"):
        anybreaker.NoSuchThing  # noqa: B018


def test_version_comes_from_metadata() -> None:
    """__version__ is the installed distribution's version."""
    assert anybreaker.__version__ == importlib.metadata.version("anybreaker")


def test_testing_module_exports() -> None:
    """anybreaker.testing holds FakeClock and StorageTests."""
    assert {"FakeClock", "StorageTests"} <= set(anybreaker.testing.__all__)
    for name in anybreaker.testing.__all__:
        assert getattr(anybreaker.testing, name) is not None


def test_import_needs_no_optional_dependency() -> None:
    """Importing anybreaker loads none of SQLAlchemy, coredis or trio."""
    code = (
        "import sys, anybreaker; "
        "print(sorted(m for m in ('sqlalchemy', 'coredis', 'trio') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_open_error_carries_name_and_retry_and_pickles() -> None:
    """CircuitBreakerOpenError exposes its fields, reads well, and survives pickling."""
    error = CircuitBreakerOpenError("model-api", 12.5)
    assert (error.circuit_name, error.time_until_retry) == ("model-api", 12.5)
    assert str(error) == "circuit 'model-api' is open: retry in 12.5 s"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.circuit_name, copy.time_until_retry) == ("model-api", 12.5)
    assert str(CircuitBreakerOpenError("x", float("inf"))) == "circuit 'x' is open until reset()"
    trials_taken = CircuitBreakerOpenError("x", 0.5, CircuitState.HALF_OPEN)
    assert trials_taken.state is CircuitState.HALF_OPEN
    assert "every trial permit is taken" in str(trials_taken)
    assert pickle.loads(pickle.dumps(trials_taken)).state is CircuitState.HALF_OPEN
    assert CircuitBreakerOpenError("x", 1.0).state is CircuitState.OPEN
