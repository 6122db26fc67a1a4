"""The conformance kit proves itself: it fails every broken storage, and passes a good one.

Each test writes a test module as a backend author would, subclassing
``StorageTests``, and runs pytest on it in-process, outside this project's
conftest (as in a user's project).
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from dataclasses import fields

import pytest

from anybreaker import BreakerRecord

needs_trio = pytest.mark.skipif(
    importlib.util.find_spec("trio") is None, reason="runs the kit under trio too; needs trio"
)

pytest_plugins = ["pytester"]


def run_kit(
    pytester: pytest.Pytester, body: str, *args: str, conftest: str | None = None
) -> pytest.HookRecorder:
    """Run the kit on the storage ``body`` defines (a ``TestStorage`` class body)."""
    source = (
        "from pathlib import Path\n"
        "import functools\n"
        "from anybreaker import MemoryStorage, StorageError\n"
        "from anybreaker.testing import StorageTests\n"
        "from tests import _broken_storages as broken\n\n"
        "class TestStorage(StorageTests):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    pytester.makepyfile(test_backend=source)
    if conftest is not None:
        pytester.makeconftest(conftest)
    return pytester.inline_run("-p", "no:cacheprovider", *args)


def failed_tests(recorder: pytest.HookRecorder) -> set[str]:
    """The names (without parameters) of the tests that failed."""
    _, _, failed = recorder.listoutcomes()
    return {report.nodeid.split("::")[-1].split("[")[0] for report in failed}


def outcomes(recorder: pytest.HookRecorder) -> dict[str, str]:
    """Each test id's outcome."""
    return {
        report.nodeid.split("::")[-1]: report.outcome
        for report in recorder.getreports("pytest_runtest_logreport")
        if report.when == "call" or report.outcome != "passed"
    }


@needs_trio
def test_a_correct_storage_passes_under_both_runtimes(pytester: pytest.Pytester) -> None:
    """MemoryStorage passes every test of the kit, under asyncio and under trio."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return MemoryStorage()
        """,
    )
    passed, skipped, failed = recorder.listoutcomes()
    assert failed == []
    ids = {report.nodeid.split("::")[-1] for report in passed}
    assert "test_racing_tasks_have_one_winner_per_version[asyncio]" in ids
    assert "test_racing_tasks_have_one_winner_per_version[trio]" in ids
    assert len(passed) > 50
    # Only the opt-in tests (other processes, a failing driver) are skipped.
    assert {report.nodeid.split("::")[-1].split("[")[0] for report in skipped} == {
        "test_racing_processes_have_one_winner_per_version",
        "test_a_write_from_another_process_is_seen",
        "test_driver_failures_are_storage_errors",
        "test_a_breaker_keeps_protecting_while_the_storage_fails",
    }


def test_a_storage_of_the_five_methods_alone_passes(pytester: pytest.Pytester) -> None:
    """A storage with only get, compare_and_set, delete, names and aclose passes the kit."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            inner = MemoryStorage()

            class Plain:
                get = inner.get
                compare_and_set = inner.compare_and_set
                delete = inner.delete
                names = inner.names
                aclose = inner.aclose

            return Plain()
        """,
    )
    passed, _, failed = recorder.listoutcomes()
    assert failed == []
    assert len(passed) > 25  # the whole kit: one runtime's worth at least


def test_the_kit_fails_a_storage_that_ignores_versions(pytester: pytest.Pytester) -> None:
    """A compare-and-set that always stores fails the version tests and the races."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return broken.IgnoresVersions()
        """,
    )
    assert {
        "test_compare_and_set_none_refuses_when_something_is_stored",
        "test_compare_and_set_refuses_another_version",
        "test_compare_and_set_expecting_a_version_refuses_when_nothing_is_stored",
        "test_a_deleted_name_starts_again_from_nothing",
    } <= failed_tests(recorder)


def test_the_kit_fails_a_storage_that_checks_only_presence(pytester: pytest.Pytester) -> None:
    """A compare-and-set that checks only whether something is stored fails on stale versions."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return broken.ChecksPresenceOnly()
        """,
    )
    assert {
        "test_compare_and_set_refuses_another_version",
        "test_racing_tasks_have_one_winner_per_version",
    } <= failed_tests(recorder)


@pytest.mark.parametrize(
    "field",
    [field.name for field in fields(BreakerRecord) if field.name not in ("state", "version")],
)
def test_the_kit_fails_a_storage_that_drops_a_field(pytester: pytest.Pytester, field: str) -> None:
    """Forgetting any one field of the record fails the round-trip test."""
    recorder = run_kit(
        pytester,
        f"""
        async def make_storage(self):
            return broken.DropsField({field!r})
        """,
        "-k",
        "round_trip and asyncio",
    )
    assert failed_tests(recorder) == {"test_every_field_survives_a_round_trip"}


