"""The pure state machine: every transition, and properties over random histories."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybreaker import BreakerRecord, CircuitBreakerConfig, CircuitState
from anybreaker import _machine as machine
from anybreaker._machine import Outcome
from anybreaker.storage._protocol import INITIAL_RECORD

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
CONFIG = CircuitBreakerConfig(
    failure_threshold=3, success_threshold=2, timeout=10.0, window_size=60.0
)


def fail(record: BreakerRecord, now: float, config: CircuitBreakerConfig = CONFIG) -> BreakerRecord:
    """Report a failed closed-state call admitted in the record's generation."""
    new = machine.settle(record, config, now, record.generation, None, Outcome.FAILURE)
    assert new is not None
    return new


def opened(now: float = 100.0, config: CircuitBreakerConfig = CONFIG) -> BreakerRecord:
    """A record that opened at ``now`` after threshold failures."""
    record = INITIAL_RECORD
    for _ in range(config.failure_threshold):
        record = fail(record, now, config)
    assert record.state is OPEN
    return record


def trial(record: BreakerRecord, now: float, token: str = "t1") -> machine.Admission:
    """Ask for a trial and check it was granted."""
    admission = machine.admit(record, CONFIG, now, lambda: token)
    assert admission.allowed
    assert admission.record is not None
    return admission


def test_closed_admits_without_writing() -> None:
    """A closed breaker admits a call and has nothing to write."""
    admission = machine.admit(INITIAL_RECORD, CONFIG, 0.0, lambda: "t")
    assert admission.allowed
    assert admission.record is None
    assert admission.token is None


def test_closed_success_changes_nothing() -> None:
    """A success while closed writes nothing."""
    assert machine.settle(INITIAL_RECORD, CONFIG, 0.0, 0, None, Outcome.SUCCESS) is None


def test_failures_below_threshold_stay_closed() -> None:
    """Failures below the threshold are remembered and keep the breaker closed."""
    record = fail(fail(INITIAL_RECORD, 1.0), 2.0)
    assert record.state is CLOSED
    assert record.failures == (1.0, 2.0)
    assert record.version == 2


def test_threshold_failures_in_window_open() -> None:
    """The threshold-th failure inside the window opens the breaker for timeout."""
    record = opened(now=100.0)
    assert record.generation == 1
    assert record.changed_at == 100.0
    assert machine.time_until_retry(record, CONFIG, 100.0) == 10.0
    assert machine.view(record, CONFIG, 105.0) is OPEN


def test_failures_outside_window_do_not_count() -> None:
    """Failures older than window_size no longer count toward the threshold."""
    record = fail(fail(INITIAL_RECORD, 0.0), 1.0)
    record = fail(record, 61.5)
    assert record.state is CLOSED
    assert record.failures == (61.5,)


def test_open_rejects_until_timeout() -> None:
    """An open breaker rejects with the seconds left until its timeout."""
    record = opened(now=100.0)
    admission = machine.admit(record, CONFIG, 104.0, lambda: "t")
    assert not admission.allowed
    assert admission.retry_after == pytest.approx(6.0)


def test_open_turns_half_open_after_timeout() -> None:
    """After timeout an open breaker reads as half-open and grants a trial."""
    record = opened(now=100.0)
    assert machine.view(record, CONFIG, 110.0) is HALF_OPEN
    assert machine.time_until_retry(record, CONFIG, 110.0) == 0.0
    admission = trial(record, 110.0)
    assert admission.record is not None
    assert admission.record.state is HALF_OPEN
    assert admission.record.generation == record.generation + 1
    assert admission.record.trials == (("t1", 110.0),)


def test_half_open_limits_trials() -> None:
    """Half-open grants at most half_open_max_calls permits at once."""
    granted = trial(opened(), 110.0, "a").record
    assert granted is not None
    refused = machine.admit(granted, CONFIG, 111.0, lambda: "b")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(CONFIG.trial_lease - 1.0)


def test_expired_lease_frees_its_permit() -> None:
    """A trial permit never reported expires after trial_lease."""
    granted = trial(opened(), 110.0, "a").record
    assert granted is not None
    later = 110.0 + CONFIG.trial_lease
    admission = machine.admit(granted, CONFIG, later, lambda: "b")
    assert admission.allowed
    assert admission.record is not None
    assert [token for token, _ in admission.record.trials] == ["b"]


