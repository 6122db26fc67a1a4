"""``StorageTests``: the conformance kit every storage backend must pass.

A backend author subclasses it in a test module and says how to make a
fresh, empty storage; pytest then runs the whole suite on it, under asyncio
and under trio::

    from anybreaker.testing import StorageTests

    class TestMyStorage(StorageTests):
        async def make_storage(self):
            return MyStorage(...)

The kit needs pytest and anyio's pytest plugin (installed with anyio).
"""

from __future__ import annotations

import base64
import importlib.util
import inspect
import itertools
import json
import math
import os
import pickle
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, Final, cast

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from .._breaker import CircuitBreaker
from .._errors import CircuitBreakerOpenError, StorageError
from .._state import CircuitState
from ..storage._protocol import BreakerRecord, Storage
from ._clock import FakeClock

__all__ = ["StorageTests"]

RUNTIMES: Final = ("asyncio", "trio")

MadeStorage = Awaitable[Storage] | AbstractAsyncContextManager[Storage]
"""What ``make_storage`` returns: a storage (from an ``async def``) or a context manager of one."""

# Bounds the waits on other processes and on a failing driver: a hang fails the test.
_DEADLINE: Final = 120.0
_NAME: Final = "model-api"


class _Boom(Exception):
    """The failure of a guarded call in the breaker tests."""