def test_the_kit_fails_a_storage_that_drops_the_state(pytester: pytest.Pytester) -> None:
    """Forgetting the state (it reads back CLOSED) fails the round-trip test."""

    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return broken.DropsField("state")
        """,
        "-k",
        "round_trip and asyncio",
    )
    assert "test_every_field_survives_a_round_trip" in failed_tests(recorder)


def test_the_kit_fails_a_storage_that_rounds_times(pytester: pytest.Pytester) -> None:
    """Times kept to the microsecond fail the round-trip test."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return broken.RoundsTimes()
        """,
        "-k",
        "round_trip and asyncio",
    )
    assert failed_tests(recorder) == {"test_every_field_survives_a_round_trip"}


def test_the_kit_fails_a_storage_that_loses_writes_under_concurrency(
    pytester: pytest.Pytester,
) -> None:
    """A compare-and-set that yields between its check and its write fails the race tests."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return broken.LosesWritesUnderConcurrency()
        """,
    )
    failed = failed_tests(recorder)
    assert {
        "test_racing_tasks_have_one_winner_per_version",
        "test_concurrent_failures_all_count",
        "test_half_open_admits_only_max_calls_under_contention",
        "test_outcomes_from_many_processes_all_count",
    } <= failed
    # One task at a time, the same storage is right: only the concurrent tests fail.
    assert "test_compare_and_set_refuses_another_version" not in failed


@pytest.mark.processes
def test_the_kit_fails_a_storage_atomic_within_one_process_only(
    pytester: pytest.Pytester,
) -> None:
    """A file storage locked per process, not per file, fails the process race only."""
    recorder = run_kit(
        pytester,
        """
        processes = 4

        async def make_storage(self):
            return broken.FileAtomicWithinOneProcess(self.tmp_path / "breakers.json")

        def shared_storage_factory(self):
            return functools.partial(
                broken.FileAtomicWithinOneProcess, self.tmp_path / "breakers.json"
            )
        """,
        "-k",
        "(racing or many_processes) and asyncio",
    )
    assert outcomes(recorder) == {
        "test_racing_tasks_have_one_winner_per_version[asyncio]": "passed",
        "test_racing_processes_have_one_winner_per_version[asyncio]": "failed",
        "test_outcomes_from_many_processes_all_count[asyncio]": "failed",
        "test_trials_from_many_processes_never_overlap[asyncio]": "failed",
    }


def test_the_kit_fails_a_storage_usable_after_close(pytester: pytest.Pytester) -> None:
    """A storage that keeps working after ``aclose()`` fails the lifecycle tests."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return broken.RefusesNothingAfterClose()
        """,
    )
    assert failed_tests(recorder) == {
        "test_use_after_close_is_a_storage_error",
        "test_entering_returns_the_storage",
    }


def test_the_kit_fails_a_storage_that_leaks_driver_errors(pytester: pytest.Pytester) -> None:
    """A driver exception escaping as itself fails the failure tests."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return MemoryStorage()

        async def make_failing_storage(self):
            return broken.FailsWithRawErrors()
        """,
        "-k",
        "storage_errors or storage_fails",
    )
    assert failed_tests(recorder) == {
        "test_driver_failures_are_storage_errors",
        "test_a_breaker_keeps_protecting_while_the_storage_fails",
    }


def test_the_kit_fails_a_storage_error_without_its_cause(pytester: pytest.Pytester) -> None:
    """A StorageError that does not chain the driver's exception fails the failure test."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return MemoryStorage()

        async def make_failing_storage(self):
            return broken.FailsWithoutCause()
        """,
        "-k",
        "storage_errors or storage_fails",
    )
    assert failed_tests(recorder) == {"test_driver_failures_are_storage_errors"}
    passed, _, _ = recorder.listoutcomes()
    assert passed, "a StorageError without a cause still keeps breakers protecting"


def test_asyncio_only_storage_runs_no_trio_test(pytester: pytest.Pytester) -> None:
    """``runtimes = ("asyncio",)`` runs every test under asyncio and none under trio."""
    recorder = run_kit(
        pytester,
        """
        runtimes = ("asyncio",)

        async def make_storage(self):
            return MemoryStorage()
        """,
        "-k",
        "names",
    )
    ids = set(outcomes(recorder))
    assert ids
    assert all("[asyncio" in test_id and "trio" not in test_id for test_id in ids), ids


@pytest.mark.parametrize("runtimes", ["()", '"asyncio"', '("asyncio", "curio")'])
def test_a_bad_runtimes_attribute_is_a_clear_error(
    pytester: pytest.Pytester, runtimes: str
) -> None:
    """An empty, misspelled or non-tuple ``runtimes`` fails collection, saying what it takes."""
    pytester.makepyfile(
        test_backend=(
            "from anybreaker import MemoryStorage\n"
            "from anybreaker.testing import StorageTests\n\n"
            "class TestStorage(StorageTests):\n"
            f"    runtimes = {runtimes}\n\n"
            "    async def make_storage(self):\n"
            "        return MemoryStorage()\n"
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*runtimes must be a non-empty tuple of 'asyncio' and 'trio'*"])


def test_a_missing_make_storage_is_a_clear_error(pytester: pytest.Pytester) -> None:
    """A subclass that forgets ``make_storage()`` errors, naming the method to define."""
    recorder = run_kit(pytester, "pass\n", "-k", "fresh_storage_has_no_names")
    _, _, failed = recorder.listoutcomes()
    assert failed
    assert all("must define `async def make_storage(self)`" in str(r.longrepr) for r in failed)


@needs_trio
def test_the_kit_lives_with_a_conftest_that_parametrizes_runtimes(
    pytester: pytest.Pytester,
) -> None:
    """A project's ``anyio_backend`` fixture with params does not double the kit's tests."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return MemoryStorage()
        """,
        "-k",
        "fresh_storage_has_no_names",
        conftest=(
            "import pytest\n\n"
            "@pytest.fixture(params=['asyncio', 'trio'])\n"
            "def anyio_backend(request):\n"
            "    return request.param\n"
        ),
    )
    assert outcomes(recorder) == {
        "test_a_fresh_storage_has_no_names[asyncio]": "passed",
        "test_a_fresh_storage_has_no_names[trio]": "passed",
    }


@needs_trio
def test_make_storage_may_be_a_context_manager(pytester: pytest.Pytester) -> None:
    """``make_storage`` written as an async context manager gets set-up and clean-up around it."""
    recorder = run_kit(
        pytester,
        """
        import contextlib

        @contextlib.asynccontextmanager
        async def make_storage(self):
            with open("log.txt", "a") as log:
                log.write("made\\n")
            async with MemoryStorage() as storage:
                yield storage
            with open("log.txt", "a") as log:
                log.write("cleaned up\\n")
        """,
        "-k",
        "fresh_storage_has_no_names",
    )
    passed, _, failed = recorder.listoutcomes()
    assert failed == []
    assert len(passed) == 2
    log = (pytester.path / "log.txt").read_text().splitlines()
    assert log == ["made", "cleaned up", "made", "cleaned up"]


@needs_trio
def test_the_kit_lives_with_a_conftest_hook_that_leaves_it_alone(
    pytester: pytest.Pytester,
) -> None:
    """A ``pytest_generate_tests`` hook that skips the kit's classes, as documented, works."""
    pytester.makepyfile(
        test_plain=("import pytest\n\n@pytest.mark.anyio\nasync def test_plain():\n    pass\n")
    )
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return MemoryStorage()
        """,
        "-k",
        "fresh_storage_has_no_names or plain",
        conftest=(
            "import pytest\n"
            "from anybreaker.testing import StorageTests\n\n"
            "def pytest_generate_tests(metafunc):\n"
            "    if metafunc.cls is not None and issubclass(metafunc.cls, StorageTests):\n"
            "        return\n"
            "    if 'anyio_backend' in metafunc.fixturenames:\n"
            "        metafunc.parametrize('anyio_backend', ['asyncio', 'trio'])\n\n"
            "@pytest.fixture\n"
            "def anyio_backend():\n"
            "    return 'asyncio'\n"
        ),
    )
    assert outcomes(recorder) == {
        "test_a_fresh_storage_has_no_names[asyncio]": "passed",
        "test_a_fresh_storage_has_no_names[trio]": "passed",
        "test_plain[asyncio]": "passed",
        "test_plain[trio]": "passed",
    }


def test_fake_clock_needs_no_pytest(pytester: pytest.Pytester) -> None:
    """``anybreaker.testing.FakeClock`` imports where pytest is not installed."""
    result = pytester.run(
        sys.executable,
        "-c",
        "import sys; sys.modules['pytest'] = None\n"
        "from anybreaker.testing import FakeClock\n"
        "clock = FakeClock(5.0); clock.advance(1.5); print(clock())\n",
    )
    assert result.ret == 0, result.stderr.str()
    assert result.stdout.lines == ["6.5"]


def test_an_unpicklable_factory_is_a_clear_error(pytester: pytest.Pytester) -> None:
    """A ``shared_storage_factory()`` that cannot be pickled fails, saying what it must return."""
    recorder = run_kit(
        pytester,
        """
        async def make_storage(self):
            return MemoryStorage()

        def shared_storage_factory(self):
            return lambda: MemoryStorage()
        """,
        "-k",
        "racing_processes and asyncio",
    )
    _, _, failed = recorder.listoutcomes()
    assert len(failed) == 1
    assert "must return a picklable callable" in str(failed[0].longrepr)
