"""The pure state machine: every transition, and properties over random histories."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybreaker import BreakerRecord, CircuitBreakerConfig, CircuitState, WindowStats
from anybreaker import _machine as machine
from anybreaker._machine import Outcome, Tally
from anybreaker.storage._protocol import INITIAL_RECORD

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
SUCCESS, FAILURE = Outcome.SUCCESS, Outcome.FAILURE
CONFIG = CircuitBreakerConfig(
    failure_threshold=3, success_threshold=2, timeout=10.0, window_size=60.0
)


def outcomes(
    record: BreakerRecord,
    now: float,
    *results: Outcome,
    config: CircuitBreakerConfig = CONFIG,
    slow: bool = False,
) -> BreakerRecord:
    """Write closed-state ``results`` (all at ``now``) in one tally; return the new record."""
    tally = Tally(record.generation)
    for result in results:
        tally.add(machine.bucket_start(now, config), result, slow)
    new = machine.record_outcomes(record, config, now, tally)
    assert new is not None
    assert new.version == record.version + 1
    return new


def fail(record: BreakerRecord, now: float, config: CircuitBreakerConfig = CONFIG) -> BreakerRecord:
    """Report one failed closed-state call."""
    return outcomes(record, now, FAILURE, config=config)


def opened(now: float = 100.0, config: CircuitBreakerConfig = CONFIG) -> BreakerRecord:
    """A record that opened at ``now`` after threshold failures."""
    assert config.failure_threshold is not None
    record = outcomes(INITIAL_RECORD, now, *[FAILURE] * config.failure_threshold, config=config)
    assert record.state is OPEN
    return record


def trial(
    record: BreakerRecord, now: float, token: str = "t1", config: CircuitBreakerConfig = CONFIG
) -> machine.Admission:
    """Ask for a trial and check it was granted."""
    admission = machine.admit(record, config, now, lambda: token)
    assert admission.allowed
    assert admission.record is not None
    return admission


def settle(
    admission: machine.Admission,
    now: float,
    outcome: Outcome,
    config: CircuitBreakerConfig = CONFIG,
    slow: bool = False,
) -> BreakerRecord | None:
    assert admission.record is not None
    assert admission.token is not None
    return machine.settle(
        admission.record, config, now, admission.generation, admission.token, outcome, slow
    )


# -- closed: the window and the trip rules --------------------------------------


def test_closed_admits_without_writing() -> None:
    """A closed breaker admits a call and has nothing to write."""
    admission = machine.admit(INITIAL_RECORD, CONFIG, 0.0, lambda: "t")
    assert admission.allowed
    assert admission.record is None
    assert admission.token is None


def test_successes_are_counted_in_the_window() -> None:
    """Successes join the window's calls, and never open the failure-count rule."""
    record = outcomes(INITIAL_RECORD, 5.0, *[SUCCESS] * 50)
    assert record.state is CLOSED
    assert machine.window_stats(record, 60.0, 5.0) == WindowStats(50, 0, 0, 0, 0.0)


def test_failures_below_threshold_stay_closed() -> None:
    """Fewer than failure_threshold failures in the window keep it closed."""
    record = fail(fail(INITIAL_RECORD, 0.0), 1.0)
    assert record.state is CLOSED
    assert machine.window_stats(record, 60.0, 1.0).failures == 2


def test_threshold_failures_in_window_open() -> None:
    """The failure that reaches failure_threshold in the window opens the breaker."""
    record = fail(fail(fail(INITIAL_RECORD, 0.0), 10.0), 20.0)
    assert record.state is OPEN
    assert record.changed_at == 20.0
    assert record.open_duration == 10.0
    # The window stays readable while open.
    assert machine.window_stats(record, 60.0, 20.0).failures == 3


