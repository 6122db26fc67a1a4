"""Breaker behaviour, on every storage, under asyncio and trio, with a fake clock."""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from anybreaker import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    RetryAfter,
    StateChange,
    Storage,
)
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    """The guarded dependency failed."""


def make(
    storage: Storage, clock: FakeClock, name: str = "model-api", **settings: Any
) -> CircuitBreaker:
    """A breaker on the test's storage and clock, with small thresholds."""
    defaults: dict[str, Any] = {
        "failure_threshold": 3,
        "success_threshold": 2,
        "timeout": 10.0,
        "window_size": 60.0,
        "storage_timeout": 60.0,  # a storage slow under load is not what these test
    }
    return CircuitBreaker(name, storage=storage, clock=clock, **{**defaults, **settings})


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that raise ``Boom``."""
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom


async def succeed(breaker: CircuitBreaker) -> None:
    """Run one guarded call that succeeds."""
    async with breaker:
        pass


async def trip(breaker: CircuitBreaker) -> None:
    """Open the breaker with failures."""
    assert breaker.config.failure_threshold is not None
    await fail(breaker, breaker.config.failure_threshold)
    assert breaker.state is OPEN


# -- closed ----------------------------------------------------------------------


async def test_closed_breaker_runs_calls_every_way(storage: Storage, clock: FakeClock) -> None:
    """A closed breaker runs calls via async with, call() and the decorator."""
    breaker = make(storage, clock)

    async def double(x: int) -> int:
        return 2 * x

    @breaker
    async def triple(x: int) -> int:
        return 3 * x

    async with breaker as entered:
        assert entered is breaker
    assert await breaker.call(double, 4) == 8
    assert await triple(5) == 15
    assert triple.__name__ == "triple"
    assert breaker.state is CLOSED
    assert breaker.stats.successful_calls == 3


async def test_failures_open_the_breaker(storage: Storage, clock: FakeClock) -> None:
    """failure_threshold failures inside the window open the breaker."""
    breaker = make(storage, clock)
    await fail(breaker, 2)
    assert breaker.state is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN
    assert breaker.is_open
    assert await breaker.get_state() is OPEN


async def test_failures_spread_beyond_the_window_do_not_open(
    storage: Storage, clock: FakeClock
) -> None:
    """Failures further apart than window_size never add up to an opening."""
    breaker = make(storage, clock, window_size=5.0)
    for _ in range(6):
        await fail(breaker)
        clock.advance(3.0)
    assert await breaker.get_state() is CLOSED


async def test_failure_via_call_and_decorator_count(storage: Storage, clock: FakeClock) -> None:
    """Exceptions escaping call() and decorated functions count as failures."""
    breaker = make(storage, clock)

    async def broken() -> None:
        raise Boom

    @breaker
    async def also_broken() -> None:
        raise Boom

    with pytest.raises(Boom):
        await breaker.call(broken)
    with pytest.raises(Boom):
        await also_broken()
    with pytest.raises(Boom):
        await breaker.call(broken)
    assert breaker.state is OPEN


# -- open --------------------------------------------------------------------------


async def test_open_breaker_rejects_without_running(storage: Storage, clock: FakeClock) -> None:
    """An open breaker rejects at once; the guarded code does not run."""
    breaker = make(storage, clock)
    await trip(breaker)
    clock.advance(4.0)
    ran = False
    with pytest.raises(CircuitBreakerOpenError) as caught:
        async with breaker:
            ran = True
    assert not ran
    assert caught.value.circuit_name == "model-api"
    assert caught.value.time_until_retry == pytest.approx(6.0)
    assert breaker.get_time_until_retry() == pytest.approx(6.0)

    async def never() -> None:
        raise AssertionError("ran while open")

    with pytest.raises(CircuitBreakerOpenError):
        await breaker.call(never)
    assert breaker.stats.rejected_calls == 2


async def test_open_turns_half_open_after_timeout_without_io(
    storage: Storage, clock: FakeClock
) -> None:
    """The synchronous views show half-open once timeout has passed."""
    breaker = make(storage, clock)
    await trip(breaker)
    clock.advance(9.99)
    assert breaker.state is OPEN
    clock.advance(0.01)
    assert breaker.state is HALF_OPEN
    assert not breaker.is_open
    assert breaker.get_time_until_retry() == 0.0


# -- half-open ---------------------------------------------------------------------


async def test_successful_trials_close_and_clear_history(
    storage: Storage, clock: FakeClock
) -> None:
    """success_threshold successful trials close the breaker with no failures left."""
    breaker = make(storage, clock)
    await trip(breaker)
    clock.advance(10.0)
    await succeed(breaker)
    assert await breaker.get_state() is HALF_OPEN
    await succeed(breaker)
    assert await breaker.get_state() is CLOSED
    await fail(breaker, 2)
    assert await breaker.get_state() is CLOSED


async def test_failed_trial_reopens_for_full_timeout(storage: Storage, clock: FakeClock) -> None:
    """One failed trial re-opens the breaker for a whole timeout."""
    breaker = make(storage, clock)
    await trip(breaker)
    clock.advance(10.0)
    await succeed(breaker)
    clock.advance(1.0)
    await fail(breaker)
    assert breaker.state is OPEN
    assert breaker.get_time_until_retry() == pytest.approx(10.0)


async def test_half_open_admits_only_max_calls_at_once(storage: Storage, clock: FakeClock) -> None:
    """While trials run, callers beyond half_open_max_calls are rejected."""
    breaker = make(storage, clock, half_open_max_calls=2, success_threshold=5)
    await trip(breaker)
    clock.advance(10.0)
    release = anyio.Event()
    inside = 0

    async def trial(task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal inside
        async with breaker:
            inside += 1
            task_status.started()
            await release.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(trial)
        await tg.start(trial)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            async with breaker:
                pass
        assert caught.value.time_until_retry > 0
        release.set()
    assert inside == 2
    await succeed(breaker)


@pytest.mark.parametrize("max_calls", [1, 3])
async def test_hundred_tasks_at_a_half_open_breaker(
    storage: Storage, clock: FakeClock, max_calls: int
) -> None:
    """100 tasks entering a half-open breaker at once: exactly max_calls run."""
    breaker = make(storage, clock, half_open_max_calls=max_calls, success_threshold=10)
    await trip(breaker)
    clock.advance(10.0)
    release = anyio.Event()
    ran = rejected = 0

    async def caller() -> None:
        nonlocal ran, rejected
        try:
            async with breaker:
                ran += 1
                await release.wait()
        except CircuitBreakerOpenError:
            rejected += 1

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(caller)
        with anyio.fail_after(10):
            while ran + rejected < 100:
                await anyio.lowlevel.checkpoint()
        release.set()
    assert (ran, rejected) == (max_calls, 100 - max_calls)


async def test_cancelled_trial_frees_its_permit(storage: Storage, clock: FakeClock) -> None:
    """Cancelling a trial gives its permit back at once and counts nothing."""
    breaker = make(storage, clock)
    await trip(breaker)
    clock.advance(10.0)
    entered = anyio.Event()

    async def hang() -> None:
        async with breaker:
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hang)
        await entered.wait()
        tg.cancel_scope.cancel()
    assert breaker.stats.total_calls == 3 + 1
    assert breaker.stats.failed_calls == 3
    await succeed(breaker)
    assert await breaker.get_state() is HALF_OPEN


async def test_base_exception_is_neutral_and_frees_permit(
    storage: Storage, clock: FakeClock
) -> None:
    """A BaseException in a trial is neither success nor failure and frees the permit."""
    breaker = make(storage, clock)
    await trip(breaker)
    clock.advance(10.0)
    with pytest.raises(KeyboardInterrupt):
        async with breaker:
            raise KeyboardInterrupt
    assert await breaker.get_state() is HALF_OPEN
    await succeed(breaker)
    await succeed(breaker)
    assert await breaker.get_state() is CLOSED


async def test_unreported_permit_expires(storage: Storage, clock: FakeClock) -> None:
    """A permit taken by allow_request() and never reported expires after trial_lease."""
    holder = make(storage, clock, trial_lease=30.0)
    await trip(holder)
    clock.advance(10.0)
    assert await holder.allow_request()
    other = make(storage, clock, trial_lease=30.0)
    assert not await other.allow_request()
    clock.advance(30.0)
    assert await other.allow_request()
    await holder.record_failure(Boom())
    assert await other.get_state() is HALF_OPEN, "a report after the lease expired moved it"
    await other.record_success()


# -- neutral outcomes and classification -------------------------------------------


async def test_ignored_exceptions_pass_through_uncounted(
    storage: Storage, clock: FakeClock
) -> None:
    """ignored_exceptions propagate and count as neither failure nor success."""
    breaker = make(storage, clock, ignored_exceptions=(KeyError,), failure_threshold=1)
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError("missing")
    assert await breaker.get_state() is CLOSED
    stats = breaker.stats
    assert (stats.total_calls, stats.failed_calls, stats.successful_calls) == (1, 0, 0)


async def test_each_exception_type_keeps_its_own_meaning_after_failures(
    storage: Storage, clock: FakeClock
) -> None:
    """After failures of one type, an ignored type stays neutral and RetryAfter still opens."""

    class Throttled(RetryAfter):
        pass

    breaker = make(storage, clock, ignored_exceptions=(KeyError,), failure_threshold=10)
    await fail(breaker, 4)
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError("missing")
    stats = breaker.stats
    assert (stats.total_calls, stats.failed_calls, stats.successful_calls) == (5, 4, 0)
    assert (await breaker.get_window_stats()).failures == 4
    with pytest.raises(Throttled):
        async with breaker:
            raise Throttled(30)
    assert await breaker.get_state() is OPEN
    assert breaker.get_time_until_retry() == pytest.approx(30)


async def test_is_failure_predicate_classifies(storage: Storage, clock: FakeClock) -> None:
    """is_failure decides which exceptions count; the others count as successes."""

    class ClientError(Exception):
        pass

    breaker = make(
        storage,
        clock,
        failure_threshold=1,
        is_failure=lambda exc: not isinstance(exc, ClientError),
    )
    with pytest.raises(ClientError):
        async with breaker:
            raise ClientError
    assert await breaker.get_state() is CLOSED
    assert breaker.stats.successful_calls == 1
    await fail(breaker)
    assert breaker.state is OPEN


# -- stale outcomes -----------------------------------------------------------------


async def test_slow_success_from_before_opening_does_not_close(
    storage: Storage, clock: FakeClock
) -> None:
    """A call that began before the breaker opened cannot count as a trial success."""
    breaker = make(storage, clock, success_threshold=1)
    slow_may_finish = anyio.Event()
    slow_entered = anyio.Event()

    async def slow() -> None:
        async with breaker:
            slow_entered.set()
            await slow_may_finish.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await slow_entered.wait()
        await trip(breaker)
        clock.advance(10.0)
        slow_may_finish.set()
    assert await breaker.get_state() is HALF_OPEN


async def test_slow_failure_from_before_opening_does_not_reopen(
    storage: Storage, clock: FakeClock
) -> None:
    """A failure of a call begun before an opening does not count after the breaker closes."""
    breaker = make(storage, clock, success_threshold=1, failure_threshold=2)
    slow_may_finish = anyio.Event()
    slow_entered = anyio.Event()

    async def slow_body() -> None:
        slow_entered.set()
        await slow_may_finish.wait()
        raise Boom

    async def slow() -> None:
        with pytest.raises(Boom):
            await breaker.call(slow_body)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await slow_entered.wait()
        await trip(breaker)
        clock.advance(10.0)
        await succeed(breaker)
        assert breaker.state is CLOSED
        await fail(breaker)
        slow_may_finish.set()
    assert await breaker.get_state() is CLOSED, "the stale failure re-opened the breaker"
    await fail(breaker)
    assert breaker.state is OPEN


async def test_slow_failure_from_before_reset_does_not_count(
    storage: Storage, clock: FakeClock
) -> None:
    """reset() is a state change: failures of calls begun before it do not count."""
    breaker = make(storage, clock, failure_threshold=1)
    may_finish = anyio.Event()
    entered = anyio.Event()

    async def slow() -> None:
        async def body() -> None:
            entered.set()
            await may_finish.wait()
            raise Boom

        with pytest.raises(Boom):
            await breaker.call(body)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await entered.wait()
        await breaker.reset()
        may_finish.set()
    assert await breaker.get_state() is CLOSED


async def test_current_failure_counts_while_stale_calls_run(
    storage: Storage, clock: FakeClock
) -> None:
    """Calls begun after a state change count even while older calls still run."""
    breaker = make(storage, clock, failure_threshold=1)
    old_may_finish = anyio.Event()
    old_entered = anyio.Event()

    async def old_call() -> None:
        async with breaker:
            old_entered.set()
            await old_may_finish.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(old_call)
        await old_entered.wait()
        await breaker.reset()
        await fail(breaker)
        assert breaker.state is OPEN
        old_may_finish.set()
    assert await breaker.get_state() is OPEN


# -- administration ----------------------------------------------------------------


async def test_force_open_and_reset_are_shared(storage: Storage, clock: FakeClock) -> None:
    """force_open() holds every breaker sharing the storage open until reset()."""
    first = make(storage, clock)
    second = make(storage, clock)
    await first.force_open()
    clock.advance(1e6)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        async with second:
            pass
    assert caught.value.time_until_retry == math.inf
    assert second.get_time_until_retry() == math.inf
    await second.reset()
    await succeed(first)
    assert await first.get_state() is CLOSED


async def test_breakers_sharing_storage_and_name_share_state(
    storage: Storage, clock: FakeClock
) -> None:
    """Two breaker objects with one storage and name see one state; other names don't."""
    first = make(storage, clock)
    second = make(storage, clock)
    other = make(storage, clock, name="other-api")
    await fail(first, 2)
    await fail(second)
    assert await first.get_state() is OPEN
    assert await second.get_state() is OPEN
    assert await other.get_state() is CLOSED
    with pytest.raises(CircuitBreakerOpenError):
        async with first:
            pass


