"""Trip rules on the shared window: counts, rates, streaks, slow calls, deadlines, Retry-After.

Every test runs on every storage, under asyncio and trio, with a fake clock.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anybreaker import (
    CircuitBreaker,
    CircuitState,
    MemoryStorage,
    RetryAfter,
    Storage,
    WindowStats,
)
from anybreaker.testing import FakeClock

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    """The guarded dependency failed."""


class Ignored(Exception):
    """An exception the breakers here ignore."""


def make(storage: Storage, clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """A breaker on the test's storage and clock."""
    # A long storage_timeout: a storage slow under load is not what these test.
    defaults: dict[str, Any] = {"timeout": 10.0, "window_size": 60.0, "storage_timeout": 60.0}
    return CircuitBreaker("model-api", storage=storage, clock=clock, **{**defaults, **settings})


async def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that succeed."""
    for _ in range(times):
        async with breaker:
            pass


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that raise ``Boom``."""
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker:
                raise Boom


async def neutral(breaker: CircuitBreaker, times: int = 1) -> None:
    """Run ``times`` guarded calls that raise an ignored exception."""
    for _ in range(times):
        with pytest.raises(Ignored):
            async with breaker:
                raise Ignored


async def state_of(breaker: CircuitBreaker) -> CircuitState:
    """The state as the storage holds it."""
    return await breaker.get_state()


# -- failure_threshold ---------------------------------------------------------


async def test_threshold_opens_on_the_call_that_reaches_it(
    storage: Storage, clock: FakeClock
) -> None:
    """failure_threshold - 1 failures keep it closed; the next one opens it, for everyone."""
    breaker = make(storage, clock, failure_threshold=4)
    other = make(storage, clock, failure_threshold=4)
    await fail(breaker, 3)
    assert await state_of(other) is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN
    assert await state_of(other) is OPEN


async def test_threshold_counts_failures_within_the_window(
    storage: Storage, clock: FakeClock
) -> None:
    """Failures older than the window (to one bucket, a tenth of it) stop counting."""
    breaker = make(storage, clock, failure_threshold=3, window_size=10.0)
    await fail(breaker, 2)
    clock.advance(10.0)  # both failures' bucket has left the window
    await fail(breaker)
    assert (await breaker.get_window_stats()).failures == 1
    assert breaker.state is CLOSED
    clock.advance(8.0)  # the last failure's bucket is still one of the ten
    await fail(breaker, 2)
    assert breaker.state is OPEN


async def test_failures_in_a_row_leave_the_window_with_their_bucket(
    storage: Storage, clock: FakeClock
) -> None:
    """Failures counted one after another in a bucket leave the window with it, all of them."""
    breaker = make(storage, clock, failure_threshold=5, window_size=1.0)  # buckets of 0.1 s
    clock.advance(0.1 - clock() % 0.1 + 0.01)  # early in a bucket
    await fail(breaker)
    clock.advance(0.02)
    await breaker.get_window_stats()  # a write, in the middle of the bucket
    await fail(breaker, 3)
    clock.advance(0.985)  # the bucket has left the window, less than a second after the write
    await fail(breaker, 3)
    assert breaker.state is CLOSED
    assert (await breaker.get_window_stats()).failures == 3
    await fail(breaker, 2)
    assert breaker.state is OPEN


async def test_threshold_none_turns_the_count_rule_off(storage: Storage, clock: FakeClock) -> None:
    """With failure_threshold=None only the rules that are set can open the breaker."""
    breaker = make(storage, clock, failure_threshold=None, consecutive_failures=50)
    await fail(breaker, 20)
    assert breaker.state is CLOSED


# -- failure_rate_threshold ------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "failures", "opens"),
    [(5, 5, True), (6, 4, False), (0, 9, False), (0, 10, True), (15, 5, False)],
)
async def test_failure_rate_opens_with_minimum_calls_and_the_share(
    storage: Storage, clock: FakeClock, successes: int, failures: int, opens: bool
) -> None:
    """The rate rule needs minimum_calls calls in the window and the share of failures."""
    breaker = make(
        storage, clock, failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=10
    )
    await succeed(breaker, successes)
    await fail(breaker, failures)
    assert (breaker.state is OPEN) is opens
    assert (await state_of(breaker) is OPEN) is opens


async def test_neutral_outcomes_do_not_count_as_calls(storage: Storage, clock: FakeClock) -> None:
    """Ignored exceptions are neither calls nor failures for the rate rule."""
    breaker = make(
        storage,
        clock,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        minimum_calls=4,
        ignored_exceptions=(Ignored,),
    )
    await neutral(breaker, 10)
    await fail(breaker, 3)
    assert breaker.state is CLOSED
    assert (await breaker.get_window_stats()).calls == 3
    await fail(breaker)
    assert breaker.state is OPEN