@pytest.mark.parametrize(
    ("first", "last", "opens"),
    [
        # Buckets of 6 s: a failure counts until its bucket is the 11th newest.
        (0.0, 59.99, True),
        (5.99, 60.0, False),  # the first failure's bucket [0, 6) left the window at 60
        (0.0, 54.0, True),
        (6.0, 65.99, True),
    ],
)
def test_a_failure_counts_for_the_window_to_one_bucket(
    first: float, last: float, opens: bool
) -> None:
    """A failure counts while its bucket is one of the last ten: 0.9 to 1.0 window_size."""
    record = fail(fail(INITIAL_RECORD, first), first + 1e-3)
    record = fail(record, last)
    assert (record.state is OPEN) is opens


def test_stale_counts_change_nothing() -> None:
    """Counts of an older generation, or arriving while not closed, are not applied."""
    record = fail(INITIAL_RECORD, 0.0)
    old = Tally(record.generation - 1)
    old.add(0.0, FAILURE)
    assert machine.record_outcomes(record, CONFIG, 0.0, old) is None
    late = Tally(opened().generation)
    late.add(0.0, FAILURE)
    assert machine.record_outcomes(opened(), CONFIG, 100.0, late) is None
    assert machine.record_outcomes(record, CONFIG, 0.0, Tally(record.generation)) is None


def test_record_size_is_bounded_by_the_bucket_count() -> None:
    """However many outcomes and however long, the window holds at most ten buckets."""
    config = CONFIG.replace(failure_threshold=None, consecutive_failures=10**9)
    record = INITIAL_RECORD
    for second in range(600):
        record = outcomes(record, float(second), FAILURE, SUCCESS, config=config)
    assert record.state is CLOSED
    assert len(record.buckets) == 10
    assert machine.window_stats(record, 60.0, 599.0).calls == 2 * 60


@pytest.mark.parametrize(
    ("failures", "successes", "opens"),
    [(5, 4, True), (4, 5, False), (8, 0, False), (9, 0, True), (3, 6, False)],
)
def test_failure_rate_needs_minimum_calls_and_the_share(
    failures: int, successes: int, opens: bool
) -> None:
    """The rate rule opens at minimum_calls calls once failures reach the share."""
    config = CircuitBreakerConfig(
        failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=10
    )
    record = outcomes(INITIAL_RECORD, 1.0, *[SUCCESS] * successes, FAILURE, config=config)
    record = outcomes(record, 2.0, *[FAILURE] * (failures - 1), SUCCESS, config=config)
    assert (record.state is OPEN) is opens


def test_consecutive_failures_end_with_a_success_across_writes() -> None:
    """The streak spans writes; a success in a later write ends it."""
    config = CircuitBreakerConfig(failure_threshold=None, consecutive_failures=3)
    record = outcomes(INITIAL_RECORD, 1.0, FAILURE, FAILURE, config=config)
    assert record.consecutive_failures == 2
    record = outcomes(record, 2.0, SUCCESS, FAILURE, config=config)
    assert (record.state, record.consecutive_failures) == (CLOSED, 1)
    record = outcomes(record, 3.0, FAILURE, FAILURE, config=config)
    assert record.state is OPEN


def test_tallies_merge_in_order() -> None:
    """Merging a later tally adds counts and carries the streak as the later one says."""
    first = Tally(0)
    first.add(0.0, FAILURE)
    first.add(0.0, FAILURE)
    later = Tally(0)
    later.add(6.0, FAILURE)
    first.merge(later)
    assert (first.streak, first.reset_streak) == (3, False)
    again = Tally(0)
    again.add(6.0, SUCCESS)
    again.add(6.0, FAILURE)
    first.merge(again)
    assert (first.streak, first.reset_streak) == (1, True)
    assert first.buckets == {0.0: [2, 2, 0], 6.0: [3, 2, 0]}


def test_slow_call_rate_opens() -> None:
    """The slow-call rule opens once slow calls reach the share of minimum_calls calls."""
    config = CircuitBreakerConfig(
        failure_threshold=None,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        minimum_calls=4,
    )
    record = outcomes(INITIAL_RECORD, 1.0, SUCCESS, SUCCESS, config=config)
    record = outcomes(record, 1.0, SUCCESS, config=config, slow=True)
    assert record.state is CLOSED
    record = outcomes(record, 1.0, SUCCESS, config=config, slow=True)
    assert record.state is OPEN