def test_report_after_lease_expired_is_neutral() -> None:
    """A success reported after its lease expired releases it but counts nothing."""
    granted = trial(opened(), 110.0, "a").record
    assert granted is not None
    late = 110.0 + CONFIG.trial_lease + 1
    new = machine.settle(granted, CONFIG, late, granted.generation, "a", Outcome.SUCCESS)
    assert new is not None
    assert new.state is HALF_OPEN
    assert new.successes == 0
    assert new.trials == ()


def test_successes_close_and_clear_history() -> None:
    """success_threshold successful trials close the breaker with a clean history."""
    record = opened()
    for token in ("a", "b"):
        granted = trial(record, 110.0, token).record
        assert granted is not None
        settled = machine.settle(granted, CONFIG, 111.0, granted.generation, token, Outcome.SUCCESS)
        assert settled is not None
        record = settled
    assert record.state is CLOSED
    assert record.failures == ()
    assert record.openings == 0
    assert record.trials == ()


def test_neutral_trial_releases_without_counting() -> None:
    """A neutral trial outcome gives the permit back and counts no success."""
    granted = trial(opened(), 110.0).record
    assert granted is not None
    new = machine.settle(granted, CONFIG, 111.0, granted.generation, "t1", Outcome.NEUTRAL)
    assert new is not None
    assert (new.state, new.successes, new.trials) == (HALF_OPEN, 0, ())


def test_failed_trial_reopens_for_full_timeout() -> None:
    """One failed trial re-opens the breaker for a full timeout."""
    granted = trial(opened(), 110.0).record
    assert granted is not None
    new = machine.settle(granted, CONFIG, 112.0, granted.generation, "t1", Outcome.FAILURE)
    assert new is not None
    assert new.state is OPEN
    assert machine.time_until_retry(new, CONFIG, 112.0) == 10.0
    assert new.generation == granted.generation + 1


def test_backoff_multiplies_timeout_up_to_cap() -> None:
    """Consecutive re-openings back the open period off, up to max_timeout."""
    config = CONFIG.replace(backoff_multiplier=2.0, max_timeout=35.0)
    record = opened(config=config)
    durations = [record.open_duration]
    now = 100.0
    for _ in range(4):
        now += record.open_duration
        admission = machine.admit(record, config, now, lambda: "t")
        assert admission.record is not None
        failed = machine.settle(
            admission.record, config, now, admission.generation, "t", Outcome.FAILURE
        )
        assert failed is not None
        record = failed
        durations.append(record.open_duration)
    assert durations == [10.0, 20.0, 35.0, 35.0, 35.0]


def test_closing_resets_backoff() -> None:
    """After the breaker closes, the next opening uses the plain timeout again."""
    config = CONFIG.replace(backoff_multiplier=3.0, success_threshold=1)
    granted = machine.admit(opened(config=config), config, 110.0, lambda: "t").record
    assert granted is not None
    reopened = machine.settle(granted, config, 110.0, granted.generation, "t", Outcome.FAILURE)
    assert reopened is not None
    assert reopened.open_duration == 30.0
    granted = machine.admit(reopened, config, 140.0, lambda: "u").record
    assert granted is not None
    closed = machine.settle(granted, config, 140.0, granted.generation, "u", Outcome.SUCCESS)
    assert closed is not None
    assert closed.state is CLOSED
    for _ in range(3):
        closed = fail(closed, 150.0, config)
    assert closed.open_duration == 10.0


def test_stale_generation_is_ignored() -> None:
    """An outcome from a call admitted before the last state change moves nothing."""
    record = opened()
    assert machine.settle(record, CONFIG, 101.0, 0, None, Outcome.FAILURE) is None
    granted = trial(record, 110.0).record
    assert granted is not None
    assert machine.settle(granted, CONFIG, 111.0, 0, None, Outcome.SUCCESS) is None


def test_unknown_trial_token_is_ignored() -> None:
    """A report for a permit the record does not hold moves nothing."""
    granted = trial(opened(), 110.0).record
    assert granted is not None
    assert (
        machine.settle(granted, CONFIG, 111.0, granted.generation, "other", Outcome.FAILURE) is None
    )