class StorageTests:
    """Conformance tests for a ``Storage`` implementation; subclass it in a test module.

    Define ``make_storage()``; it returns a fresh, empty storage, not yet
    entered (the kit enters it with ``async with`` and closes it). It may
    instead return an async context manager that yields the storage, for
    set-up and clean-up around it (``@contextlib.asynccontextmanager``).
    ``self.tmp_path`` is an empty directory for the test, for storages kept
    in files.

    Opt-ins and settings, as class attributes and methods:

    - ``runtimes``: the runtimes the storage supports; ``("asyncio",)`` for a
      storage built on an asyncio-only driver. Default: both.
    - ``shared_storage_factory()``: for a storage shared between processes,
      a picklable zero-argument callable that opens, in another process, the
      storage ``make_storage()`` made (``functools.partial(MyStorage, path)``).
      The kit then races compare-and-set from several processes.
    - ``make_failing_storage()``: a storage whose driver fails on every
      operation (a server nobody listens on, a file that is not a database).
      The kit then checks that failures surface as ``StorageError``.
    - ``contenders``: tasks racing on one name (default 16); ``processes``:
      processes racing (default 4); ``contention_tasks`` and
      ``contention_outcomes``: the tasks each process runs in the contention
      tests, and the calls each task makes (default 8 and 25). Without
      ``shared_storage_factory()``, the contention tests run their
      "processes" as groups of tasks in this process, each with its own
      breaker object.
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    runtimes: ClassVar[Sequence[str]] = RUNTIMES
    """The runtimes the storage runs under: ``"asyncio"``, ``"trio"`` or both."""
    contenders: ClassVar[int] = 16
    """How many tasks race compare-and-set on one name."""
    processes: ClassVar[int] = 4
    """How many processes race, when ``shared_storage_factory()`` is given."""
    contention_tasks: ClassVar[int] = 8
    """How many tasks each process runs in the contention tests."""
    contention_outcomes: ClassVar[int] = 25
    """How many calls each of those tasks makes."""

    tmp_path: Path
    """An empty directory for this test (set before ``make_storage()`` is called)."""

    # -- what a backend author provides ------------------------------------

    def make_storage(self) -> MadeStorage:
        """Return a fresh, empty storage (override with an ``async def``)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define `async def make_storage(self)` "
            "returning a fresh, empty storage"
        )

    def shared_storage_factory(self) -> Callable[[], Storage] | None:
        """Return a picklable callable opening this test's storage in another process.

        Called after ``make_storage()``. ``None`` (the default): the storage is
        not shared between processes, and the multi-process tests are skipped.
        """
        return None

    def make_failing_storage(self) -> MadeStorage | None:
        """Return a storage whose driver fails on every operation, or ``None`` to skip."""
        return None

    # -- how the kit runs --------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run each async test under every runtime in ``runtimes``."""
        if "anyio_backend" not in metafunc.fixturenames:
            return
        runtimes = tuple(self.runtimes)
        unknown = [runtime for runtime in runtimes if runtime not in RUNTIMES]
        if not runtimes or unknown or isinstance(self.runtimes, str):
            raise ValueError(
                f"{type(self).__name__}.runtimes must be a non-empty tuple of "
                f"{' and '.join(map(repr, RUNTIMES))}, got {self.runtimes!r}"
            )
        metafunc.parametrize(
            "anyio_backend",
            [
                pytest.param(
                    runtime,
                    id=runtime,
                    marks=[]
                    if _installed(runtime)
                    else [pytest.mark.skip(reason=f"{runtime} is not installed")],
                )
                for runtime in runtimes
            ],
        )

    @pytest.fixture
    async def storage_under_test(
        self, anyio_backend: str, tmp_path: Path
    ) -> AsyncIterator[Storage]:
        """The storage ``make_storage()`` made, entered; closed after the test."""
        self.tmp_path = tmp_path
        async with _entered(self.make_storage(), "make_storage") as storage:
            yield storage

    @pytest.fixture
    def clock(self) -> FakeClock:
        """A clock the breaker tests move by hand."""
        return FakeClock()

    def _breaker(self, storage: Storage, clock: FakeClock, **settings: Any) -> CircuitBreaker:
        """A new breaker object on ``storage``, as another process would have one."""
        # "raise" makes a storage failure fail the test instead of falling back.
        settings.setdefault("on_storage_error", "raise")
        settings.setdefault("storage_timeout", 30.0)
        return CircuitBreaker(_NAME, storage=storage, clock=clock, **settings)

    # -- reading and writing one name --------------------------------------

    async def test_get_of_a_missing_name_is_none(self, storage_under_test: Storage) -> None:
        """Reading a name nothing was stored under returns None."""
        assert await storage_under_test.get("never-stored") is None

    async def test_a_fresh_storage_has_no_names(self, storage_under_test: Storage) -> None:
        """``names()`` of a fresh storage is an empty list."""
        assert await storage_under_test.names() == []

    async def test_compare_and_set_none_creates(self, storage_under_test: Storage) -> None:
        """Compare-and-set expecting None stores the record when nothing is stored."""
        record = _record(1, openings=4)
        assert await storage_under_test.compare_and_set(_NAME, None, record) is True
        _assert_same(await storage_under_test.get(_NAME), record)
        assert await storage_under_test.names() == [_NAME]

    async def test_compare_and_set_none_refuses_when_something_is_stored(
        self, storage_under_test: Storage
    ) -> None:
        """Compare-and-set expecting None refuses, and changes nothing, when a record exists."""
        first = _record(1, openings=1)
        assert await storage_under_test.compare_and_set(_NAME, None, first)
        assert (
            await storage_under_test.compare_and_set(_NAME, None, _record(1, openings=2)) is False
        )
        _assert_same(await storage_under_test.get(_NAME), first)

    async def test_compare_and_set_updates_at_the_expected_version(
        self, storage_under_test: Storage
    ) -> None:
        """Compare-and-set expecting the stored version stores the next record."""
        for version in range(1, 21):
            record = _record(version, openings=version)
            expected = version - 1 or None
            assert await storage_under_test.compare_and_set(_NAME, expected, record) is True
            _assert_same(await storage_under_test.get(_NAME), record)

    @pytest.mark.parametrize(("stored", "expected"), [(2, 1), (3, 1), (1, 2), (2, 5)])
    async def test_compare_and_set_refuses_another_version(
        self, storage_under_test: Storage, stored: int, expected: int
    ) -> None:
        """Compare-and-set expecting any other version than the stored one refuses, unchanged."""
        for version in range(1, stored + 1):
            assert await storage_under_test.compare_and_set(
                _NAME, version - 1 or None, _record(version, openings=version)
            )
        refused = _record(expected + 1, openings=999)
        assert await storage_under_test.compare_and_set(_NAME, expected, refused) is False
        _assert_same(await storage_under_test.get(_NAME), _record(stored, openings=stored))

    async def test_compare_and_set_expecting_a_version_refuses_when_nothing_is_stored(
        self, storage_under_test: Storage
    ) -> None:
        """Compare-and-set expecting a version stores nothing when the name is absent."""
        assert await storage_under_test.compare_and_set(_NAME, 1, _record(2)) is False
        assert await storage_under_test.get(_NAME) is None
        assert await storage_under_test.names() == []

    # -- compare_and_set_or_get, where the storage has it (optional) ---------

    async def test_compare_and_set_or_get_stores_as_compare_and_set_does(
        self, storage_under_test: Storage
    ) -> None:
        """Where it stores, ``compare_and_set_or_get`` returns ``(True, None)``."""
        for version in range(1, 4):
            record = _record(version, openings=version)
            assert await _or_get(storage_under_test, version - 1 or None, record) == (
                True,
                None,
            )
            _assert_same(await storage_under_test.get(_NAME), record)

    @pytest.mark.parametrize(("stored", "expected"), [(1, None), (2, 1), (1, 2)])
    async def test_compare_and_set_or_get_refusing_returns_what_is_stored(
        self, storage_under_test: Storage, stored: int, expected: int | None
    ) -> None:
        """Where it refuses, it changes nothing and returns ``(False, the stored record)``."""
        for version in range(1, stored + 1):
            assert await storage_under_test.compare_and_set(
                _NAME, version - 1 or None, _record(version, openings=version)
            )
        refused = _record((expected or 0) + 1, openings=999)
        done, current = await _or_get(storage_under_test, expected, refused)
        assert done is False
        _assert_same(current, _record(stored, openings=stored))
        _assert_same(await storage_under_test.get(_NAME), _record(stored, openings=stored))

    async def test_compare_and_set_or_get_refusing_with_nothing_stored_returns_none(
        self, storage_under_test: Storage
    ) -> None:
        """Expecting a version where nothing is stored: ``(False, None)``, nothing stored."""
        assert await _or_get(storage_under_test, 1, _record(2)) == (False, None)
        assert await storage_under_test.get(_NAME) is None

    async def test_an_update_replaces_every_field(self, storage_under_test: Storage) -> None:
        """A stored record is replaced whole: no field of the previous one survives."""
        rich = _samples()[-1]
        assert await storage_under_test.compare_and_set(_NAME, None, rich)
        plain = BreakerRecord(version=2)
        assert await storage_under_test.compare_and_set(_NAME, 1, plain)
        _assert_same(await storage_under_test.get(_NAME), plain)

    # -- lossless records ----------------------------------------------------

    async def test_every_field_survives_a_round_trip(self, storage_under_test: Storage) -> None:
        """Each sample record reads back equal, field by field and type by type."""
        samples = _samples()
        for index, record in enumerate(samples):
            assert await storage_under_test.compare_and_set(f"sample-{index}", None, record)
        for index, record in enumerate(samples):
            _assert_same(await storage_under_test.get(f"sample-{index}"), record)

    async def test_a_record_reads_back_equal_after_updates(
        self, storage_under_test: Storage
    ) -> None:
        """Each sample, written as an update over another, reads back equal."""
        samples = _samples()
        expected: int | None = None
        for version, record in enumerate([*samples, *reversed(samples)], start=1):
            written = _with_version(record, version)
            assert await storage_under_test.compare_and_set(_NAME, expected, written)
            _assert_same(await storage_under_test.get(_NAME), written)
            expected = version

    # -- names and delete --------------------------------------------------

    async def test_names_lists_exactly_the_names_stored(self, storage_under_test: Storage) -> None:
        """Names that look alike, or carry odd characters, stay distinct records."""
        for index, name in enumerate(_ODD_NAMES):
            assert await storage_under_test.compare_and_set(name, None, _record(1, openings=index))
        names = await storage_under_test.names()
        assert isinstance(names, list)
        assert sorted(names) == sorted(_ODD_NAMES)
        for index, name in enumerate(_ODD_NAMES):
            _assert_same(await storage_under_test.get(name), _record(1, openings=index))

    async def test_delete_removes_one_name(self, storage_under_test: Storage) -> None:
        """``delete()`` removes the record and its name, and leaves the others."""
        for name in ("a", "b", "c"):
            assert await storage_under_test.compare_and_set(name, None, _record(1))
        await storage_under_test.delete("b")
        assert await storage_under_test.get("b") is None
        assert sorted(await storage_under_test.names()) == ["a", "c"]
        _assert_same(await storage_under_test.get("a"), _record(1))

    async def test_delete_of_a_missing_name_does_nothing(self, storage_under_test: Storage) -> None:
        """Deleting a name that has no record is not an error."""
        assert await storage_under_test.compare_and_set("kept", None, _record(1))
        await storage_under_test.delete("never-stored")
        assert await storage_under_test.names() == ["kept"]

    async def test_a_deleted_name_starts_again_from_nothing(
        self, storage_under_test: Storage
    ) -> None:
        """After ``delete()``, only a compare-and-set expecting None stores under the name."""
        assert await storage_under_test.compare_and_set(_NAME, None, _record(1))
        assert await storage_under_test.compare_and_set(_NAME, 1, _record(2))
        await storage_under_test.delete(_NAME)
        assert await storage_under_test.compare_and_set(_NAME, 2, _record(3)) is False
        assert await storage_under_test.get(_NAME) is None
        assert await storage_under_test.compare_and_set(_NAME, None, _record(1, openings=7))
        _assert_same(await storage_under_test.get(_NAME), _record(1, openings=7))

    # -- concurrency -------------------------------------------------------

    async def test_racing_tasks_have_one_winner_per_version(
        self, storage_under_test: Storage
    ) -> None:
        """Tasks racing compare-and-set on one name win each version exactly once."""
        target = 4 * self.contenders
        wins: dict[int, list[int]] = {contender: [] for contender in range(self.contenders)}
        start = anyio.Event()
        async with anyio.create_task_group() as group:
            for contender, won in wins.items():
                group.start_soon(_race_task, storage_under_test, target, contender, start, won)
            start.set()
        await _check_race(storage_under_test, target, wins)

    async def test_concurrent_writes_to_different_names_are_all_kept(
        self, storage_under_test: Storage
    ) -> None:
        """Tasks updating their own names at once lose none of each other's writes."""
        names = [f"breaker-{index}" for index in range(self.contenders)]

        async def update(name: str) -> None:
            for version in range(1, 6):
                await anyio.lowlevel.checkpoint()
                assert await storage_under_test.compare_and_set(
                    name, version - 1 or None, _record(version, openings=version)
                ), f"{name}: compare-and-set at version {version} refused with no rival"

        async with anyio.create_task_group() as group:
            for name in names:
                group.start_soon(update, name)
        assert sorted(await storage_under_test.names()) == sorted(names)
        for name in names:
            _assert_same(await storage_under_test.get(name), _record(5, openings=5))

    async def test_racing_processes_have_one_winner_per_version(
        self, storage_under_test: Storage, anyio_backend: str
    ) -> None:
        """Processes sharing the storage, racing compare-and-set, win each version exactly once."""
        factory = self.shared_storage_factory()
        if factory is None:
            pytest.skip("not shared between processes: define shared_storage_factory() to test it")
        target = 12 * self.processes
        payload = _payload(factory, ("race", target, 2), anyio_backend)
        wins: dict[int, list[int]] = {}
        with anyio.fail_after(_DEADLINE):
            async with AsyncExitStack() as stack:
                children = [
                    await _Child.start(stack, payload, self.tmp_path / f"stderr-{index}.txt")
                    for index in range(self.processes)
                ]
                for child in children:
                    await child.expect("ready")
                for child in children:
                    await child.send("go")
                for child in children:
                    result = json.loads(await child.expect_result())
                    wins.update((int(contender), won) for contender, won in result.items())
        await _check_race(storage_under_test, target, wins)

    async def test_a_write_from_another_process_is_seen(
        self, storage_under_test: Storage, anyio_backend: str
    ) -> None:
        """A record written by another process reads back equal here, and ours there."""
        factory = self.shared_storage_factory()
        if factory is None:
            pytest.skip("not shared between processes: define shared_storage_factory() to test it")
        assert await storage_under_test.compare_and_set(_NAME, None, _samples()[-1])
        payload = _payload(factory, ("see",), anyio_backend)
        with anyio.fail_after(_DEADLINE):
            async with AsyncExitStack() as stack:
                child = await _Child.start(stack, payload, self.tmp_path / "stderr.txt")
                await child.expect("ready")
                await child.send("go")
                await child.expect_result()
        _assert_same(await storage_under_test.get(_NAME), _with_version(_samples()[0], 2))

    # -- lifecycle and failures ----------------------------------------------

    async def test_entering_returns_the_storage(self, tmp_path: Path) -> None:
        """``async with storage as entered`` gives the storage itself, and closes it after."""
        self.tmp_path = tmp_path
        made = self.make_storage()
        if not inspect.isawaitable(made):
            pytest.skip("make_storage() returns a context manager; entering is its own")
        storage = await made
        if not hasattr(storage, "__aenter__"):
            await storage.aclose()
            pytest.skip("a storage of the five methods alone: entering is optional")
        async with cast("AbstractAsyncContextManager[Storage]", storage) as entered:
            assert entered is storage
            assert await entered.names() == []
        with pytest.raises(StorageError, match="close"):
            await storage.names()

    async def test_aclose_twice_is_fine(self, storage_under_test: Storage) -> None:
        """Closing a storage a second time does nothing."""
        await storage_under_test.aclose()
        await storage_under_test.aclose()

    @pytest.mark.parametrize("operation", ["get", "compare_and_set", "delete", "names"])
    async def test_use_after_close_is_a_storage_error(
        self, storage_under_test: Storage, operation: str
    ) -> None:
        """Every operation on a closed storage raises StorageError saying it is closed."""
        assert await storage_under_test.compare_and_set(_NAME, None, _record(1))
        await storage_under_test.aclose()
        with pytest.raises(StorageError, match=r"(?i)close"):
            await _call(storage_under_test, operation)

    async def test_staleness_is_seconds(self, storage_under_test: Storage) -> None:
        """A ``staleness`` attribute, if the storage has one, is a finite number of seconds >= 0."""
        staleness = getattr(storage_under_test, "staleness", 0.0)
        assert isinstance(staleness, int | float)
        assert not isinstance(staleness, bool)
        assert math.isfinite(staleness)
        assert staleness >= 0

    @pytest.mark.parametrize("operation", ["get", "compare_and_set", "delete", "names"])
    async def test_driver_failures_are_storage_errors(self, tmp_path: Path, operation: str) -> None:
        """A failing driver surfaces as StorageError, with the driver's exception as the cause."""
        async with self._failing_storage(tmp_path) as storage:
            with anyio.fail_after(_DEADLINE), pytest.raises(StorageError) as caught:
                await _call(storage, operation)
            assert caught.value.__cause__ is not None, (
                "StorageError must chain the driver's exception"
            )

    async def test_a_breaker_keeps_protecting_while_the_storage_fails(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """With the default failure policy, a failing storage never reaches the guarded call."""
        async with self._failing_storage(tmp_path) as storage:
            breaker = CircuitBreaker(
                _NAME, storage=storage, clock=clock, failure_threshold=2, storage_timeout=30.0
            )
            for _ in range(2):
                with pytest.raises(_Boom):
                    async with breaker:
                        raise _Boom
            with pytest.raises(CircuitBreakerOpenError):
                async with breaker:
                    pytest.fail("an open breaker ran the guarded code")

    def _failing_storage(self, tmp_path: Path) -> AbstractAsyncContextManager[Storage]:
        self.tmp_path = tmp_path
        made = self.make_failing_storage()
        if made is None:
            pytest.skip("define make_failing_storage() to test how driver failures surface")
        return _entered(made, "make_failing_storage")

    # -- breakers on top of the storage --------------------------------------

    async def test_breakers_trip_and_share_the_open_state(
        self, storage_under_test: Storage, clock: FakeClock
    ) -> None:
        """Failures through one breaker open it for every breaker on the same storage."""
        first = self._breaker(storage_under_test, clock, failure_threshold=3, timeout=10.0)
        for _ in range(3):
            with pytest.raises(_Boom):
                async with first:
                    raise _Boom
        other = self._breaker(storage_under_test, clock, failure_threshold=3, timeout=10.0)
        assert await other.get_state() is CircuitState.OPEN
        with pytest.raises(CircuitBreakerOpenError) as caught:
            async with other:
                pytest.fail("an open breaker ran the guarded code")
        assert 0 < caught.value.time_until_retry <= 10.0

    async def test_concurrent_failures_all_count(
        self, storage_under_test: Storage, clock: FakeClock
    ) -> None:
        """Failures reported at once by many breakers are all recorded: none is lost."""
        threshold = self.contenders

        async def fail_once() -> None:
            breaker = self._breaker(storage_under_test, clock, failure_threshold=threshold)
            await breaker.record_failure(_Boom())

        async with anyio.create_task_group() as group:
            for _ in range(threshold - 1):
                group.start_soon(fail_once)
        observer = self._breaker(storage_under_test, clock, failure_threshold=threshold)
        assert await observer.get_state() is CircuitState.CLOSED
        window = await observer.get_window_stats()
        assert (window.calls, window.failures) == (threshold - 1, threshold - 1)
        await fail_once()
        assert await observer.get_state() is CircuitState.OPEN

    async def test_half_open_admits_only_max_calls_under_contention(
        self, storage_under_test: Storage, clock: FakeClock
    ) -> None:
        """Of many breakers asking at once in half-open, exactly ``half_open_max_calls`` get in."""
        settings: dict[str, Any] = {
            "failure_threshold": 1,
            "timeout": 5.0,
            "half_open_max_calls": 2,
            "success_threshold": 2,
        }
        await self._breaker(storage_under_test, clock, **settings).record_failure(_Boom())
        clock.advance(5.0)
        breakers = [
            self._breaker(storage_under_test, clock, **settings) for _ in range(self.contenders)
        ]
        admitted: list[CircuitBreaker] = []

        async def ask(breaker: CircuitBreaker) -> None:
            if await breaker.allow_request():
                admitted.append(breaker)

        async with anyio.create_task_group() as group:
            for breaker in breakers:
                group.start_soon(ask, breaker)
        assert len(admitted) == 2, f"{len(admitted)} trial calls admitted at once, expected 2"
        observer = self._breaker(storage_under_test, clock, **settings)
        assert await observer.get_state() is CircuitState.HALF_OPEN
        for breaker in admitted:
            await breaker.record_success()
        assert await observer.get_state() is CircuitState.CLOSED
        async with observer:
            pass

    async def test_outcomes_from_many_processes_all_count(
        self, storage_under_test: Storage, anyio_backend: str
    ) -> None:
        """Processes x tasks x calls on one breaker, successes and failures: every one counts."""
        reports = await self._contend(
            storage_under_test,
            anyio_backend,
            lambda index: ("outcomes", self.contention_tasks, self.contention_outcomes, index),
        )
        successes = sum(report["successes"] for report in reports)
        failures = sum(report["failures"] for report in reports)
        assert successes + failures == self.processes * self.contention_tasks * (
            self.contention_outcomes
        )
        assert successes, "the calls should have both succeeded and failed"
        assert failures, "the calls should have both succeeded and failed"
        observer = CircuitBreaker(_NAME, storage=storage_under_test, **_COUNTING)
        window = await observer.get_window_stats()
        assert (window.calls, window.failures) == (successes + failures, failures), (
            f"the callers saw {successes} successes and {failures} failures; "
            f"the storage holds {window.calls} calls, {window.failures} failures"
        )
        assert await observer.get_state() is CircuitState.CLOSED

    async def test_trials_from_many_processes_never_overlap(
        self, storage_under_test: Storage, anyio_backend: str
    ) -> None:
        """Half-open, one trial at a time fleet-wide; listeners hear only possible changes."""
        opener = CircuitBreaker(_NAME, storage=storage_under_test, **_TRIALS)
        await opener.record_failure(_Boom())
        marker = str(self.tmp_path / "trial-running")
        reports = await self._contend(
            storage_under_test,
            anyio_backend,
            lambda index: (
                "trials",
                self.contention_tasks,
                self.contention_outcomes,
                index,
                marker,
            ),
        )
        assert [report["overlaps"] for report in reports] == [0] * self.processes, (
            "two trial calls ran at once"
        )
        trials = [report["trials"] for report in reports]
        assert sum(trials) >= 2, f"trial calls per process: {trials}"
        assert sum(report["refused"] for report in reports) > 0
        for report in reports:
            _assert_possible([tuple(change) for change in report["changes"]])

    async def _contend(
        self, storage: Storage, runtime: str, job: Callable[[int], tuple[Any, ...]]
    ) -> list[Any]:
        """Run ``job(index)`` in each of ``processes`` processes (or task groups here)."""
        factory = self.shared_storage_factory()
        with anyio.fail_after(_DEADLINE):
            if factory is None:
                reports: list[Any] = [None] * self.processes

                async def run(index: int) -> None:
                    kind, *arguments = job(index)
                    reports[index] = await _JOBS[kind](storage, *arguments)

                async with anyio.create_task_group() as group:
                    for index in range(self.processes):
                        group.start_soon(run, index)
                return reports
            async with AsyncExitStack() as stack:
                children = [
                    await _Child.start(
                        stack,
                        _payload(factory, job(index), runtime),
                        self.tmp_path / f"stderr-{index}.txt",
                    )
                    for index in range(self.processes)
                ]
                for child in children:
                    await child.expect("ready")
                for child in children:
                    await child.send("go")
                return [json.loads(await child.expect_result()) for child in children]

    async def test_a_failed_trial_reopens_for_everyone(
        self, storage_under_test: Storage, clock: FakeClock
    ) -> None:
        """A failing trial call re-opens the breaker for the full timeout, for every breaker."""
        settings: dict[str, Any] = {"failure_threshold": 1, "timeout": 5.0}
        trial = self._breaker(storage_under_test, clock, **settings)
        await trial.record_failure(_Boom())
        clock.advance(5.0)
        with pytest.raises(_Boom):
            async with trial:
                raise _Boom
        other = self._breaker(storage_under_test, clock, **settings)
        assert await other.get_state() is CircuitState.OPEN
        assert other.get_time_until_retry() == pytest.approx(5.0)

    async def test_force_open_and_reset_reach_every_breaker(
        self, storage_under_test: Storage, clock: FakeClock
    ) -> None:
        """``force_open()`` and ``reset()`` through one breaker are seen by another."""
        admin = self._breaker(storage_under_test, clock)
        worker = self._breaker(storage_under_test, clock)
        await admin.force_open()
        assert await worker.get_state() is CircuitState.OPEN
        assert worker.get_time_until_retry() == math.inf
        await admin.reset()
        assert await worker.get_state() is CircuitState.CLOSED


def _installed(runtime: str) -> bool:
    return runtime == "asyncio" or importlib.util.find_spec(runtime) is not None


async def _enter(stack: AsyncExitStack, made: object, hook: str) -> Storage:
    """Enter what a ``make_*`` hook returned and return the storage."""
    if inspect.isawaitable(made):
        made = await made
    if hasattr(made, "__aenter__"):
        storage = await stack.enter_async_context(cast("AbstractAsyncContextManager[object]", made))
    elif isinstance(made, Storage):
        storage = made  # the five methods are the protocol; entering is optional
    else:
        raise TypeError(
            f"{hook}() must return a storage (or an async context manager of one), got {made!r}"
        )
    if not isinstance(storage, Storage):
        raise TypeError(f"{hook}() gave {storage!r}, which does not implement the Storage protocol")
    return storage


@asynccontextmanager
async def _entered(made: object, hook: str) -> AsyncIterator[Storage]:
    """Enter what a ``make_*`` hook returned; close the storage on exit."""
    async with AsyncExitStack() as stack:
        storage = await _enter(stack, made, hook)
        try:
            yield storage
        finally:
            await storage.aclose()


async def _call(storage: Storage, operation: str) -> object:
    """Call one operation of the protocol with plausible arguments."""
    if operation == "get":
        return await storage.get(_NAME)
    if operation == "compare_and_set":
        return await storage.compare_and_set(_NAME, 1, _record(2))
    if operation == "delete":
        await storage.delete(_NAME)
        return None
    return await storage.names()


# -- records ------------------------------------------------------------------


def _record(version: int, **values: Any) -> BreakerRecord:
    return BreakerRecord(version=version, **values)


def _with_version(record: BreakerRecord, version: int) -> BreakerRecord:
    return BreakerRecord(
        **{**{f.name: getattr(record, f.name) for f in fields(record)}, "version": version}
    )


def _samples() -> list[BreakerRecord]:
    """Records that, together, give every field values a careless backend would lose."""
    now = 1_700_000_000.123456
    return [
        BreakerRecord(version=1),
        BreakerRecord(
            state=CircuitState.OPEN,
            version=1,
            generation=7,
            changed_at=now,
            open_duration=30.0,
            openings=3,
        ),
        BreakerRecord(
            state=CircuitState.OPEN,
            version=1,
            generation=2,
            changed_at=0.1 + 0.2,
            forced=True,
            openings=1,
        ),
        BreakerRecord(
            state=CircuitState.CLOSED,
            version=1,
            generation=1,
            window_size=60.0,
            buckets=((now - 54.0, 3, 1, 0), (now - 0.000001, 1, 1, 1), (now, 12, 0, 12)),
            consecutive_failures=1,
        ),
        BreakerRecord(
            state=CircuitState.HALF_OPEN,
            version=1,
            generation=12,
            changed_at=now + 1 / 3,
            successes=1,
            trials=(("9f86d081884c7d65", now + 0.25), ("ünïcødé token ✓", 2.5)),
        ),
        BreakerRecord(
            state=CircuitState.OPEN,
            version=1,
            generation=2**53 + 1,
            changed_at=5e-324,
            open_duration=math.inf,
            openings=2**31 + 5,
        ),
        BreakerRecord(
            state=CircuitState.HALF_OPEN,
            version=1,
            generation=2**40,
            changed_at=1e15 + 0.5,
            open_duration=86_400.000_001,
            openings=9,
            forced=False,
            window_size=1e-3 / 3,
            buckets=tuple((now + index / 7, 2**40 + index, index, 0) for index in range(10)),
            consecutive_failures=2**53 + 1,
            successes=2**31,
            trials=tuple((f"token-{index:04d}", now + index) for index in range(20)),
        ),
    ]


async def _or_get(
    storage: Storage, expected: int | None, record: BreakerRecord
) -> tuple[bool, BreakerRecord | None]:
    """``storage.compare_and_set_or_get(_NAME, ...)``; skips where the storage has none."""
    operation = getattr(storage, "compare_and_set_or_get", None)
    if operation is None:
        pytest.skip("the storage has no compare_and_set_or_get, which is optional")
    result: tuple[bool, BreakerRecord | None] = await operation(_NAME, expected, record)
    return result


def _assert_same(got: object, expected: BreakerRecord) -> None:
    """Assert that ``got`` is ``expected``, field by field and type by type."""
    assert isinstance(got, BreakerRecord), f"expected a BreakerRecord, got {got!r}"
    for field in fields(BreakerRecord):
        have, want = getattr(got, field.name), getattr(expected, field.name)
        assert _typed(have) == _typed(want), (
            f"field {field.name} changed in the round trip: stored {want!r}, read back {have!r}"
        )


def _typed(value: object) -> object:
    """``value`` with the type of every part made visible to ``==``."""
    if isinstance(value, tuple | list):
        return (type(value).__name__, [_typed(item) for item in value])
    return (type(value).__name__, value)


# Names a backend could confuse: by case, by trailing space, by escaping, or
# by characters with a meaning in keys, paths, patterns or SQL.
_ODD_NAMES: Final = (
    "a",
    "A",
    "a ",
    "a/b",
    "a_b",
    "a:b",
    "a.b",
    "a*",
    "a?",
    "[a]",
    "a%",
    "a\\b",
    "'a'",
    '"a"',
    "ß",
    "ss",
    "ünïcødé ✓",
    "新しい",
    "with space",
    "{hash}tag",
    "x" * 200,
)


# -- the compare-and-set race -------------------------------------------------


def _race_record(version: int, contender: int) -> BreakerRecord:
    return BreakerRecord(
        version=version, openings=contender, trials=((f"contender-{contender}", float(version)),)
    )


async def _race_task(
    storage: Storage, target: int, contender: int, start: anyio.Event, won: list[int]
) -> None:
    await start.wait()
    while True:
        current = await storage.get(_NAME)
        version = 0 if current is None else current.version
        if version >= target:
            return
        # A breaker computes between its read and its write: let rivals in.
        await anyio.lowlevel.checkpoint()
        if await storage.compare_and_set(
            _NAME, version or None, _race_record(version + 1, contender)
        ):
            won.append(version + 1)


async def _check_race(storage: Storage, target: int, wins: dict[int, list[int]]) -> None:
    """Assert that each version was won once, and that the last winner's record is stored."""
    won = sorted(version for versions in wins.values() for version in versions)
    duplicates = sorted({version for version in won if won.count(version) > 1})
    assert not duplicates, f"versions won by more than one contender: {duplicates}"
    assert won == list(range(1, target + 1)), f"versions won: {won}"
    final = await storage.get(_NAME)
    assert isinstance(final, BreakerRecord), f"after the race, the storage holds {final!r}"
    assert target in wins.get(final.openings, []), (
        f"the stored record is contender {final.openings}'s, which did not win version {target}"
    )
    _assert_same(final, _race_record(target, final.openings))


# -- other processes ------------------------------------------------------------


def _payload(factory: Callable[[], Storage], job: tuple[Any, ...], runtime: str) -> str:
    """What a child process needs, as one line of text."""
    try:
        pickled = pickle.dumps((factory, job, runtime))
    except Exception as error:
        raise TypeError(
            f"shared_storage_factory() must return a picklable callable, such as "
            f"functools.partial(MyStorage, path), not {factory!r}: {error}"
        ) from error
    return base64.b64encode(pickled).decode("ascii")


class _Child:
    """A process running ``_child_main``: it opens the storage, waits for "go", races."""

    def __init__(
        self, process: anyio.abc.Process, stdout: BufferedByteReceiveStream, stderr: Path
    ) -> None:
        self._process = process
        self._stdout = stdout
        self._stderr = stderr

    @classmethod
    async def start(cls, stack: AsyncExitStack, payload: str, stderr: Path) -> _Child:
        env = dict(os.environ)
        # The factory may name classes from the test's own modules.
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        with stderr.open("wb") as stream:
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-c",
                    "from anybreaker.testing._kit import _child_main; _child_main()",
                ],
                env=env,
                stderr=stream,
            )
        await stack.enter_async_context(process)
        stack.push_async_callback(_stop, process)
        assert process.stdout is not None
        child = cls(process, BufferedByteReceiveStream(process.stdout), stderr)
        await child.send(payload)
        return child

    async def send(self, line: str) -> None:
        assert self._process.stdin is not None
        await self._process.stdin.send(line.encode("ascii") + b"\n")

    async def _line(self) -> str:
        try:
            line = await self._stdout.receive_until(b"\n", 1 << 24)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            await self._process.wait()
            raise AssertionError(
                f"the storage process exited with {self._process.returncode}:\n"
                + self._stderr.read_text(errors="replace")
            ) from None
        return line.decode()

    async def expect(self, word: str) -> None:
        line = await self._line()
        assert line == word, f"the storage process said {line!r}, expected {word!r}"

    async def expect_result(self) -> str:
        line = await self._line()
        await self._process.wait()
        assert self._process.returncode == 0, self._stderr.read_text(errors="replace")
        return line