def test_a_trip_rule_of_ones_own_sees_the_window() -> None:
    """``trip`` gets the window's numbers after the counts are merged; True opens."""
    seen: list[WindowStats] = []

    def trip(stats: WindowStats) -> bool:
        seen.append(stats)
        return stats.calls >= 3 and stats.failures >= 2

    config = CircuitBreakerConfig(failure_threshold=None, trip=trip)
    tally = Tally(0)
    tally.add(0.0, SUCCESS)
    tally.add(0.0, FAILURE)
    record = machine.record_outcomes(INITIAL_RECORD, config, 1.0, tally, trip)
    assert record is not None
    assert record.state is CLOSED
    tally = Tally(0)
    tally.add(0.0, FAILURE)
    record = machine.record_outcomes(record, config, 1.0, tally, trip)
    assert record is not None
    assert record.state is OPEN
    assert seen[-1] == WindowStats(3, 2, 0, 2, 2 / 3)


# -- open and half-open -----------------------------------------------------------


def test_open_rejects_until_timeout() -> None:
    """An open breaker rejects, saying how long until a trial."""
    record = opened(now=100.0)
    admission = machine.admit(record, CONFIG, 104.0, lambda: "t")
    assert not admission.allowed
    assert admission.state is OPEN
    assert admission.retry_after == pytest.approx(6.0)


def test_open_turns_half_open_after_timeout() -> None:
    """After timeout the view is half-open and a trial is granted with a write."""
    record = opened(now=100.0)
    assert machine.view(record, CONFIG, 109.9) is OPEN
    assert machine.view(record, CONFIG, 110.0) is HALF_OPEN
    admission = trial(record, 110.0)
    assert admission.record is not None
    assert admission.record.state is HALF_OPEN
    assert admission.record.generation == record.generation + 1
    assert admission.record.trials == (("t1", 110.0),)


def test_half_open_limits_trials() -> None:
    """Only half_open_max_calls trials run at once; the refusal says HALF_OPEN, retry soon."""
    granted = trial(opened(), 110.0)
    assert granted.record is not None
    refused = machine.admit(granted.record, CONFIG, 111.0, lambda: "t2")
    assert not refused.allowed
    assert refused.state is HALF_OPEN
    assert 0 < refused.retry_after <= machine.HALF_OPEN_RETRY


def test_expired_lease_frees_its_permit() -> None:
    """A permit never reported expires after trial_lease."""
    granted = trial(opened(), 110.0)
    assert granted.record is not None
    later = 110.0 + CONFIG.trial_lease
    assert machine.admit(granted.record, CONFIG, later, lambda: "t2").allowed


def test_report_after_lease_expired_is_neutral() -> None:
    """A failure reported after the lease expired does not re-open the breaker."""
    granted = trial(opened(), 110.0)
    new = settle(granted, 110.0 + CONFIG.trial_lease, FAILURE)
    assert new is not None
    assert new.state is HALF_OPEN
    assert new.trials == ()


def test_successes_close_and_clear_the_window() -> None:
    """success_threshold successful trials close the breaker with an empty window."""
    first = trial(opened(), 110.0, "a")
    after_first = settle(first, 111.0, SUCCESS)
    assert after_first is not None
    assert after_first.state is HALF_OPEN
    second = trial(after_first, 112.0, "b")
    closed = settle(second, 113.0, SUCCESS)
    assert closed is not None
    assert closed.state is CLOSED
    assert (closed.buckets, closed.consecutive_failures, closed.openings) == ((), 0, 0)


def test_neutral_trial_releases_without_counting() -> None:
    """A neutral trial gives its permit back and counts no success."""
    granted = trial(opened(), 110.0)
    new = settle(granted, 111.0, Outcome.NEUTRAL)
    assert new is not None
    assert (new.state, new.successes, new.trials) == (HALF_OPEN, 0, ())