async def test_failure_rate_counts_successes_of_other_breakers(
    storage: Storage, clock: FakeClock
) -> None:
    """Successes counted by another breaker object reach the shared window and dilute the rate."""
    settings: dict[str, Any] = {
        "failure_threshold": None,
        "failure_rate_threshold": 0.5,
        "minimum_calls": 10,
    }
    healthy = make(storage, clock, **settings)
    failing = make(storage, clock, **settings)
    await succeed(healthy, 8)
    clock.advance(1.0)  # the next call's flush writes the counted successes
    await succeed(healthy)
    await fail(failing, 8)
    assert await state_of(failing) is CLOSED  # 8 failures in 17 calls
    await fail(failing)
    assert await state_of(failing) is OPEN  # 9 in 18


# -- consecutive_failures ---------------------------------------------------------


async def test_consecutive_failures_open_and_a_success_ends_the_streak(
    storage: Storage, clock: FakeClock
) -> None:
    """N failures in a row open it; a success in between starts the count again."""
    breaker = make(storage, clock, failure_threshold=None, consecutive_failures=3)
    await fail(breaker, 2)
    await succeed(breaker)
    await fail(breaker, 2)
    assert breaker.state is CLOSED
    assert (await breaker.get_window_stats()).consecutive_failures == 2
    await fail(breaker)
    assert breaker.state is OPEN


async def test_a_streak_spans_breaker_objects(storage: Storage, clock: FakeClock) -> None:
    """Failures reported by several breaker objects make one streak, in the storage's order."""
    breakers = [make(storage, clock, failure_threshold=None, consecutive_failures=3) for _ in "ab"]
    await fail(breakers[0])
    await fail(breakers[1])
    assert await state_of(breakers[0]) is CLOSED
    await fail(breakers[0])
    assert await state_of(breakers[1]) is OPEN


async def test_breaker_objects_of_one_name_each_decide_by_their_own_rules(
    storage: Storage, clock: FakeClock
) -> None:
    """Objects with other rules share the window's counts; each checks its own rules on them."""
    counting = make(storage, clock, failure_threshold=12)
    rating = make(storage, clock, failure_threshold=None, failure_rate_threshold=0.5)
    await fail(counting, 2)
    await fail(rating, 7)  # 9 failures, 9 calls: under minimum_calls (10)
    assert await state_of(counting) is CLOSED
    await fail(counting)  # 10 calls, all failed: the rate rule would open, the count rule not yet
    assert await state_of(rating) is CLOSED
    await fail(rating)  # 11 calls, 11 failures: the rate rule opens
    assert await state_of(counting) is OPEN
    assert (await counting.get_window_stats()).failures == 11


# -- slow calls -------------------------------------------------------------------


def slow_call(clock: FakeClock, seconds: float, *, fails: bool = False) -> Any:
    """A guarded coroutine function that takes ``seconds`` of fake time."""

    async def call() -> None:
        clock.advance(seconds)
        await anyio.lowlevel.checkpoint()
        if fails:
            raise Boom

    return call


async def test_slow_call_rate_opens(storage: Storage, clock: FakeClock) -> None:
    """Calls longer than slow_call_duration count as slow; their share opens the breaker."""
    breaker = make(
        storage,
        clock,
        failure_threshold=None,
        slow_call_duration=2.0,
        slow_call_rate_threshold=0.5,
        minimum_calls=4,
    )
    await breaker.call(slow_call(clock, 0.5))
    await breaker.call(slow_call(clock, 2.0))  # exactly the duration: not slow
    await breaker.call(slow_call(clock, 2.5))
    assert breaker.state is CLOSED
    await breaker.call(slow_call(clock, 3.0))
    assert breaker.state is OPEN
    assert (await breaker.get_window_stats()).slow_calls == 2


async def test_a_slow_failure_counts_as_slow_and_as_failed(
    storage: Storage, clock: FakeClock
) -> None:
    """A call that is slow and fails counts in both numbers."""
    breaker = make(storage, clock, failure_threshold=10, slow_call_duration=1.0)
    with pytest.raises(Boom):
        async with breaker:
            await slow_call(clock, 5.0, fails=True)()
    stats = await breaker.get_window_stats()
    assert (stats.calls, stats.failures, stats.slow_calls) == (1, 1, 1)


async def test_slow_calls_are_counted_without_a_slow_rule(
    storage: Storage, clock: FakeClock
) -> None:
    """With slow_call_duration alone, slow calls show in the window and trip nothing."""
    breaker = make(storage, clock, failure_threshold=5, slow_call_duration=1.0)
    for _ in range(3):
        await breaker.call(slow_call(clock, 2.0))
    await breaker.call(slow_call(clock, 0.5))
    stats = await breaker.get_window_stats()
    assert (stats.calls, stats.slow_calls) == (4, 3)
    assert breaker.state is CLOSED