async def test_reset_clears_history(storage: Storage, clock: FakeClock) -> None:
    """reset() closes the breaker and forgets its failures."""
    breaker = make(storage, clock)
    await fail(breaker, 2)
    await breaker.reset()
    await fail(breaker, 2)
    assert await breaker.get_state() is CLOSED


async def test_backoff_lengthens_repeated_openings(storage: Storage, clock: FakeClock) -> None:
    """Each re-opening from half-open multiplies the open period, up to max_timeout."""
    breaker = make(storage, clock, backoff_multiplier=2.0, max_timeout=25.0)
    await trip(breaker)
    seen = []
    for _ in range(3):
        seen.append(breaker.get_time_until_retry())
        clock.advance(breaker.get_time_until_retry())
        await fail(breaker)
    seen.append(breaker.get_time_until_retry())
    assert seen == [10.0, 20.0, 25.0, 25.0]


async def test_clock_stepped_back_never_lengthens_opening(
    storage: Storage, clock: FakeClock
) -> None:
    """A stored opening time in the future is taken as now."""
    breaker = make(storage, clock)
    await trip(breaker)
    clock.set(clock() - 3600.0)
    assert breaker.get_time_until_retry() == 10.0
    with pytest.raises(CircuitBreakerOpenError) as caught:
        async with breaker:
            pass
    assert caught.value.time_until_retry == pytest.approx(10.0)