def test_failed_trial_reopens_for_full_timeout() -> None:
    """One failed trial re-opens the breaker for a full timeout."""
    new = settle(trial(opened(), 110.0), 115.0, FAILURE)
    assert new is not None
    assert new.state is OPEN
    assert machine.time_until_retry(new, CONFIG, 115.0) == pytest.approx(10.0)


def test_slow_trial_fails_when_a_slow_rule_is_set() -> None:
    """A slow successful trial re-opens the breaker when slow calls can trip it."""
    config = CONFIG.replace(slow_call_duration=1.0, slow_call_rate_threshold=0.5)
    granted = trial(opened(config=config), 110.0, config=config)
    new = settle(granted, 115.0, SUCCESS, config=config, slow=True)
    assert new is not None
    assert new.state is OPEN
    lenient = settle(trial(opened(), 110.0), 115.0, SUCCESS, slow=True)
    assert lenient is not None
    assert lenient.state is HALF_OPEN


def test_backoff_multiplies_timeout_up_to_cap() -> None:
    """Each re-opening in a row multiplies the open period, up to max_timeout."""
    config = CONFIG.replace(backoff_multiplier=2.0, max_timeout=35.0)
    record = opened(config=config)
    durations = [record.open_duration]
    now = 100.0
    for _ in range(4):
        now += record.open_duration
        record_ = settle(trial(record, now, config=config), now, FAILURE, config=config)
        assert record_ is not None
        record = record_
        durations.append(record.open_duration)
    assert durations == [10.0, 20.0, 35.0, 35.0, 35.0]


def test_backoff_overflow_opens_until_reset() -> None:
    """A back-off that overflows a float with no max_timeout is open until reset."""
    config = CONFIG.replace(backoff_multiplier=1e300)
    assert config.open_duration(5) == math.inf


def test_closing_resets_backoff() -> None:
    """After the breaker closes, the next opening uses the plain timeout again."""
    config = CONFIG.replace(backoff_multiplier=2.0, success_threshold=1)
    record = opened(config=config)
    reopened = settle(trial(record, 110.0, config=config), 110.0, FAILURE, config=config)
    assert reopened is not None
    assert reopened.open_duration == 20.0
    closed = settle(trial(reopened, 130.0, config=config), 130.0, SUCCESS, config=config)
    assert closed is not None
    assert closed.state is CLOSED
    assert opened(now=200.0, config=config).open_duration == 10.0
    again = fail(fail(fail(closed, 200.0, config), 200.0, config), 200.0, config)
    assert again.open_duration == 10.0


def test_stale_generation_and_unknown_token_are_ignored() -> None:
    """A trial outcome from another generation, or for a permit not held, changes nothing."""
    granted = trial(opened(), 110.0)
    assert granted.record is not None
    record = granted.record
    assert machine.settle(record, CONFIG, 111.0, record.generation - 1, "t1", FAILURE) is None
    assert machine.settle(record, CONFIG, 111.0, record.generation, "nope", FAILURE) is None


def test_force_open_is_open_until_reset() -> None:
    """force_open opens with no end; reset closes and clears the window."""
    record = machine.force_open(fail(INITIAL_RECORD, 0.0), 5.0)
    assert record.state is OPEN
    assert record.forced
    assert machine.time_until_retry(record, CONFIG, 1e12) == math.inf
    closed = machine.reset(record, 6.0)
    assert (closed.state, closed.buckets, closed.generation) == (
        CLOSED,
        (),
        record.generation + 1,
    )


def test_reset_from_closed_is_a_state_change() -> None:
    """reset bumps the generation even from closed, so older outcomes stop counting."""
    record = fail(INITIAL_RECORD, 0.0)
    assert machine.reset(record, 1.0).generation == record.generation + 1


def test_open_for_opens_exactly_that_long() -> None:
    """open_for opens for the given seconds from now, then half-open as usual."""
    record = machine.open_for(INITIAL_RECORD, CONFIG, 100.0, 2.5)
    assert record is not None
    assert machine.time_until_retry(record, CONFIG, 100.0) == 2.5
    assert machine.view(record, CONFIG, 102.5) is HALF_OPEN
    forced = machine.force_open(INITIAL_RECORD, 100.0)
    shortened = machine.open_for(forced, CONFIG, 100.0, 1.0)
    assert shortened is not None
    assert not shortened.forced