async def _stop(process: anyio.abc.Process) -> None:
    if process.returncode is None:
        process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()


def _child_main() -> None:
    """Run in another process: open the storage, say "ready", do the job on "go"."""
    factory, job, runtime = pickle.loads(base64.b64decode(sys.stdin.readline()))
    anyio.run(_child_job, factory, job, backend=runtime)


async def _child_job(factory: Callable[[], Storage], job: tuple[Any, ...]) -> None:
    async with _entered(factory(), "shared_storage_factory") as storage:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        kind, *arguments = job
        print(json.dumps(await _JOBS[kind](storage, *arguments)), flush=True)


async def _see(storage: Storage) -> dict[str, Any]:
    """The visibility check: read what the parent wrote, write over it."""
    seen = await storage.get(_NAME)
    _assert_same(seen, _samples()[-1])
    assert await storage.compare_and_set(_NAME, 1, _with_version(_samples()[0], 2))
    return {}


async def _race(storage: Storage, target: int, tasks: int) -> dict[int, list[int]]:
    # Contender ids that no other process uses.
    wins: dict[int, list[int]] = {os.getpid() * 100 + task: [] for task in range(tasks)}
    start = anyio.Event()
    async with anyio.create_task_group() as group:
        for contender, won in wins.items():
            group.start_soon(_race_task, storage, target, contender, start, won)
        start.set()
    return wins