async def test_a_slow_trial_reopens_when_slow_calls_can_trip(
    storage: Storage, clock: FakeClock
) -> None:
    """In half-open, a slow trial is a failed trial when a slow-call rule is set."""
    breaker = make(
        storage,
        clock,
        failure_threshold=1,
        slow_call_duration=1.0,
        slow_call_rate_threshold=1.0,
        success_threshold=1,
    )
    await fail(breaker)
    clock.advance(10.0)
    await breaker.call(slow_call(clock, 2.0))
    assert breaker.state is OPEN


# -- a rule of one's own --------------------------------------------------------------


async def test_a_trip_rule_sees_the_shared_window(storage: Storage, clock: FakeClock) -> None:
    """trip(WindowStats) is asked after each write; True opens the breaker."""
    seen: list[WindowStats] = []

    def trip(stats: WindowStats) -> bool:
        seen.append(stats)
        return stats.failures >= 2 and stats.calls >= 5

    breaker = make(storage, clock, failure_threshold=None, trip=trip)
    await succeed(breaker, 3)
    await fail(breaker)
    assert breaker.state is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN
    assert seen[-1].calls == 5
    assert seen[-1].failures == 2


async def test_a_trip_rule_that_raises_does_not_trip(
    storage: Storage, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A user rule that raises is logged; the guarded call sees only its own outcome."""

    def trip(stats: WindowStats) -> bool:
        raise KeyError("no such metric")

    breaker = make(storage, clock, failure_threshold=3, trip=trip)
    await fail(breaker, 2)
    assert breaker.state is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN
    assert "trip rule" in caplog.text


# -- opening for a given time ------------------------------------------------------------


async def test_open_for_opens_exactly_that_long_for_everyone(
    storage: Storage, clock: FakeClock
) -> None:
    """open_for(s) opens now for s seconds, for every breaker; then half-open as usual."""
    admin = make(storage, clock, failure_threshold=5)
    worker = make(storage, clock, failure_threshold=5)
    await admin.open_for(2.5)
    assert await state_of(worker) is OPEN
    assert worker.get_time_until_retry() == pytest.approx(2.5)
    clock.advance(2.4)
    assert worker.state is OPEN
    clock.advance(0.1)
    assert worker.state is HALF_OPEN


async def test_open_for_refuses_bad_seconds(storage: Storage, clock: FakeClock) -> None:
    """open_for needs finite seconds >= 0, and says so."""
    breaker = make(storage, clock, failure_threshold=5)
    for bad in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="seconds"):
            await breaker.open_for(bad)
    with pytest.raises(TypeError, match="seconds"):
        await breaker.open_for("10")  # type: ignore[arg-type]


async def test_retry_after_from_guarded_code_opens_for_that_long(
    storage: Storage, clock: FakeClock
) -> None:
    """RetryAfter(s) raised inside opens the breaker for s and reaches the caller as itself."""
    breaker = make(storage, clock, failure_threshold=5)
    with pytest.raises(RetryAfter) as caught:
        async with breaker:
            raise RetryAfter(30, "rate limited")
    assert caught.value.seconds == 30
    other = make(storage, clock, failure_threshold=5)
    assert await state_of(other) is OPEN
    assert other.get_time_until_retry() == pytest.approx(30.0)
    assert breaker.stats.failed_calls == 1


async def test_retry_after_never_shortens_an_opening(storage: Storage, clock: FakeClock) -> None:
    """A shorter Retry-After than the open period left leaves it as it is."""
    breaker = make(storage, clock, failure_threshold=5)
    await breaker.open_for(100.0)
    clock.advance(100.0)  # half-open: a trial that reports Retry-After
    with pytest.raises(RetryAfter):
        async with breaker:
            raise RetryAfter(5)
    assert breaker.get_time_until_retry() == pytest.approx(5.0)
    await breaker.open_for(60.0)
    other = make(storage, clock, failure_threshold=5)
    assert await state_of(other) is OPEN
    assert other.get_time_until_retry() == pytest.approx(60.0)


async def test_a_retry_after_of_zero_is_a_plain_failure(storage: Storage, clock: FakeClock) -> None:
    """RetryAfter(0) asks for no pause: it counts as a failure and opens nothing by itself."""
    breaker = make(storage, clock, failure_threshold=2)
    with pytest.raises(RetryAfter):
        async with breaker:
            raise RetryAfter(0)
    assert breaker.state is CLOSED
    assert (await breaker.get_window_stats()).failures == 1


def test_retry_after_checks_its_seconds() -> None:
    """RetryAfter refuses seconds that are not finite numbers >= 0, naming them."""
    for bad in (-1, math.inf, math.nan, 10**400):
        with pytest.raises(ValueError, match="seconds"):
            RetryAfter(bad)
    with pytest.raises(TypeError, match="seconds"):
        RetryAfter("5")  # type: ignore[arg-type]
    assert str(RetryAfter(2.5)) == "retry after 2.5 s"


# -- call_timeout -----------------------------------------------------------------------


async def test_call_timeout_cancels_the_call_and_counts_a_failure(
    storage: Storage, clock: FakeClock
) -> None:
    """A call past call_timeout is cancelled: the caller gets TimeoutError, a failure counts."""
    breaker = make(storage, clock, failure_threshold=2, call_timeout=0.05)
    reached_end = False

    async def hangs() -> None:
        nonlocal reached_end
        await anyio.sleep_forever()
        reached_end = True

    with anyio.fail_after(10):
        with pytest.raises(TimeoutError, match="call_timeout"):
            async with breaker:
                await hangs()
        with pytest.raises(TimeoutError):
            await breaker.call(hangs)
    assert not reached_end
    assert breaker.state is OPEN
    assert breaker.stats.failed_calls == 2


async def test_call_timeout_leaves_quick_calls_and_outside_cancellation_alone(
    storage: Storage, clock: FakeClock
) -> None:
    """A call within call_timeout succeeds; a cancellation from outside stays neutral."""
    breaker = make(storage, clock, failure_threshold=1, call_timeout=5.0)
    await breaker.call(anyio.sleep, 0)
    async with breaker:
        await anyio.lowlevel.checkpoint()
    with anyio.CancelScope() as outside:
        async with breaker:
            outside.cancel()  # a cancellation from outside, while the call runs
            await anyio.sleep_forever()
    assert breaker.state is CLOSED
    stats = breaker.stats
    assert (stats.successful_calls, stats.failed_calls, stats.total_calls) == (2, 0, 3)


async def test_call_timeout_counts_even_when_timeouts_are_ignored(
    storage: Storage, clock: FakeClock
) -> None:
    """The breaker's own deadline is a failure whatever ignored_exceptions says."""
    breaker = make(
        storage, clock, failure_threshold=1, call_timeout=0.02, ignored_exceptions=(TimeoutError,)
    )
    with anyio.fail_after(10), pytest.raises(TimeoutError):
        await breaker.call(anyio.sleep_forever)
    assert breaker.state is OPEN


# -- a reference model of the documented rules ------------------------------------------------

actions = st.lists(
    st.tuples(st.sampled_from(["success", "failure", "neutral", "wait"]), st.floats(0, 4)),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=actions,
    threshold=st.one_of(st.none(), st.integers(1, 5)),
    rate=st.one_of(st.none(), st.sampled_from([0.3, 0.5, 1.0])),
    streak=st.one_of(st.none(), st.integers(1, 4)),
    minimum=st.integers(1, 6),
)
def test_the_breaker_opens_exactly_when_the_rules_say(
    anyio_backend: str,
    history: list[tuple[str, float]],
    threshold: int | None,
    rate: float | None,
    streak: int | None,
    minimum: int,
) -> None:
    """For any outcomes and clock steps, the breaker opens exactly when the model does."""
    if threshold is None and rate is None and streak is None:
        threshold = 3
    anyio.run(_replay, history, threshold, rate, streak, minimum, backend=anyio_backend)


async def _replay(
    history: list[tuple[str, float]],
    threshold: int | None,
    rate: float | None,
    streak: int | None,
    minimum: int,
) -> None:
    clock = FakeClock()
    breaker = make(
        MemoryStorage(),
        clock,
        window_size=10.0,
        failure_threshold=threshold,
        failure_rate_threshold=rate,
        consecutive_failures=streak,
        minimum_calls=minimum,
        ignored_exceptions=(Ignored,),
    )
    counted: list[tuple[float, bool]] = []
    run = 0
    for action, seconds in history:
        if action == "wait":
            clock.advance(seconds)
            continue
        if action == "neutral":
            await neutral(breaker)
            continue
        failed = action == "failure"
        if failed:
            await fail(breaker)
        else:
            await succeed(breaker)
        counted.append((clock(), failed))
        run = run + 1 if failed else 0
        width = 1.0  # a tenth of the window
        current = clock() // width
        recent = [f for at, f in counted if at // width > current - 10]
        expected = (
            (threshold is not None and sum(recent) >= threshold)
            or (streak is not None and run >= streak)
            or (rate is not None and len(recent) >= minimum and sum(recent) >= rate * len(recent))
        )
        if failed:
            # A failure is written at once: the breaker decides on that call.
            assert (breaker.state is OPEN) is expected, (counted, breaker.state)
        else:
            # A success is written within a second; it may open the breaker only if the rules say.
            assert breaker.state is not OPEN or expected, (counted, breaker.state)
        if breaker.state is OPEN:
            return