def test_retry_after_only_lengthens_an_opening() -> None:
    """With extend_only, an opening that lasts longer already is left as it is."""
    record = opened(now=100.0)
    assert machine.open_for(record, CONFIG, 100.0, 5.0, extend_only=True) is None
    longer = machine.open_for(record, CONFIG, 100.0, 50.0, extend_only=True)
    assert longer is not None
    assert machine.time_until_retry(longer, CONFIG, 100.0) == 50.0


def test_open_for_keeps_the_counts_that_led_to_it() -> None:
    """The counts written with an opening stay in its window."""
    tally = Tally(0)
    tally.add(machine.bucket_start(100.0, CONFIG), FAILURE)
    record = machine.open_for(INITIAL_RECORD, CONFIG, 100.0, 30.0, tally, extend_only=True)
    assert record is not None
    assert machine.window_stats(record, 60.0, 100.0).failures == 1


def test_zero_timeout_is_half_open_at_once() -> None:
    """With timeout 0 an opening is half-open at once."""
    config = CONFIG.replace(timeout=0.0)
    record = opened(config=config)
    assert machine.view(record, config, 100.0) is HALF_OPEN


# -- clocks that step back ------------------------------------------------------


def test_rebase_moves_future_times_to_now_once() -> None:
    """A record from the future is rebased to now: its open period counts from now."""
    record = opened(now=3700.0)  # opened "an hour from now"
    rebased = machine.rebase(record, CONFIG, 100.0)
    assert rebased.changed_at == 100.0
    assert machine.time_until_retry(rebased, CONFIG, 110.0) == 0.0
    assert machine.rebase(rebased, CONFIG, 105.0) is rebased


def test_rebase_clamps_leases_and_buckets() -> None:
    """Trial permits and window buckets from the future count as granted and counted now."""
    granted = trial(opened(now=3700.0), 3710.0)
    assert granted.record is not None
    rebased = machine.rebase(granted.record, CONFIG, 100.0)
    assert rebased.trials == (("t1", 100.0),)
    assert machine.admit(rebased, CONFIG, 100.0 + CONFIG.trial_lease, lambda: "t2").allowed
    future = fail(INITIAL_RECORD, 7200.0)
    clamped = machine.rebase(future, CONFIG, 100.0)
    assert machine.window_stats(clamped, 60.0, 100.0).failures == 1
    assert machine.window_stats(clamped, 60.0, 160.0).failures == 0


# -- records ----------------------------------------------------------------------