# -- contention: many tasks of many processes on one breaker -------------------

# Settings under which no call opens the breaker: every outcome stays in the window.
_COUNTING: Final[dict[str, Any]] = {
    "failure_threshold": 1 << 40,
    "window_size": 3600.0,
    "on_storage_error": "raise",
    "storage_timeout": _DEADLINE / 2,
}
# Settings under which, once open, every call is a trial: successes never
# close the breaker, failures reopen it for a moment.
_TRIALS: Final[dict[str, Any]] = {
    "failure_threshold": 1,
    "timeout": 0.01,
    "half_open_max_calls": 1,
    "success_threshold": 1 << 40,
    "on_storage_error": "raise",
    "storage_timeout": _DEADLINE / 2,
}


async def _outcomes(storage: Storage, tasks: int, calls: int, seed: int) -> dict[str, int]:
    """Make ``tasks`` x ``calls`` calls, half of them failing at random; count what was seen."""
    breaker = CircuitBreaker(_NAME, storage=storage, **_COUNTING)
    rng = random.Random(seed)
    plans = [[rng.random() < 0.5 for _ in range(calls)] for _ in range(tasks)]
    seen = {"successes": 0, "failures": 0}

    async def call(plan: list[bool]) -> None:
        for fails in plan:
            try:
                async with breaker:
                    await anyio.lowlevel.checkpoint()
                    if fails:
                        raise _Boom
            except _Boom:
                seen["failures"] += 1
            else:
                seen["successes"] += 1

    async with anyio.create_task_group() as group:
        for plan in plans:
            group.start_soon(call, plan)
    await breaker.get_window_stats()  # writes the successes still pending
    return seen


