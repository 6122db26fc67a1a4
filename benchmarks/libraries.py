"""The breakers measured side by side: anybreaker and the libraries users compare it with.

Each library gets the same loops, written out by hand so that no adapter
sits between the loop and the breaker: a closed-state call around a no-op
coroutine, a call rejected by an open breaker, and a failed call recorded
by a closed breaker that never opens. ``make_closed``, ``make_rejected`` and
``make_failure`` build a fresh breaker (opened by real failures for the
rejected loop) and return ``loop(n)``, which makes ``n`` calls.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from types import ModuleType

Loop = Callable[[int], Awaitable[None]]

# A breaker that records failures one after another without ever opening:
# a threshold never reached, and (where failures are kept by time) a window
# so short that the breaker's history stays the size of an ordinary one.
NEVER = 10**9
SHORT_WINDOW = 0.0005


class SteppingClock:
    """A clock that moves on one second at every read.

    anybreaker keeps the time of each failure inside ``window_size`` and
    prunes that list at every failure. With this clock and a window of a few
    seconds the list holds two or three failures however fast failures come,
    so the measurement does not depend on the breaker's own speed.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


# Long enough that no open breaker half-opens during a run.
OPEN_FOR = 3600.0


class Boom(Exception):
    """The failure the benchmarks feed to breakers."""


async def noop() -> None:
    """The guarded call: a coroutine that does nothing."""


async def fail() -> None:
    """A guarded call that fails."""
    raise Boom


class Floor:
    """A bare ``async with`` that does nothing: the cost no breaker can go under."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


@dataclass
class Library:
    """One library under test: how to name it and build its two loops."""

    key: str
    label: str
    distribution: str | None
    make_closed: Callable[[], Awaitable[Loop]]
    make_rejected: Callable[[], Awaitable[Loop]] | None
    how: str
    """How the call is made, for the table's notes."""
    make_failure: Callable[[], Awaitable[Loop]] | None = None

    def version(self) -> str:
        """The installed version of the library, or a dash for the floor."""
        if self.distribution is None:
            return "-"
        return metadata.version(self.distribution)


# -- floor -----------------------------------------------------------------


class Refused(Exception):
    """What the floor's rejecting ``async with`` raises."""


class RefusingFloor:
    """A bare ``async with`` that refuses at once: the least a rejection can cost."""

    async def __aenter__(self) -> None:
        raise Refused

    async def __aexit__(self, *exc_info: object) -> None:
        return None


async def floor_rejected() -> Loop:
    """An ``async with`` whose ``__aenter__`` raises, caught around the no-op coroutine."""
    guard = RefusingFloor()

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with guard:
                    await noop()
            except Refused:
                pass

    return loop


async def floor_closed() -> Loop:
    """A no-op ``async with`` around the no-op coroutine."""
    guard = Floor()

    async def loop(n: int) -> None:
        for _ in range(n):
            async with guard:
                await noop()

    return loop


# -- anybreaker ------------------------------------------------------------