def test_force_open_is_open_until_reset() -> None:
    """A forced-open breaker stays open with an infinite time until retry."""
    record = machine.force_open(INITIAL_RECORD, 0.0)
    assert record.generation == 1
    assert machine.view(record, CONFIG, 1e12) is OPEN
    assert machine.time_until_retry(record, CONFIG, 1e12) == math.inf
    assert machine.admit(record, CONFIG, 1e12, lambda: "t").retry_after == math.inf
    reset = machine.reset(record, 5.0)
    assert reset.state is CLOSED
    assert reset.generation == 2


def test_reset_from_closed_is_a_state_change() -> None:
    """Reset bumps the generation even from closed, so older outcomes are stale."""
    record = fail(INITIAL_RECORD, 1.0)
    reset = machine.reset(record, 2.0)
    assert reset.failures == ()
    assert machine.settle(reset, CONFIG, 3.0, record.generation, None, Outcome.FAILURE) is None


def test_future_open_time_counts_as_now() -> None:
    """A stored opening time in the future never lengthens the open period."""
    record = opened(now=1000.0)
    assert machine.time_until_retry(record, CONFIG, 500.0) == 10.0
    assert machine.view(record, CONFIG, 500.0) is OPEN


def test_future_lease_is_clamped_when_rewritten() -> None:
    """A lease granted in the future is taken as granted now when the record is rewritten."""
    config = CONFIG.replace(half_open_max_calls=2)
    granted = machine.admit(opened(), config, 2000.0, lambda: "a").record
    assert granted is not None
    second = machine.admit(granted, config, 150.0, lambda: "b").record
    assert second is not None
    assert second.trials == (("a", 150.0), ("b", 150.0))


def test_zero_timeout_is_half_open_at_once() -> None:
    """With timeout 0 an opened breaker admits a trial straight away."""
    config = CONFIG.replace(timeout=0.0)
    assert machine.view(opened(config=config), config, 100.0) is HALF_OPEN


# -- properties over random histories ------------------------------------------

configs = st.builds(
    CircuitBreakerConfig,
    failure_threshold=st.integers(1, 5),
    success_threshold=st.integers(1, 3),
    timeout=st.sampled_from([0.0, 1.0, 5.0, 30.0]),
    window_size=st.sampled_from([1.0, 10.0, 60.0]),
    half_open_max_calls=st.integers(1, 4),
    trial_lease=st.sampled_from([1.0, 5.0, 100.0]),
    backoff_multiplier=st.sampled_from([1.0, 2.0]),
)
steps = st.lists(
    st.tuples(
        st.sampled_from(["admit", "success", "failure", "neutral", "stale"]),
        st.floats(0.0, 20.0, allow_nan=False),
        st.integers(0, 10),
    ),
    max_size=80,
)


@dataclass
class World:
    """A record as one storage would keep it, and the calls it admitted."""

    config: CircuitBreakerConfig
    record: BreakerRecord = INITIAL_RECORD
    now: float = 1000.0
    running: list[tuple[int, str | None, float]] = field(default_factory=list)
    failure_times: list[float] = field(default_factory=list)
    serial: int = 0

    def step(self, action: str, dt: float, pick: int) -> None:
        self.now += dt
        before = self.record
        if action == "admit":
            self.serial += 1
            serial = f"t{self.serial}"
            admission = machine.admit(before, self.config, self.now, lambda: serial)
            if not admission.allowed:
                check_rejection(before, self.config, self.now)
                return
            if admission.record is not None:
                self.record = admission.record
            self.running.append((admission.generation, admission.token, self.now))
            check_trials(self)
            return
        if action == "stale":
            new = machine.settle(
                before,
                self.config,
                self.now,
                before.generation - 1 - pick % 3,
                None,
                Outcome.FAILURE,
            )
            assert new is None, "an outcome from an older generation moved the state"
            return
        if not self.running:
            return
        generation, token, _ = self.running.pop(pick % len(self.running))
        outcome = Outcome(action)
        new = machine.settle(before, self.config, self.now, generation, token, outcome)
        if generation != before.generation:
            assert new is None, "a stale outcome moved the state"
        if new is None:
            return
        assert new.version == before.version + 1
        if outcome is Outcome.FAILURE and token is None:
            self.failure_times.append(self.now)
        if new.state is OPEN and before.state is CLOSED:
            recent = [t for t in self.failure_times if self.now - t < self.config.window_size]
            assert len(recent) >= self.config.failure_threshold
        if new.generation != before.generation:
            self.failure_times.clear()
        self.record = new


