"""``CircuitBreakerRegistry``: one breaker per key, with shared defaults and storage."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._breaker import CircuitBreaker, Listener
from ._config import CircuitBreakerConfig, check_settings
from ._core import CallListener
from .storage._protocol import Storage
from .storage.memory import MemoryStorage

__all__ = ["CircuitBreakerRegistry"]


class CircuitBreakerRegistry:
    """Hold one breaker per key (per model, per tool, per MCP server).

    Every breaker it makes shares the registry's storage, clock, listeners,
    call listeners and default settings; ``get(name, **settings)`` overrides settings for
    one key the first time it is made.

    ``CircuitBreakerRegistry(config=None, *, storage=None, clock=None,
    listeners=(), call_listeners=(), **settings)`` takes the same arguments as
    ``CircuitBreaker`` but the name.
    """

    def __init__(
        self,
        config: CircuitBreakerConfig | None = None,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] | None = None,
        listeners: Iterable[Listener] = (),
        call_listeners: Iterable[CallListener] = (),
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise TypeError("give either config or settings, not both")
        if config is None:
            check_settings(settings)
            config = CircuitBreakerConfig(**settings)
        self.config = config
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self._clock = clock
        self._listeners = list(listeners)
        self._call_listeners = list(call_listeners)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._hooks: list[Callable[[CircuitBreaker], object]] = []
        """Called with each breaker the registry makes (``anybreaker.otel`` adds one)."""

    def __repr__(self) -> str:
        return f"<CircuitBreakerRegistry with {len(self._breakers)} breakers>"

    def get(self, name: str, **settings: Any) -> CircuitBreaker:
        """Return the breaker for ``name``, making it on first use.

        ``settings`` override the registry's defaults for this key; asking
        again with different settings is a ``ValueError``.
        """
        check_settings(settings)
        config = self.config.replace(**settings) if settings else self.config
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name,
                config,
                storage=self.storage,
                clock=self._clock,
                listeners=self._listeners,
                call_listeners=self._call_listeners,
            )
            self._breakers[name] = breaker
            for hook in self._hooks:
                hook(breaker)
        elif settings and breaker.config != config:
            raise ValueError(
                f"breaker {name!r} already exists with other settings: {breaker.config}"
            )
        return breaker

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def add_listener(self, listener: Listener) -> None:
        """Add a state change listener to every breaker, present and future (once)."""
        if listener not in self._listeners:
            self._listeners.append(listener)
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def add_call_listener(self, listener: CallListener) -> None:
        """Add a call listener to every breaker, present and future (once)."""
        if listener not in self._call_listeners:
            self._call_listeners.append(listener)
        for breaker in self._breakers.values():
            breaker.add_call_listener(listener)