async def anybreaker_closed() -> Loop:
    """``async with breaker:`` on a closed in-memory anybreaker."""
    from anybreaker import CircuitBreaker

    breaker = CircuitBreaker("bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    return loop


async def anybreaker_rejected() -> Loop:
    """A call refused by an anybreaker that real failures opened."""
    from anybreaker import CircuitBreaker, CircuitBreakerOpenError

    breaker = CircuitBreaker("bench", failure_threshold=5, timeout=OPEN_FOR)
    for _ in range(5):
        try:
            async with breaker:
                await fail()
        except Boom:
            pass
    assert breaker.is_open

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await noop()
            except CircuitBreakerOpenError:
                pass

    return loop


async def anybreaker_failure() -> Loop:
    """A failed call recorded by an anybreaker that never opens."""
    from anybreaker import CircuitBreaker

    breaker = CircuitBreaker(
        "bench", failure_threshold=NEVER, window_size=2.5, clock=SteppingClock()
    )

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await fail()
            except Boom:
                pass

    return loop


# -- aiobreaker --------------------------------------------------------------


async def aiobreaker_closed() -> Loop:
    """``await breaker.call_async(fn)`` (aiobreaker has no ``async with``)."""
    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(name="bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            await breaker.call_async(noop)

    return loop


async def aiobreaker_rejected() -> Loop:
    """A refused ``call_async`` on an aiobreaker opened by failures."""
    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(
        fail_max=5, timeout_duration=timedelta(seconds=OPEN_FOR), name="bench"
    )
    for _ in range(5):
        with contextlib.suppress(Boom, aiobreaker.CircuitBreakerError):
            await breaker.call_async(fail)
    assert breaker.current_state is aiobreaker.CircuitBreakerState.OPEN
    error = aiobreaker.CircuitBreakerError

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                await breaker.call_async(noop)
            except error:
                pass

    return loop


async def aiobreaker_failure() -> Loop:
    """A failed ``call_async`` recorded by an aiobreaker that never opens."""
    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(fail_max=NEVER, name="bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                await breaker.call_async(fail)
            except Boom:
                pass

    return loop


# -- purgatory ---------------------------------------------------------------


async def purgatory_closed() -> Loop:
    """``async with breaker:`` on one purgatory breaker object, reused."""
    from purgatory import AsyncCircuitBreakerFactory

    factory = AsyncCircuitBreakerFactory()
    breaker = await factory.get_breaker("bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    return loop


async def purgatory_rejected() -> Loop:
    """A refused call on a reused purgatory breaker opened by failures."""
    from purgatory import AsyncCircuitBreakerFactory
    from purgatory.domain.model import OpenedState

    factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=OPEN_FOR)
    breaker = await factory.get_breaker("bench")
    for _ in range(5):
        try:
            async with breaker:
                await fail()
        except Boom:
            pass
    assert breaker.context.state == "opened"

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await noop()
            except OpenedState:
                pass

    return loop


async def purgatory_failure() -> Loop:
    """A failed call recorded by a reused purgatory breaker that never opens."""
    from purgatory import AsyncCircuitBreakerFactory

    factory = AsyncCircuitBreakerFactory(default_threshold=NEVER)
    breaker = await factory.get_breaker("bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await fail()
            except Boom:
                pass

    return loop


# -- circuitbreaker ------------------------------------------------------------


async def circuitbreaker_closed() -> Loop:
    """A call of an ``async def`` decorated with a ``circuitbreaker.CircuitBreaker``."""
    import circuitbreaker

    guarded = circuitbreaker.CircuitBreaker(name="bench")(noop)

    async def loop(n: int) -> None:
        for _ in range(n):
            await guarded()

    return loop


async def circuitbreaker_rejected() -> Loop:
    """A refused decorated call on a circuitbreaker opened by failures."""
    import circuitbreaker

    breaker = circuitbreaker.CircuitBreaker(
        failure_threshold=5, recovery_timeout=OPEN_FOR, name="bench-rejected"
    )
    guarded = breaker(noop)
    failing = breaker(fail)
    for _ in range(5):
        with contextlib.suppress(Boom):
            await failing()
    assert breaker.opened
    error = circuitbreaker.CircuitBreakerError

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                await guarded()
            except error:
                pass

    return loop


async def circuitbreaker_failure() -> Loop:
    """A failed decorated call recorded by a circuitbreaker that never opens."""
    import circuitbreaker

    failing = circuitbreaker.CircuitBreaker(failure_threshold=NEVER, name="bench-failing")(fail)

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                await failing()
            except Boom:
                pass

    return loop


# -- pybreaker ---------------------------------------------------------------


async def pybreaker_closed() -> Loop:
    """``await breaker.call(fn)``: pybreaker's sync ``call`` (its async path needs tornado).

    The sync ``call`` makes the coroutine and returns it; awaiting it is
    outside the breaker, so pybreaker never sees the coroutine's outcome.
    """
    import pybreaker

    breaker = pybreaker.CircuitBreaker(name="bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            await breaker.call(noop)

    return loop


async def pybreaker_rejected() -> Loop:
    """A refused sync ``call`` on a pybreaker opened by failures."""
    import pybreaker

    def sync_fail() -> None:
        raise Boom

    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=OPEN_FOR, name="bench")
    for _ in range(5):
        with contextlib.suppress(Boom, pybreaker.CircuitBreakerError):
            breaker.call(sync_fail)
    assert breaker.current_state == "open"
    error = pybreaker.CircuitBreakerError

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                await breaker.call(noop)
            except error:
                pass

    return loop


async def pybreaker_failure() -> Loop:
    """A failed sync ``call`` recorded by a pybreaker that never opens.

    The failing function is synchronous: a coroutine's failure happens when
    it is awaited, outside pybreaker's sync ``call``, which would never see it.
    """
    import pybreaker

    def sync_fail() -> None:
        raise Boom

    breaker = pybreaker.CircuitBreaker(fail_max=NEVER, name="bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                breaker.call(sync_fail)
            except Boom:
                pass

    return loop


# -- mamba-agents --------------------------------------------------------------

_MAMBA_FILE = "mamba_agents/errors/circuit_breaker.py"
_mamba: ModuleType | None = None


def mamba_module() -> ModuleType:
    """Load only mamba-agents' ``errors/circuit_breaker.py``, by path.

    mamba-agents is installed with ``--no-deps``: importing its package would
    pull in its whole agent framework, while this one file needs only the
    standard library.
    """
    global _mamba
    if _mamba is None:
        path = metadata.distribution("mamba-agents").locate_file(_MAMBA_FILE)
        name = "mamba_agents_circuit_breaker"
        spec = importlib.util.spec_from_file_location(name, str(path))
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _mamba = module
    return _mamba


async def mamba_closed() -> Loop:
    """``async with breaker:`` on mamba-agents' ``CircuitBreaker``."""
    breaker = mamba_module().CircuitBreaker("bench")

    async def loop(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    return loop


async def mamba_rejected() -> Loop:
    """A refused ``async with`` on mamba-agents' breaker opened by failures."""
    mamba = mamba_module()
    breaker = mamba.CircuitBreaker(
        "bench", mamba.CircuitBreakerConfig(failure_threshold=5, timeout=OPEN_FOR)
    )
    for _ in range(5):
        try:
            async with breaker:
                await fail()
        except Boom:
            pass
    assert breaker.state is mamba.CircuitState.OPEN
    error = mamba.CircuitBreakerOpenError

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await noop()
            except error:
                pass

    return loop


async def mamba_failure() -> Loop:
    """A failed call recorded by mamba-agents' breaker that never opens."""
    mamba = mamba_module()
    breaker = mamba.CircuitBreaker(
        "bench",
        mamba.CircuitBreakerConfig(failure_threshold=NEVER, window_size=SHORT_WINDOW),
    )

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await fail()
            except Boom:
                pass

    return loop


LIBRARIES: list[Library] = [
    Library(
        "floor",
        "floor (bare async with)",
        None,
        floor_closed,
        floor_rejected,
        "__aenter__ does nothing (closed) or raises (rejected)",
    ),
    Library(
        "anybreaker",
        "anybreaker",
        "anybreaker",
        anybreaker_closed,
        anybreaker_rejected,
        "async with breaker",
        make_failure=anybreaker_failure,
    ),
    Library(
        "aiobreaker",
        "aiobreaker",
        "aiobreaker",
        aiobreaker_closed,
        aiobreaker_rejected,
        "await breaker.call_async(fn)",
        make_failure=aiobreaker_failure,
    ),
    Library(
        "purgatory",
        "purgatory",
        "purgatory",
        purgatory_closed,
        purgatory_rejected,
        "async with breaker (object reused)",
        make_failure=purgatory_failure,
    ),
    Library(
        "circuitbreaker",
        "circuitbreaker",
        "circuitbreaker",
        circuitbreaker_closed,
        circuitbreaker_rejected,
        "@breaker on an async def",
        make_failure=circuitbreaker_failure,
    ),
    Library(
        "pybreaker",
        "pybreaker",
        "pybreaker",
        pybreaker_closed,
        pybreaker_rejected,
        "await breaker.call(fn) (sync call)",
        make_failure=pybreaker_failure,
    ),
    Library(
        "mamba",
        "mamba-agents",
        "mamba-agents",
        mamba_closed,
        mamba_rejected,
        "async with breaker",
        make_failure=mamba_failure,
    ),
]


def available(library: Library) -> str | None:
    """Return why ``library`` cannot be measured here, or ``None`` if it can."""
    if library.distribution is None:
        return None
    try:
        metadata.version(library.distribution)
        if library.key == "mamba":
            mamba_module()
    except Exception as error:  # a missing or broken competitor is reported, not fatal
        return f"{type(error).__name__}: {error}"
    return None


def quiet_warnings() -> None:
    """Silence competitors' deprecation warnings (aiobreaker's ``utcnow``)."""
    warnings.simplefilter("ignore", DeprecationWarning)