def check_rejection(record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> None:
    """A rejection happens only while open (before timeout) or with every trial taken."""
    if (
        record.state is OPEN
        and not record.forced
        and now - record.changed_at < record.open_duration
    ):
        return
    state = machine.view(record, config, now)
    assert state is not CLOSED
    if state is HALF_OPEN and record.state is HALF_OPEN:
        live = [t for t in record.trials if now - t[1] < config.trial_lease]
        assert len(live) >= config.half_open_max_calls


def check_trials(world: World) -> None:
    """Never more than half_open_max_calls unexpired trials are running."""
    live = [
        token
        for generation, token, started in world.running
        if token is not None
        and generation == world.record.generation
        and world.now - started < world.config.trial_lease
    ]
    assert len(live) <= world.config.half_open_max_calls


@settings(max_examples=300, deadline=None)
@given(config=configs, history=steps)
def test_random_histories_keep_every_invariant(
    config: CircuitBreakerConfig, history: list[tuple[str, float, int]]
) -> None:
    """Random histories never exceed trials, open early, or let stale outcomes count."""
    world = World(config)
    for action, dt, pick in history:
        world.step(action, dt, pick)


@settings(max_examples=200, deadline=None)
@given(config=configs, opened_at=st.floats(0, 1e6), later=st.floats(0, 1e3))
def test_open_breaker_never_admits_before_timeout(
    config: CircuitBreakerConfig, opened_at: float, later: float
) -> None:
    """No call is admitted while less than the open period has passed."""
    record = opened(now=opened_at, config=config)
    admission = machine.admit(record, config, opened_at + later, lambda: "t")
    if later < record.open_duration:
        assert not admission.allowed
        assert admission.retry_after > 0
    else:
        assert admission.allowed


@settings(max_examples=200, deadline=None)
@given(
    config=configs,
    gaps=st.lists(st.floats(0.0, 30.0, allow_nan=False), min_size=1, max_size=30),
)
def test_never_opens_with_fewer_failures_than_threshold_in_window(
    config: CircuitBreakerConfig, gaps: list[float]
) -> None:
    """Opening needs failure_threshold failures inside the window."""
    record, now, times = INITIAL_RECORD, 0.0, []
    for gap in gaps:
        now += gap
        times.append(now)
        record = fail(record, now, config)
        recent = [t for t in times if now - t < config.window_size]
        assert (record.state is OPEN) == (len(recent) >= config.failure_threshold)
        if record.state is OPEN:
            break


@given(
    record=st.builds(
        BreakerRecord,
        state=st.sampled_from(CircuitState),
        version=st.integers(0, 2**53),
        generation=st.integers(0, 2**53),
        changed_at=st.floats(allow_nan=False, allow_infinity=False),
        open_duration=st.floats(0, 1e9),
        openings=st.integers(0, 1000),
        forced=st.booleans(),
        failures=st.lists(st.floats(allow_nan=False, allow_infinity=False)).map(tuple),
        successes=st.integers(0, 100),
        trials=st.lists(st.tuples(st.text(), st.floats(0, 1e12))).map(tuple),
    )
)
def test_record_round_trips_through_dict(record: BreakerRecord) -> None:
    """to_dict/from_dict is lossless for every field."""
    import json

    assert BreakerRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "state"),
        ({"state": "sideways", "version": 1}, "sideways"),
        ({"state": "open", "version": "1"}, "int"),
        ({"state": "open", "version": 1, "format": 99}, "format"),
    ],
)
def test_malformed_record_dict_is_refused(data: dict[str, object], problem: str) -> None:
    """from_dict refuses data it does not understand, naming the problem."""
    with pytest.raises(ValueError, match=problem):
        BreakerRecord.from_dict(data)