async def _trials(
    storage: Storage, tasks: int, attempts: int, seed: int, marker: str
) -> dict[str, Any]:
    """Ask for trials; hold an exclusive marker file while each runs; fail a third of them."""
    breaker = CircuitBreaker(_NAME, storage=storage, **_TRIALS)
    changes: list[tuple[str, str, float]] = []
    breaker.add_listener(
        lambda change: changes.append((change.old_state.value, change.new_state.value, change.at))
    )
    rng = random.Random(seed)
    seen = {"trials": 0, "refused": 0, "overlaps": 0}

    async def ask() -> None:
        for _ in range(attempts):
            try:
                async with breaker:
                    seen["trials"] += 1
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        seen["overlaps"] += 1
                        continue
                    try:
                        await anyio.sleep(0.002)
                    finally:
                        os.unlink(marker)
                    if rng.random() < 1 / 3:
                        raise _Boom
            except (_Boom, CircuitBreakerOpenError) as error:
                seen["refused"] += isinstance(error, CircuitBreakerOpenError)
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(ask)
    return {**seen, "changes": changes}


# What the state machine can do; a listener hears changes that follow on from each other.
_POSSIBLE: Final = {
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "open"),
    ("half_open", "closed"),
}


def _assert_possible(changes: list[tuple[Any, ...]]) -> None:
    for old, new, _ in changes:
        assert (old, new) in _POSSIBLE, f"a listener heard {old} -> {new}: {changes}"
    for (_, new, at), (old, _, later) in itertools.pairwise(changes):
        assert new == old, f"a listener heard changes that do not follow on: {changes}"
        assert at <= later, f"a listener heard changes out of time order: {changes}"


_JOBS: Final[dict[str, Callable[..., Awaitable[Any]]]] = {
    "see": _see,
    "race": _race,
    "outcomes": _outcomes,
    "trials": _trials,
}