# -- manual use --------------------------------------------------------------------


async def test_manual_allow_and_record(storage: Storage, clock: FakeClock) -> None:
    """allow_request()/record_* drive the same transitions as async with."""
    breaker = make(storage, clock)
    for _ in range(3):
        assert await breaker.allow_request()
        await breaker.record_failure(Boom())
    assert not await breaker.allow_request()
    clock.advance(10.0)
    assert await breaker.allow_request()
    assert not await make(storage, clock).allow_request()
    await breaker.record_success()
    assert await breaker.allow_request()
    await breaker.record_success()
    assert await breaker.get_state() is CLOSED


async def test_manual_record_of_ignored_exception_is_neutral(
    storage: Storage, clock: FakeClock
) -> None:
    """record_failure() with an ignored exception type does not count as a failure."""
    breaker = make(storage, clock, failure_threshold=1, ignored_exceptions=(KeyError,))
    assert await breaker.allow_request()
    await breaker.record_failure(KeyError("x"))
    assert await breaker.get_state() is CLOSED


# -- events and stats -------------------------------------------------------------------


async def test_listeners_see_every_change(
    storage: Storage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync and async listeners get each change, time-driven included; one INFO line each."""
    changes: list[tuple[CircuitState, CircuitState]] = []
    async_changes: list[StateChange] = []

    async def record_async(change: StateChange) -> None:
        await anyio.lowlevel.checkpoint()
        async_changes.append(change)

    breaker = make(
        storage,
        clock,
        success_threshold=1,
        listeners=[lambda change: changes.append((change.old_state, change.new_state))],
    )
    breaker.add_listener(record_async)
    with caplog.at_level(logging.INFO, logger="anybreaker"):
        await trip(breaker)
        clock.advance(10.0)
        await succeed(breaker)
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert [c.new_state for c in async_changes] == [OPEN, HALF_OPEN, CLOSED]
    assert async_changes[0].name == "model-api"
    assert async_changes[1].at == clock()
    lines = [r for r in caplog.records if r.name == "anybreaker" and r.levelno == logging.INFO]
    assert len(lines) == 3
    assert "open -> half_open" in lines[1].getMessage()
    assert breaker.stats.state_changes == 3


async def test_raising_listener_never_breaks_the_call(
    storage: Storage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged; the guarded call's own outcome stands."""

    def broken(change: StateChange) -> None:
        raise RuntimeError("listener bug")

    breaker = make(storage, clock, failure_threshold=1, listeners=[broken])
    with caplog.at_level(logging.ERROR, logger="anybreaker"):
        await fail(breaker)
    assert breaker.state is OPEN
    assert any("listener" in r.getMessage() for r in caplog.records)


async def test_stats_count_calls_in_this_process(storage: Storage, clock: FakeClock) -> None:
    """Stats count successes, failures, neutral calls and rejections."""
    breaker = make(storage, clock, ignored_exceptions=(KeyError,))
    await succeed(breaker)
    with pytest.raises(KeyError):
        async with breaker:
            raise KeyError
    await trip(breaker)
    with pytest.raises(CircuitBreakerOpenError):
        await succeed(breaker)
    stats = breaker.get_stats()
    assert (
        stats.total_calls,
        stats.successful_calls,
        stats.failed_calls,
        stats.rejected_calls,
        stats.state_changes,
    ) == (5, 1, 3, 1, 1)


async def test_no_lock_is_held_across_the_guarded_call(storage: Storage, clock: FakeClock) -> None:
    """While one call waits inside the breaker, others run and admin calls finish."""
    breaker = make(storage, clock)
    inside = anyio.Event()
    may_leave = anyio.Event()

    async def waiter() -> None:
        async with breaker:
            inside.set()
            await may_leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await inside.wait()
        with anyio.fail_after(5):
            await succeed(breaker)
            await fail(breaker)
            await breaker.force_open()
            await breaker.reset()
            assert await breaker.get_state() is CLOSED
        may_leave.set()


# -- errors for bad use ---------------------------------------------------------------


async def test_decorating_a_sync_function_is_refused(storage: Storage, clock: FakeClock) -> None:
    """@breaker on a function that is not async def is a TypeError naming it."""
    breaker = make(storage, clock)

    def not_async() -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        breaker(not_async)  # type: ignore[arg-type]


async def test_call_refuses_a_function_that_is_not_async_and_counts_nothing(
    storage: Storage, clock: FakeClock
) -> None:
    """call(sync_fn) is a TypeError saying so; the healthy dependency never opens the breaker."""
    breaker = make(storage, clock, failure_threshold=2)

    def sync_fn() -> int:
        return 42

    for _ in range(3):
        with pytest.raises(TypeError, match="async function"):
            await breaker.call(sync_fn)  # type: ignore[arg-type]
    assert breaker.state is CLOSED
    assert breaker.stats.failed_calls == 0


async def test_with_instead_of_async_with_says_what_to_write(
    storage: Storage, clock: FakeClock
) -> None:
    """``with breaker:`` is a TypeError that says to use ``async with``."""
    breaker = make(storage, clock)
    with pytest.raises(TypeError, match="use `async with breaker:`"), breaker:
        pass


async def test_decorating_an_object_with_an_async_call(storage: Storage, clock: FakeClock) -> None:
    """@breaker accepts an object whose __call__ is an async def, as call() does."""
    breaker = make(storage, clock)

    class Tool:
        async def __call__(self, prompt: str) -> str:
            return prompt.upper()

    guarded = breaker(Tool())
    assert await guarded("hi") == "HI"
    assert await breaker.call(Tool(), "ok") == "OK"
