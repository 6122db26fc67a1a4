"""The breakers measured side by side: anybreaker and the libraries users compare it with.

Each library gets the same loops, written out by hand so that no adapter
sits between the loop and the breaker: a closed-state call around a no-op
coroutine, a call rejected by an open breaker, and a failed call recorded
by a closed breaker that never opens. ``make_closed``, ``make_rejected`` and
``make_failure`` build a fresh breaker (opened by real failures for the
rejected loop) and return ``loop(n)``, which makes ``n`` calls. Libraries
with a failure-rate rule also build their closed and rejected loops with
that rule set (``make_closed_rate``, ``make_rejected_rate``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from types import ModuleType
from typing import Any

Loop = Callable[[int], Awaitable[None]]

# A breaker that records failures one after another without ever opening: a
# threshold never reached, every other setting (the window included) left at
# the library's default.
NEVER = 10**9

# The failure-rate rule the rate comparison sets: open at 50 % failures once
# the window holds 10 calls, and no count rule beside it.
RATE_SETTINGS: dict[str, Any] = {
    "failure_threshold": None,
    "failure_rate_threshold": 0.5,
    "minimum_calls": 10,
}
RATE_TRIP = 10
"""Failures in a row that open a breaker under ``RATE_SETTINGS``."""

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
    """One library under test: how to name it and build its loops."""

    key: str
    label: str
    distribution: str | None
    make_closed: Callable[[], Awaitable[Loop]]
    make_rejected: Callable[[], Awaitable[Loop]] | None
    how: str
    """How the call is made, for the table's notes."""
    make_failure: Callable[[], Awaitable[Loop]] | None = None
    make_closed_rate: Callable[[], Awaitable[Loop]] | None = None
    """The closed loop with a failure-rate rule set, for libraries that have one."""
    make_rejected_rate: Callable[[], Awaitable[Loop]] | None = None
    rule: str = ""
    """The library's trip rule at the settings measured, for the table's notes."""
    rate_rule: str = ""

    def version(self) -> str:
        """The installed version of the library, or a dash for the floor."""
        if self.distribution is None:
            return "-"
        return metadata.version(self.distribution)

    def makers(self) -> list[tuple[str, Callable[[], Awaitable[Loop]]]]:
        """Every loop this library measures, by kind."""
        kinds = [
            ("closed", self.make_closed),
            ("rejected", self.make_rejected),
            ("failure", self.make_failure),
            ("closed_rate", self.make_closed_rate),
            ("rejected_rate", self.make_rejected_rate),
        ]
        return [(kind, make) for kind, make in kinds if make is not None]


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