@given(
    record=st.builds(
        BreakerRecord,
        state=st.sampled_from(CircuitState),
        version=st.integers(0, 2**63),
        generation=st.integers(0, 2**63),
        changed_at=st.floats(allow_nan=False, allow_infinity=False),
        open_duration=st.one_of(st.floats(0, 1e12), st.just(math.inf)),
        openings=st.integers(0, 1000),
        forced=st.booleans(),
        window_size=st.floats(0, 1e9),
        buckets=st.lists(
            st.tuples(
                st.floats(allow_nan=False, allow_infinity=False),
                st.integers(2**40, 2**62),
                st.integers(0, 2**40),
                st.integers(0, 2**40),
            ),
            max_size=12,
        ).map(tuple),
        consecutive_failures=st.integers(0, 2**62),
        successes=st.integers(0, 100),
        trials=st.lists(st.tuples(st.text(), st.floats(0, 1e12))).map(tuple),
    )
)
def test_record_round_trips_through_json(record: BreakerRecord) -> None:
    """to_dict/from_dict through JSON is lossless for every field."""
    assert BreakerRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_record_of_release_0_1_reads_with_its_failures() -> None:
    """A format-1 record's failure times become counts that keep counting."""
    old: dict[str, Any] = {
        "format": 1,
        "state": "closed",
        "version": 4,
        "generation": 2,
        "changed_at": 50.0,
        "open_duration": 0.0,
        "openings": 0,
        "forced": False,
        "failures": [90.0, 95.5],
        "successes": 0,
        "trials": [],
    }
    record = BreakerRecord.from_dict(old)
    assert (record.version, record.generation, record.consecutive_failures) == (4, 2, 2)
    assert machine.window_stats(record, 60.0, 100.0).failures == 2
    # The next failure opens it (threshold 3): the old failures still count.
    assert fail(record, 100.0).state is OPEN


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "state"),
        ({"state": "sideways", "version": 1}, "sideways"),
        ({"state": "open", "version": "1"}, "int"),
        ({"state": "open", "version": 1, "format": 99}, "format"),
        ({"state": "open", "version": 1, "format": 2, "changed_at": math.inf}, "finite"),
        ({"state": "open", "version": 1, "format": 2, "changed_at": math.nan}, "NaN"),
        ({"state": "open", "version": -1, "format": 2}, ">= 0"),
        ({"state": "closed", "version": 1, "format": 2, "buckets": [[0.0, 1, 2, 0]]}, "more"),
        ({"state": "closed", "version": 1, "format": 2, "buckets": [[0.0, 1]]}, "unpack"),
    ],
)
def test_malformed_record_dict_is_refused(data: dict[str, object], problem: str) -> None:
    """from_dict refuses data it does not understand, naming the problem."""
    with pytest.raises(ValueError, match=problem):
        BreakerRecord.from_dict(data)


def test_an_overflowing_time_from_json_is_refused() -> None:
    """``1e400`` in stored JSON reads as infinity, and is refused like NaN."""
    data = json.loads('{"format": 2, "state": "open", "version": 1, "changed_at": 1e400}')
    with pytest.raises(ValueError, match="finite"):
        BreakerRecord.from_dict(data)


# -- random histories against a model of the documented rules ----------------------


@st.composite
def configs(draw: st.DrawFn) -> CircuitBreakerConfig:
    """Settings with any mix of the count, rate and streak rules (at least one set)."""
    rules: dict[str, Any] = {
        "failure_threshold": draw(st.one_of(st.none(), st.integers(1, 6))),
        "failure_rate_threshold": draw(st.one_of(st.none(), st.sampled_from([0.25, 0.5, 1.0]))),
        "consecutive_failures": draw(st.one_of(st.none(), st.integers(1, 5))),
    }
    if all(rule is None for rule in rules.values()):
        rules["failure_threshold"] = draw(st.integers(1, 6))
    return CircuitBreakerConfig(
        success_threshold=draw(st.integers(1, 3)),
        timeout=draw(st.floats(0.0, 30.0)),
        window_size=draw(st.sampled_from([1.0, 10.0, 60.0])),
        half_open_max_calls=draw(st.integers(1, 3)),
        trial_lease=draw(st.floats(1.0, 50.0)),
        backoff_multiplier=draw(st.sampled_from([1.0, 2.0])),
        minimum_calls=draw(st.integers(1, 8)),
        **rules,
    )


steps = st.lists(
    st.tuples(
        st.sampled_from(["admit", "success", "failure", "neutral", "stale", "batch"]),
        st.floats(0.0, 20.0, allow_nan=False),
        st.integers(0, 10),
    ),
    max_size=80,
)


