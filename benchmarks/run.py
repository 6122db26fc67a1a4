"""Measure anybreaker against other circuit breakers and its storages against raw drivers.

Usage: ``python benchmarks/run.py [--quick] [--parts ...] [--output DIR]``
(``nox -s bench`` runs it with every competitor installed).

A full run prints the tables and writes ``benchmarks/results/latest.md`` and
``latest.png`` (and a copy of the PNG for the documentation). ``--quick`` is
a smoke run with small counts; it writes files only when given ``--output``.
The exit status is 1 when a storage that could be measured failed while it
was; a storage whose driver is missing or whose server is down is skipped
with a printed note.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import contention  # noqa: E402
import core  # noqa: E402
import libraries  # noqa: E402
import report  # noqa: E402
import storages  # noqa: E402

PARTS = (
    "calls",
    "release",
    "timeout",
    "otel",
    "memory",
    "breakers",
    "tasks",
    "storages",
    "contention",
)

FULL = {
    "rounds": 25,
    "n_closed": 20_000,
    "n_rejected": 10_000,
    "n_failures": 4_000,
    "memory_count": 100_000,
    "flat_rounds": 7,
    "breaker_sizes": [1, 10, 100, 1_000, 10_000, 100_000],
    "flat_calls": 200_000,
    "task_sizes": [1, 10, 100, 1_000],
    "task_calls": 100_000,
    "storage_rounds": 5,
    "storage_closed": 100_000,
    # Writes to PostgreSQL wait for its commit to reach the disk: fewer of them.
    "storage_failures": {
        "sqlite": 1_000,
        "sqlite+aiosqlite": 1_000,
        "postgresql+psycopg": 300,
        "postgresql+asyncpg": 300,
        "redis": 1_000,
    },
    "contention_rounds": 3,
    "contention_failures": 50,
}

QUICK = {
    "rounds": 2,
    "n_closed": 500,
    "n_rejected": 200,
    "n_failures": 100,
    "memory_count": 1_000,
    "flat_rounds": 1,
    "breaker_sizes": [1, 10, 100],
    "flat_calls": 1_000,
    "task_sizes": [1, 10],
    "task_calls": 1_000,
    "storage_rounds": 1,
    "storage_closed": 500,
    "storage_failures": {
        "sqlite": 20,
        "sqlite+aiosqlite": 20,
        "postgresql+psycopg": 10,
        "postgresql+asyncpg": 10,
        "redis": 20,
    },
    "contention_rounds": 1,
    "contention_failures": 2,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with small counts")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="measure only these parts (default: all)",
    )
    parser.add_argument(
        "--storages",
        nargs="+",
        choices=list(storages.KINDS_BY_KEY),
        help="measure only these storage kinds (default: every available one)",
    )
    parser.add_argument(
        "--databases",
        nargs="+",
        choices=list(contention.DATABASES),
        help="run the contention part on these databases only (default: every available one)",
    )
    parser.add_argument("--rounds", type=int, help="rounds of the per-call comparison")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write latest.md and latest.png "
        "(default: benchmarks/results for a full run, nowhere for --quick)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts, print the tables, write the results."""
    args = parse(argv)
    libraries.quiet_warnings()
    settings = dict(QUICK if args.quick else FULL)
    if args.rounds:
        settings["rounds"] = args.rounds
    command = "nox -s bench"
    if argv is None and sys.argv[1:]:
        command = "python benchmarks/run.py " + shlex.join(sys.argv[1:])
    results = report.Results(command=command, settings=settings)

    def step(name: str) -> float:
        print(f"{name} ...", flush=True)
        return time.perf_counter()

    def done(start: float) -> None:
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)

    if "calls" in args.parts:
        start = step("per-call cost, side by side")
        results.calls = core.measure_calls(
            settings["rounds"],
            settings["n_closed"],
            settings["n_rejected"],
            settings["n_failures"],
        )
        done(start)
    if "release" in args.parts:
        start = step("closed call against release 0.1")
        results.release = core.measure_release(settings["rounds"], settings["n_closed"])
        done(start)
    if "timeout" in args.parts:
        start = step("closed call with call_timeout")
        results.timeout = core.measure_timeout(settings["rounds"], settings["n_closed"])
        done(start)
    if "otel" in args.parts:
        start = step("closed call on an instrumented breaker (anybreaker.otel)")
        results.otel = core.measure_instrumented(settings["rounds"], settings["n_closed"])
        done(start)
    if "memory" in args.parts:
        start = step(f"memory per idle named breaker ({settings['memory_count']:,})")
        results.memory = core.measure_memory(settings["memory_count"])
        done(start)
    if "breakers" in args.parts:
        start = step("cost per call over many breakers")
        results.breakers = core.measure_many_breakers(
            settings["flat_rounds"], settings["breaker_sizes"], settings["flat_calls"]
        )
        done(start)
    if "tasks" in args.parts:
        start = step("cost per call with many concurrent tasks")
        results.tasks = core.measure_many_tasks(
            settings["flat_rounds"], settings["task_sizes"], settings["task_calls"]
        )
        done(start)
    if "storages" in args.parts:
        start = step("storages")
        results.storages = storages.measure_storages(
            settings["storage_rounds"],
            settings["storage_closed"],
            settings["storage_failures"],
            kinds=args.storages,
        )
        done(start)
    if "contention" in args.parts:
        start = step(
            f"contention: {contention.PROCESSES} processes x {contention.TASKS} tasks x "
            f"{settings['contention_failures']} failures on one breaker"
        )
        results.contention = contention.measure_contention(
            settings["contention_rounds"],
            settings["contention_failures"],
            databases=args.databases,
        )
        done(start)

    print()
    print(report.console(results))
    output = args.output
    if output is None and not args.quick:
        output = HERE / "results"
    if output is not None:
        copies = []
        if output.resolve() == (HERE / "results").resolve():
            copies.append(HERE.parent / "docs" / "assets" / "benchmarks.png")
        report.write(results, output, copies)
    # A storage that was importable and reachable but failed while measured
    # is a defect, not a skip: say so in the exit status.
    failed = [key for key in (results.storages.skipped if results.storages else {}) if "/" in key]
    if results.contention is not None:
        failed += results.contention.failed()
    if failed:
        print(f"failed while measured: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
