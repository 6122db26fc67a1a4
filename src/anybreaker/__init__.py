"""anybreaker: a circuit breaker for async Python, the same under asyncio and trio."""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

from ._breaker import CircuitBreaker
from ._config import CircuitBreakerConfig
from ._errors import CircuitBreakerOpenError, RetryAfter, StorageError
from ._registry import CircuitBreakerRegistry
from ._state import CallEvent, CircuitState, CircuitStats, StateChange, WindowStats
from .storage._protocol import BreakerRecord, Storage
from .storage.memory import MemoryStorage

if TYPE_CHECKING:
    from .storage._registry import storage_from_url
    from .storage.redis import RedisStorage
    from .storage.sql import SQLAlchemyStorage, SQLiteStorage

__version__ = _version("anybreaker")

__all__ = [
    "BreakerRecord",
    "CallEvent",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerOpenError",
    "CircuitBreakerRegistry",
    "CircuitState",
    "CircuitStats",
    "MemoryStorage",
    "RedisStorage",
    "RetryAfter",
    "SQLAlchemyStorage",
    "SQLiteStorage",
    "StateChange",
    "Storage",
    "StorageError",
    "WindowStats",
    "__version__",
    "storage_from_url",
]

# Names whose modules need an optional dependency: imported on first use, so
# that ``import anybreaker`` works with none of them installed.
_LAZY = {
    "SQLAlchemyStorage": "anybreaker.storage.sql",
    "SQLiteStorage": "anybreaker.storage.sql",
    "RedisStorage": "anybreaker.storage.redis",
    "storage_from_url": "anybreaker.storage._registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'anybreaker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