async def anybreaker_closed(**settings: Any) -> Loop:
    """``async with breaker:`` on a closed in-memory anybreaker."""
    from anybreaker import CircuitBreaker

    breaker = CircuitBreaker("bench", **settings)

    async def loop(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    return loop


async def anybreaker_rejected(**settings: Any) -> Loop:
    """A call refused by an anybreaker that real failures opened."""
    from anybreaker import CircuitBreaker, CircuitBreakerOpenError

    settings = {"failure_threshold": 5, **settings}
    breaker = CircuitBreaker("bench", timeout=OPEN_FOR, **settings)
    for _ in range(RATE_TRIP):
        try:
            async with breaker:
                await fail()
        except (Boom, CircuitBreakerOpenError):
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


async def anybreaker_closed_rate() -> Loop:
    """``async with breaker:`` on a closed anybreaker with the failure-rate rule."""
    return await anybreaker_closed(**RATE_SETTINGS)


async def anybreaker_rejected_rate() -> Loop:
    """A call refused by an anybreaker that the failure-rate rule opened."""
    return await anybreaker_rejected(**RATE_SETTINGS)


async def anybreaker_failure() -> Loop:
    """A failed call recorded by an anybreaker that never opens (default 60 s window)."""
    from anybreaker import CircuitBreaker

    breaker = CircuitBreaker("bench", failure_threshold=NEVER)

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
    breaker = mamba.CircuitBreaker("bench", mamba.CircuitBreakerConfig(failure_threshold=NEVER))

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await fail()
            except Boom:
                pass

    return loop


# -- interlock-cb ----------------------------------------------------------------


def _interlock_breaker(**config: Any) -> Any:
    from interlock import CircuitBreaker, Config, WindowType

    if "window_type" in config:
        config["window_type"] = WindowType(config["window_type"])
    return CircuitBreaker(name="bench", config=Config(**config) if config else None)


# interlock-cb's failure-rate rule over a 60-second window, as the rate comparison sets it.
INTERLOCK_RATE: dict[str, Any] = {
    "failure_rate_threshold": 0.5,
    "minimum_number_of_calls": 10,
    "window_type": "time_based",
    "window_size": 60,
}


async def interlock_closed(**config: Any) -> Loop:
    """A call of an ``async def`` decorated with ``@breaker`` (interlock-cb's quickstart)."""
    guarded = _interlock_breaker(**config)(noop)

    async def loop(n: int) -> None:
        for _ in range(n):
            await guarded()

    return loop


async def interlock_rejected(**config: Any) -> Loop:
    """A refused decorated call on an interlock-cb breaker opened by failures."""
    from interlock import CircuitOpenError, State

    breaker = _interlock_breaker(wait_duration_in_open=OPEN_FOR, **config)
    guarded = breaker(noop)
    failing = breaker(fail)
    for _ in range(RATE_TRIP):
        with contextlib.suppress(Boom):
            await failing()
    assert breaker.state is State.OPEN

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                await guarded()
            except CircuitOpenError:
                pass

    return loop


async def interlock_closed_rate() -> Loop:
    """The decorated call on interlock-cb's rate breaker over a 60 s time window."""
    return await interlock_closed(**INTERLOCK_RATE)


async def interlock_rejected_rate() -> Loop:
    """A refused call on interlock-cb's rate breaker (60 s time window) opened by failures."""
    return await interlock_rejected(**INTERLOCK_RATE)


async def interlock_failure() -> Loop:
    """A failed decorated call recorded by an interlock-cb breaker that never opens."""
    failing = _interlock_breaker(minimum_number_of_calls=NEVER)(fail)

    async def loop(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - suppress() would add its own cost to the loop
                await failing()
            except Boom:
                pass

    return loop


# -- grelmicro ----------------------------------------------------------------------


async def _grelmicro_breaker(**settings: Any) -> Any:
    """A grelmicro breaker on a per-process in-memory backend, opened as its docs show."""
    from grelmicro.resilience import CircuitBreaker
    from grelmicro.resilience.circuitbreaker.memory import MemoryCircuitBreakerAdapter

    backend = await MemoryCircuitBreakerAdapter().__aenter__()  # captures the running loop
    if not settings:
        return CircuitBreaker("bench", backend=backend)
    return CircuitBreaker.consecutive_count("bench", backend=backend, **settings)


async def grelmicro_closed() -> Loop:
    """``async with breaker:`` on a grelmicro breaker with the in-memory backend."""
    breaker = await _grelmicro_breaker()

    async def loop(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await noop()

    return loop


async def grelmicro_rejected() -> Loop:
    """A refused ``async with`` on a grelmicro breaker opened by failures."""
    from grelmicro.resilience import CircuitBreakerError, CircuitBreakerState

    breaker = await _grelmicro_breaker(error_threshold=5, reset_timeout=OPEN_FOR)
    for _ in range(5):
        try:
            async with breaker:
                await fail()
        except Boom:
            pass
    assert breaker.state is CircuitBreakerState.OPEN

    async def loop(n: int) -> None:
        for _ in range(n):
            try:
                async with breaker:
                    await noop()
            except CircuitBreakerError:
                pass

    return loop


async def grelmicro_failure() -> Loop:
    """A failed call recorded by a grelmicro breaker that never opens."""
    breaker = await _grelmicro_breaker(error_threshold=NEVER)

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
        make_closed_rate=anybreaker_closed_rate,
        make_rejected_rate=anybreaker_rejected_rate,
        rule="5 failures in 60 s",
        rate_rule="50 % failures of at least 10 calls in 60 s",
    ),
    Library(
        "aiobreaker",
        "aiobreaker",
        "aiobreaker",
        aiobreaker_closed,
        aiobreaker_rejected,
        "await breaker.call_async(fn)",
        make_failure=aiobreaker_failure,
        rule="5 failures in a row",
    ),
    Library(
        "purgatory",
        "purgatory",
        "purgatory",
        purgatory_closed,
        purgatory_rejected,
        "async with breaker (object reused)",
        make_failure=purgatory_failure,
        rule="5 failures in a row",
    ),
    Library(
        "circuitbreaker",
        "circuitbreaker",
        "circuitbreaker",
        circuitbreaker_closed,
        circuitbreaker_rejected,
        "@breaker on an async def",
        make_failure=circuitbreaker_failure,
        rule="5 failures in a row",
    ),
    Library(
        "pybreaker",
        "pybreaker",
        "pybreaker",
        pybreaker_closed,
        pybreaker_rejected,
        "await breaker.call(fn) (sync call)",
        make_failure=pybreaker_failure,
        rule="5 failures in a row",
    ),
    Library(
        "mamba",
        "mamba-agents",
        "mamba-agents",
        mamba_closed,
        mamba_rejected,
        "async with breaker",
        make_failure=mamba_failure,
        rule="5 failures in 60 s",
    ),
    Library(
        "interlock",
        "interlock-cb",
        "interlock-cb",
        interlock_closed,
        interlock_rejected,
        "@breaker on an async def",
        make_failure=interlock_failure,
        make_closed_rate=interlock_closed_rate,
        make_rejected_rate=interlock_rejected_rate,
        rule="50 % failures of at least 10 of the last 100 calls",
        rate_rule="50 % failures of at least 10 calls in 60 s",
    ),
    Library(
        "grelmicro",
        "grelmicro",
        "grelmicro",
        grelmicro_closed,
        grelmicro_rejected,
        "async with breaker (in-memory backend)",
        make_failure=grelmicro_failure,
        rule="5 failures in a row",
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
    """Silence competitors' deprecation warnings and grelmicro's state-change log lines."""
    warnings.simplefilter("ignore", DeprecationWarning)
    logging.getLogger("grelmicro").addHandler(logging.NullHandler())