@dataclass
class Reference:
    """The documented rules, computed from every outcome's time: the model."""

    config: CircuitBreakerConfig
    outcomes: list[tuple[float, bool]] = field(default_factory=list)
    streak: int = 0

    def add(self, now: float, failed: bool) -> None:
        self.outcomes.append((now, failed))
        self.streak = self.streak + 1 if failed else 0

    def trips(self, now: float) -> bool:
        """Whether the rules say open, counting outcomes in the last ten buckets."""
        width = self.config.window_size / 10
        current = now // width
        counted = [failed for at, failed in self.outcomes if at // width > current - 10]
        calls, failures = len(counted), sum(counted)
        config = self.config
        if config.consecutive_failures is not None and self.streak >= config.consecutive_failures:
            return True
        if config.failure_threshold is not None and failures >= config.failure_threshold:
            return True
        rate = config.failure_rate_threshold
        return rate is not None and calls >= config.minimum_calls and failures >= rate * calls

    def clear(self) -> None:
        self.outcomes.clear()
        self.streak = 0


@dataclass
class World:
    """A record as one storage would keep it, the calls it admitted, and the model."""

    config: CircuitBreakerConfig
    record: BreakerRecord = INITIAL_RECORD
    now: float = 1000.0
    running: list[tuple[int, str | None, float]] = field(default_factory=list)
    serial: int = 0
    model: Reference = field(init=False)

    def __post_init__(self) -> None:
        self.model = Reference(self.config)

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
            tally = Tally(before.generation - 1 - pick % 3)
            tally.add(machine.bucket_start(self.now, self.config), FAILURE)
            new = machine.record_outcomes(before, self.config, self.now, tally)
            assert new is None, "counts from an older generation moved the state"
            return
        if not self.running:
            return
        batch = self.running if action == "batch" else [self.running[pick % len(self.running)]]
        closed_calls = [call for call in batch if call[1] is None]
        for call in list(batch):
            self.running.remove(call)
            generation, token, _ = call
            if token is None:
                continue
            outcome = Outcome.FAILURE if pick % 2 else Outcome.SUCCESS
            if action in ("success", "failure", "neutral"):
                outcome = Outcome(action)
            new = machine.settle(self.record, self.config, self.now, generation, token, outcome)
            if generation != self.record.generation:
                assert new is None, "a stale trial outcome moved the state"
            if new is not None:
                assert new.version == self.record.version + 1
                if new.state is CLOSED:
                    self.model.clear()
                self.record = new
        self.closed_outcomes(action, pick, closed_calls)

    def closed_outcomes(
        self, action: str, pick: int, calls: list[tuple[int, str | None, float]]
    ) -> None:
        tally = Tally(self.record.generation)
        current = [call for call in calls if call[0] == self.record.generation]
        for index, _ in enumerate(current):
            failed = action == "failure" or (action == "batch" and (pick + index) % 3 == 0)
            if action == "neutral":
                continue
            tally.add(machine.bucket_start(self.now, self.config), FAILURE if failed else SUCCESS)
            if self.record.state is CLOSED:
                self.model.add(self.now, failed)
        before = self.record
        new = machine.record_outcomes(before, self.config, self.now, tally)
        if not tally or before.state is not CLOSED:
            assert new is None
            return
        assert new is not None
        should_open = self.model.trips(self.now)
        assert (new.state is OPEN) is should_open, (
            f"the machine says {new.state.value}, the rules say "
            f"{'open' if should_open else 'closed'}: {self.model.outcomes}"
        )
        self.record = new


def check_rejection(record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> None:
    """A rejection happens only while open (before timeout) or with every trial taken."""
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


@settings(max_examples=400, deadline=None)
@given(config=configs(), history=steps)
def test_random_histories_open_exactly_when_the_rules_say(
    config: CircuitBreakerConfig, history: list[tuple[str, float, int]]
) -> None:
    """Random histories open exactly when the model does, and keep every invariant."""
    world = World(config)
    for action, dt, pick in history:
        world.step(action, dt, pick)


@settings(max_examples=200, deadline=None)
@given(config=configs(), opened_at=st.floats(0, 1e6), later=st.floats(0, 1e3))
def test_open_breaker_never_admits_before_timeout(
    config: CircuitBreakerConfig, opened_at: float, later: float
) -> None:
    """No call is admitted while less than the open period has passed."""
    record = machine.open_for(INITIAL_RECORD, config, opened_at, config.timeout)
    assert record is not None
    now = opened_at + later
    admission = machine.admit(record, config, now, lambda: "t")
    if now - opened_at < record.open_duration:
        assert not admission.allowed
        assert admission.retry_after > 0
    else:
        assert admission.allowed
