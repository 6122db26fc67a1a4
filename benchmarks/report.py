"""Turn the measurements into the results table (markdown) and the chart (PNG)."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from contention import CONTENDERS_BY_KEY, DATABASES, P99_TARGET, ContentionResults
from core import (
    OTEL_SERIES,
    RELEASE_SERIES,
    TIMEOUT_SERIES,
    CallResults,
    FlatResults,
    MemoryResult,
    SeriesResults,
)
from libraries import LIBRARIES
from storages import KINDS_BY_KEY, StorageResults
from timing import RUNTIMES, micro

MEMORY_TARGET = 300.0
FLAT_TARGET = 1.2
SQLITE_CLOSED_TARGET = 3.0
SQLITE_FAILURE_TARGET = 2.0
RELEASE_TARGET = 1.3
INSTRUMENTED_TARGET = 1.5
CALL_KINDS = ("closed", "rejected", "failure")
RATE_CALL_KINDS = ("closed_rate", "rejected_rate")
CALL_TARGETS = {
    "closed": "closed call (default rule) cheaper than every other library",
    "rejected": "rejected call (default rule) cheaper than every other library",
    "failure": "recorded failure in memory ({n_failures:,} in a row, default window) cheaper "
    "than every other library",
    "closed_rate": "closed call with the failure-rate rule cheaper than every other library",
    "rejected_rate": "rejected call with the failure-rate rule cheaper than every other library",
}
TIMES = "\u00d7"  # the multiplication sign, written so that no linter mistakes it for x

VERSIONED = [
    "anybreaker",
    "anyio",
    "trio",
    "aiobreaker",
    "purgatory",
    "circuitbreaker",
    "pybreaker",
    "mamba-agents",
    "interlock-cb",
    "grelmicro",
    "sqlalchemy",
    "aiosqlite",
    "psycopg",
    "asyncpg",
    "coredis",
    "redis",
]


@dataclass
class Results:
    """Everything one run measured, and how it was run."""

    command: str
    settings: dict[str, Any]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    calls: CallResults | None = None
    release: SeriesResults | None = None
    timeout: SeriesResults | None = None
    otel: SeriesResults | None = None
    memory: list[MemoryResult] | None = None
    breakers: FlatResults | None = None
    tasks: FlatResults | None = None
    storages: StorageResults | None = None
    contention: ContentionResults | None = None


def machine() -> str:
    """The CPU model and core count, from /proc/cpuinfo where there is one."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def versions() -> list[tuple[str, str]]:
    """The installed version of every package the benchmark touches."""
    found = []
    for name in VERSIONED:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        if name == "anybreaker":
            version += _commit()
        found.append((name, version))
    return found


def _commit() -> str:
    """`` (commit abc1234)`` when run from a git checkout, noting uncommitted source."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" (commit {commit}{', with uncommitted changes in src' if dirty else ''})"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}{TIMES}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def targets(results: Results) -> list[tuple[str, str, bool | None]]:
    """Each target of the speed issues, what was measured, and whether it is met."""
    checks: list[tuple[str, str, bool | None]] = []
    calls = results.calls
    if calls is not None:
        for kind in CALL_KINDS + RATE_CALL_KINDS:
            for runtime in RUNTIMES:
                worst = None
                for library in LIBRARIES:
                    if library.key in ("floor", "anybreaker"):
                        continue
                    ratio = calls.ratio(runtime, library.key, kind)
                    if math.isnan(ratio):
                        continue
                    if worst is None or ratio < worst[1]:
                        worst = (library.label, ratio)
                if worst is not None:
                    checks.append(
                        (
                            f"{CALL_TARGETS[kind].format(**results.settings)} ({runtime})",
                            f"closest: {worst[0]} at {worst[1]:.2f}{TIMES} anybreaker's cost",
                            worst[1] > 1.0,
                        )
                    )
    release = results.release
    if release is not None:
        for series in RELEASE_SERIES[1:]:
            for runtime in RUNTIMES:
                ratio = release.ratio(runtime, series, RELEASE_SERIES[0])
                if not math.isnan(ratio):
                    checks.append(
                        (
                            f"closed success, counted ({series}), ≤ {RELEASE_TARGET}{TIMES} "
                            f"release 0.1's uncounted one ({runtime})",
                            f"{ratio:.2f}{TIMES}",
                            ratio <= RELEASE_TARGET,
                        )
                    )
    otel = results.otel
    if otel is not None and not otel.skipped:
        for runtime in RUNTIMES:
            ratio = otel.ratio(runtime, OTEL_SERIES[2], OTEL_SERIES[0])
            if not math.isnan(ratio):
                checks.append(
                    (
                        f"instrumented closed call (anybreaker.otel) ≤ {INSTRUMENTED_TARGET}"
                        f"{TIMES} an uninstrumented one ({runtime})",
                        f"{ratio:.2f}{TIMES}",
                        ratio <= INSTRUMENTED_TARGET,
                    )
                )
    if results.memory is not None:
        for entry in results.memory:
            if entry.library == "anybreaker" and entry.bytes_per_breaker is not None:
                checks.append(
                    (
                        f"memory per idle named breaker ≤ {MEMORY_TARGET:.0f} B ({entry.how})",
                        f"{entry.bytes_per_breaker:.0f} B",
                        entry.bytes_per_breaker <= MEMORY_TARGET,
                    )
                )
    for label, flat, series in (
        ("breakers", results.breakers, "anybreaker"),
        ("concurrent tasks", results.tasks, "anybreaker"),
    ):
        if flat is None:
            continue
        for runtime in RUNTIMES:
            ratios = [
                flat.ratio(runtime, series, size)
                for size in flat.sizes
                if (runtime, series, size) in flat.costs
            ]
            if ratios:
                # Getting cheaper with more breakers or tasks is no defect:
                # only the largest slowdown counts.
                worst = max(ratios)
                checks.append(
                    (
                        f"cost per call flat within 20 % from {flat.sizes[0]:,} to "
                        f"{flat.sizes[-1]:,} {label} ({runtime})",
                        f"largest ratio to the 1-case: {worst:.2f}{TIMES}",
                        worst <= FLAT_TARGET,
                    )
                )
    storages = results.storages
    if storages is not None:
        for runtime in RUNTIMES:
            closed = storages.ratio(runtime, "sqlite", "memory:sqlite", "closed")
            if not math.isnan(closed):
                checks.append(
                    (
                        f"SQLite closed call ≤ {SQLITE_CLOSED_TARGET:.0f}{TIMES} memory "
                        f"({runtime})",
                        f"{closed:.2f}{TIMES}",
                        closed <= SQLITE_CLOSED_TARGET,
                    )
                )
            failure = storages.ratio(runtime, "sqlite", "raw:sqlite", "failure")
            if not math.isnan(failure):
                checks.append(
                    (
                        f"SQLite recorded failure ≤ {SQLITE_FAILURE_TARGET:.0f}{TIMES} raw "
                        f"sqlite3 CAS in a thread ({runtime})",
                        f"{failure:.2f}{TIMES}",
                        failure <= SQLITE_FAILURE_TARGET,
                    )
                )
    contention = results.contention
    if contention is not None:
        for (key, runtime), runs in contention.runs.items():
            contender = CONTENDERS_BY_KEY[key]
            if contender.library != "anybreaker":
                continue
            where = f"{DATABASES[contender.database]}, {contender.driver}, {runtime}"
            lost = contention.lost(key, runtime)
            other = contention.other_errors(key, runtime)
            checks.append(
                (
                    f"contention: 0 outcomes lost, nothing but the guarded error raised ({where})",
                    f"lost {lost} of {contention.expected * len(runs):,}, other errors {other}",
                    lost == 0 and other == 0,
                )
            )
            ratio = contention.wall_ratio(key, runtime)
            if not math.isnan(ratio):
                checks.append(
                    (
                        f"contention: wall time ≤ grelmicro's on the same database ({where})",
                        f"{ratio:.2f}{TIMES} grelmicro's",
                        ratio <= 1.0,
                    )
                )
            p99 = contention.figure(key, runtime, "p99")
            checks.append(
                (
                    f"contention: p99 of a failing call < {P99_TARGET * 1e3:.0f} ms ({where})",
                    f"{p99 * 1e3:.1f} ms",
                    p99 < P99_TARGET,
                )
            )
    return checks


def markdown(results: Results, chart: str | None) -> str:
    """The results as a markdown page fragment."""
    when = results.started.strftime("%Y-%m-%d %H:%M UTC")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    lines = [
        f"Measured on {when}; {machine()}; {python}.",
        "",
        f"Rerun with `{results.command}`.",
        "",
        "Costs are medians over interleaved rounds (per-call comparison: "
        f"{results.settings['rounds']} rounds, every library in every round in a "
        f"rotating order; flatness: {results.settings['flat_rounds']}; storages: "
        f"{results.settings['storage_rounds']}); ratios are medians of the ratios "
        "measured within each round. In the comparison, a ratio is the other "
        f"library's cost divided by anybreaker's: above 1{TIMES} anybreaker is cheaper.",
        "",
    ]
    calls = results.calls
    if calls is not None:
        lines += _call_tables(results, calls)
    if results.release is not None:
        lines += _release_table(results, results.release)
    if results.timeout is not None:
        lines += _timeout_tables(results, results.timeout)
    if results.otel is not None:
        lines += _otel_table(results, results.otel)
    if results.memory is not None:
        lines += [
            f"### Memory per idle named breaker ({results.settings['memory_count']:,} breakers)",
            "",
            "Bytes allocated (tracemalloc) per breaker while all of them are held; "
            "the names themselves are allocated before measuring.",
            "",
        ]
        rows = [
            [
                entry.library,
                f"`{entry.how}`",
                (
                    f"not measured ({entry.note})"
                    if entry.bytes_per_breaker is None
                    else f"{entry.bytes_per_breaker:.0f}"
                    + (f" (held {entry.note})" if entry.note else "")
                ),
            ]
            for entry in results.memory
        ]
        lines += _table(["library", "held as", "bytes per breaker"], rows)
        lines.append("")
    if results.breakers is not None:
        flat = results.breakers
        lines += [
            "### Cost per call with many breakers (µs)",
            "",
            f"Closed-state calls spread over N breakers of one registry "
            f"({results.settings['flat_calls']:,} calls, each to the next breaker).",
            "",
        ]
        rows = []
        for size in flat.sizes:
            row = [f"{size:,}"]
            for runtime in RUNTIMES:
                row += [
                    micro(flat.cost(runtime, "anybreaker", size)),
                    _ratio(flat.ratio(runtime, "anybreaker", size)),
                ]
            rows.append(row)
        lines += _table(["breakers", "asyncio", "ratio to 1", "trio", "ratio to 1"], rows)
        lines.append("")
    if results.tasks is not None:
        flat = results.tasks
        lines += [
            "### Cost per call with many concurrent tasks (µs)",
            "",
            "N tasks inside one closed breaker at once; each guarded call yields "
            "to the scheduler once, so the figures include a task switch. The "
            "floor is a no-op `async with` around the same checkpoint; the "
            "difference (median of the per-round differences) is what the "
            "breaker adds.",
            "",
        ]
        rows = []
        for size in flat.sizes:
            row = [f"{size:,}"]
            for runtime in RUNTIMES:
                row += [
                    micro(flat.cost(runtime, "anybreaker", size)),
                    _ratio(flat.ratio(runtime, "anybreaker", size)),
                    micro(flat.cost(runtime, "floor", size)),
                    _ratio(flat.ratio(runtime, "floor", size)),
                    micro(flat.net(runtime, size)),
                ]
            rows.append(row)
        header = ["tasks"]
        for runtime in RUNTIMES:
            header += [
                runtime,
                "ratio to 1",
                f"floor {runtime}",
                "ratio to 1",
                "breaker minus floor",
            ]
        lines += _table(header, rows)
        lines.append("")
    storages = results.storages
    if storages is not None:
        lines += _storage_tables(results, storages)
    if results.contention is not None:
        lines += _contention_table(results.contention)
    checks = targets(results)
    if checks:
        lines += ["### Targets", ""]
        rows = [
            [what, measured, {True: "met", False: "**missed**", None: "-"}[ok]]
            for what, measured, ok in checks
        ]
        lines += _table(["target", "measured", ""], rows)
        lines.append("")
    lines += ["### Versions", ""]
    lines.append(", ".join(f"{name} {version}" for name, version in versions()) + ".")
    lines.append("")
    if chart:
        lines += [f"![Per-call cost of each library and storage]({chart})", ""]
    return "\n".join(lines)


def _call_tables(results: Results, calls: CallResults) -> list[str]:
    settings = results.settings
    lines = [
        "### Per call, in memory (µs)",
        "",
        "Each cell: µs per call (ratio to anybreaker's cost in the same rounds).",
        "",
        f"Closed: `async with breaker:` around a no-op coroutine "
        f"({settings['n_closed']:,} calls per measurement). Rejected: a "
        f"call refused by a breaker opened by real failures "
        f"({settings['n_rejected']:,} calls). Failure: a failed call "
        f"recorded by a closed breaker that never opens, {settings['n_failures']:,} "
        "in a row on one breaker, at the library's default window and real clock.",
        "",
        "#### Each library at its default rule",
        "",
    ]
    header = ["library", "version", "call", "rule"]
    for kind in CALL_KINDS:
        for runtime in RUNTIMES:
            header.append(f"{kind}, {runtime}")
    rows = []
    for library in LIBRARIES:
        row = [
            library.label,
            library.version() if not _skipped_all(calls, library.key) else "-",
            library.how,
            library.rule or "-",
        ]
        row += _call_cells(calls, library.key, CALL_KINDS)
        rows.append(row)
    lines += _table(header, rows)
    lines += [
        "",
        "#### With the failure-rate rule",
        "",
        "anybreaker with `failure_threshold=None, failure_rate_threshold=0.5, "
        "minimum_calls=10` (opened by 10 failures), interlock-cb with the same "
        "rule over a 60-second time window; the libraries that have no "
        "failure-rate rule appear with their default rule, measured in the same rounds.",
        "",
    ]
    header = ["library", "rule"]
    for kind in RATE_CALL_KINDS:
        for runtime in RUNTIMES:
            header.append(f"{kind.removesuffix('_rate')}, {runtime}")
    rows = []
    for library in LIBRARIES:
        if library.key == "floor":
            continue
        rule = library.rate_rule or f"{library.rule or '-'} (no rate rule)"
        rows.append([library.label, rule, *_call_cells(calls, library.key, RATE_CALL_KINDS)])
    lines += _table(header, rows)
    lines.append("")
    labels = {library.key: library.label for library in LIBRARIES}
    for (runtime, key), reason in sorted(calls.skipped.items()):
        lines.append(f"- {labels[key]} not measured under {runtime}: {reason}")
    lines += [
        "- pybreaker's `call` is synchronous (its async path needs tornado): it "
        "makes the coroutine, and the loop awaits it outside the breaker, so "
        "pybreaker never sees the coroutine's outcome; its failure loop calls "
        "a synchronous function that raises.",
        "",
    ]
    return lines


def _call_cells(calls: CallResults, key: str, kinds: tuple[str, ...]) -> list[str]:
    cells = []
    for kind in kinds:
        for runtime in RUNTIMES:
            if (runtime, key) in calls.skipped:
                cells.append("not measured")
                continue
            cell = micro(calls.cost(runtime, key, kind))
            if key != "anybreaker" and cell != "-":
                cell += f" ({_ratio(calls.ratio(runtime, key, kind))})"
            cells.append(cell)
    return cells


def _release_table(results: Results, release: SeriesResults) -> list[str]:
    lines = [
        "### A counted closed success against release 0.1 (µs)",
        "",
        "`async with breaker:` around a no-op coroutine on a closed in-memory "
        "breaker, at default settings: release 0.1 (its source taken from git at "
        "bench time, commit a172b0e, and imported beside the current code) did not "
        "count closed successes; the current code counts each one (no lock, no I/O; "
        f"written at most every second). {results.settings['rounds']} rounds of "
        f"{results.settings['n_closed']:,} calls; ratio: median of the per-round "
        "ratios to release 0.1.",
        "",
    ]
    if release.skipped:
        return [*lines, f"Not measured: {release.skipped}", ""]
    rows = []
    for series in release.series:
        row = [series]
        for runtime in RUNTIMES:
            row += [
                micro(release.cost(runtime, series)),
                _ratio(release.ratio(runtime, series, RELEASE_SERIES[0])),
            ]
        rows.append(row)
    header = ["closed call on"]
    for runtime in RUNTIMES:
        header += [runtime, "ratio to release 0.1"]
    return [*lines, *_table(header, rows), *_failed_series(release), ""]


TIMEOUT_RATIOS = (
    (TIMEOUT_SERIES[0], TIMEOUT_SERIES[4]),
    (TIMEOUT_SERIES[0], TIMEOUT_SERIES[1]),
    (TIMEOUT_SERIES[0], TIMEOUT_SERIES[5]),
    (TIMEOUT_SERIES[2], TIMEOUT_SERIES[4]),
    (TIMEOUT_SERIES[2], TIMEOUT_SERIES[3]),
)


def _timeout_tables(results: Results, timeout: SeriesResults) -> list[str]:
    lines = [
        "### call_timeout (µs)",
        "",
        "A closed call around a no-op coroutine with `call_timeout=10`, through "
        "`async with` and through `call()`, against the same call without it, "
        "against a bare `anyio.fail_after(10)` around the coroutine (no breaker), "
        "and against `fail_after(10)` written by hand inside `async with breaker:`. "
        f"{results.settings['rounds']} rounds of {results.settings['n_closed']:,} calls.",
        "",
    ]
    rows = [
        [series, *(micro(timeout.cost(runtime, series)) for runtime in RUNTIMES)]
        for series in timeout.series
    ]
    lines += _table(["call", *RUNTIMES], rows)
    lines.append("")
    rows = [
        [
            f"{series} / {base}",
            *(_ratio(timeout.ratio(runtime, series, base)) for runtime in RUNTIMES),
        ]
        for series, base in TIMEOUT_RATIOS
    ]
    lines += _table(["ratio (median of per-round ratios)", *RUNTIMES], rows)
    return [*lines, *_failed_series(timeout), ""]


def _otel_table(results: Results, otel: SeriesResults) -> list[str]:
    lines = [
        "### An instrumented closed call (anybreaker.otel) (µs)",
        "",
        "`async with breaker:` around a no-op coroutine on a closed in-memory "
        "breaker: not instrumented; with a call listener that does nothing (the "
        "generic per-call hook, for comparison); instrumented with `anybreaker.otel."
        "instrument()` on an SDK `MeterProvider` with an in-memory reader; and the "
        "same with one collection after the calls, its cost spread over them. "
        f"{results.settings['rounds']} rounds of {results.settings['n_closed']:,} "
        "calls; ratio: median of the per-round ratios to the uninstrumented call.",
        "",
    ]
    if otel.skipped:
        return [*lines, f"Not measured: {otel.skipped}", ""]
    rows = []
    for series in otel.series:
        row = [series]
        for runtime in RUNTIMES:
            row += [
                micro(otel.cost(runtime, series)),
                _ratio(otel.ratio(runtime, series, OTEL_SERIES[0])),
            ]
        rows.append(row)
    header = ["closed call"]
    for runtime in RUNTIMES:
        header += [runtime, "ratio"]
    return [*lines, *_table(header, rows), *_failed_series(otel), ""]


def _failed_series(results: SeriesResults) -> list[str]:
    lines = []
    for (runtime, series), error in sorted(results.failed.items()):
        lines.append(f"- `{series}` not measured under {runtime}: every call raised {error}")
    return ["", *lines] if lines else []


def _contention_table(contention: ContentionResults) -> list[str]:
    rounds = max((len(runs) for runs in contention.runs.values()), default=0)
    lines = [
        "### Contention: several processes failing on one breaker",
        "",
        f"{contention.processes} processes {TIMES} {contention.tasks} concurrent tasks "
        f"{TIMES} {contention.failures} failures each ({contention.expected:,} failures "
        "in all) on one breaker that never opens (anybreaker: `failure_threshold` "
        "10⁹, `window_size` 3,600 s; grelmicro: `error_threshold` 10⁹), started "
        "together once every process has connected. Wall time: from the common start "
        "to the last process done. Lost: failures the callers saw minus what the "
        "breaker counts afterwards (anybreaker: `get_window_stats().failures`; "
        "grelmicro: the consecutive-error count its backend stores), added up over "
        f"{rounds} round{'s' if rounds != 1 else ''}. p50 / p99: latency of a failing "
        "call under that load. Figures are medians over rounds; the wall-time ratio is "
        "the median of per-round ratios to grelmicro on the same database.",
        "",
    ]
    rows = []
    for (key, runtime), runs in contention.runs.items():
        contender = CONTENDERS_BY_KEY[key]
        wall_ratio = contention.wall_ratio(key, runtime)
        rows.append(
            [
                DATABASES[contender.database],
                contender.label,
                runtime,
                f"{contention.figure(key, runtime, 'wall'):.2f}",
                "-" if contender.library == "grelmicro" else _ratio(wall_ratio),
                f"{contention.figure(key, runtime, 'p50') * 1e3:.1f}",
                f"{contention.figure(key, runtime, 'p99') * 1e3:.1f}",
                f"{sum(run['recorded'] for run in runs):,}",
                f"{sum(run['counted'] for run in runs):,}",
                str(contention.lost(key, runtime)),
                str(contention.other_errors(key, runtime)),
                "; ".join(contention.errors(key, runtime))[:200],
            ]
        )
    lines += _table(
        [
            "database",
            "breaker (driver)",
            "runtime",
            "wall s",
            "wall vs grelmicro",
            "p50 ms",
            "p99 ms",
            "recorded",
            "counted",
            "lost",
            "other errors",
            "errors seen",
        ],
        rows,
    )
    lines.append("")
    for key, reason in sorted(contention.skipped.items()):
        lines.append(f"- {CONTENDERS_BY_KEY[key].label}: not measured: {reason}")
    if contention.skipped:
        lines.append("")
    return lines


def _skipped_all(calls: CallResults, key: str) -> bool:
    return all((runtime, key) in calls.skipped for runtime in RUNTIMES)


def _storage_tables(results: Results, storages: StorageResults) -> list[str]:
    lines = [
        "### Storages (µs per call)",
        "",
        f"Closed: a closed-state call at the storage's default settings (default "
        f"staleness), {results.settings['storage_closed']:,} calls per measurement, "
        "against the in-memory breaker in the same round. Failure: a recorded "
        "failure (one compare-and-set write; the breaker never opens), "
        + ", ".join(
            f"{count:,} on {KINDS_BY_KEY[key].label}"
            for key, count in results.settings["storage_failures"].items()
            if key in storages.kinds
        )
        + " per measurement, against one raw "
        "compare-and-set through the same driver, sent the same way.",
        "",
    ]
    rows = []
    for key in storages.kinds:
        kind = KINDS_BY_KEY[key]
        for runtime in RUNTIMES:
            if runtime not in kind.runtimes:
                continue
            if (runtime, key, "closed") not in storages.costs:
                rows.append([kind.label, runtime, "failed", "", "", "", "", "", ""])
                continue
            rows.append(
                [
                    kind.label,
                    runtime,
                    micro(storages.cost(runtime, key, "closed")),
                    micro(storages.cost(runtime, "memory:" + key, "closed")),
                    _ratio(storages.ratio(runtime, key, "memory:" + key, "closed")),
                    micro(storages.cost(runtime, key, "failure")),
                    micro(storages.cost(runtime, "raw:" + key, "failure")),
                    _ratio(storages.ratio(runtime, key, "raw:" + key, "failure")),
                    kind.raw_label,
                ]
            )
    lines += _table(
        [
            "storage",
            "runtime",
            "closed",
            "memory closed",
            "closed vs memory",
            "failure",
            "raw CAS",
            "failure vs raw",
            "raw CAS is",
        ],
        rows,
    )
    lines.append("")
    if storages.kinds:
        lines += [
            "For scale, a recorded failure on the in-memory breaker costs "
            + " / ".join(
                f"{micro(storages.memory_cost(runtime, 'failure'))} µs ({runtime})"
                for runtime in RUNTIMES
            )
            + ".",
            "",
        ]
    for key, reason in sorted(storages.skipped.items()):
        lines.append(f"- {key}: not measured: {reason}")
    if storages.skipped:
        lines.append("")
    return lines


def console(results: Results) -> str:
    """The same tables, for the terminal."""
    return markdown(results, None)


def chart(results: Results, path: Path) -> None:
    """Draw per-call costs (libraries, storages) and the contention runs' wall times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if results.calls is not None:
        panels.append("calls")
    if results.storages is not None and results.storages.kinds:
        panels.append("storages")
    if results.contention is not None and results.contention.runs:
        panels.append("contention")
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6.5), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        if panel == "calls":
            _calls_panel(axis, results)
        elif panel == "storages":
            _storages_panel(axis, results)
        else:
            _contention_panel(axis, results)
    when = results.started.strftime("%Y-%m-%d")
    python = f"Python {platform.python_version()}"
    figure.suptitle(f"anybreaker benchmarks, {when}, {python}, {machine()}", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


COLORS = {
    ("closed", "asyncio"): "#4c72b0",
    ("closed", "trio"): "#8fb3e0",
    ("rejected", "asyncio"): "#c44e52",
    ("rejected", "trio"): "#e8a0a2",
    ("failure", "asyncio"): "#c44e52",
    ("failure", "trio"): "#e8a0a2",
}


def _bars(axis: Any, labels: list[str], series: dict[tuple[str, str], list[float]]) -> None:
    height = 0.8 / len(series)
    middle = (len(series) - 1) / 2
    for index, ((kind, runtime), values) in enumerate(series.items()):
        positions = [row + (index - middle) * height for row in range(len(labels))]
        shown = [0.0 if math.isnan(v) else v for v in values]
        axis.barh(
            positions, shown, height=height, color=COLORS[kind, runtime], label=f"{kind}, {runtime}"
        )
    axis.set_yticks(range(len(labels)), labels)
    axis.invert_yaxis()
    axis.set_xlabel("µs per call (lower is better)")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(loc="best", fontsize="small")


def _calls_panel(axis: Any, results: Results) -> None:
    assert results.calls is not None
    labels: list[str] = []
    series: dict[tuple[str, str], list[float]] = {}
    for library in LIBRARIES:
        labels.append(library.label)
        for kind in ("closed", "rejected"):
            for runtime in RUNTIMES:
                series.setdefault((kind, runtime), []).append(
                    results.calls.cost(runtime, library.key, kind) * 1e6
                )
    _bars(axis, labels, series)
    axis.set_title("Per call, in memory (default rules)")


def _storages_panel(axis: Any, results: Results) -> None:
    storages = results.storages
    assert storages is not None
    labels: list[str] = []
    series: dict[tuple[str, str], list[float]] = {}
    for key in ["memory", *storages.kinds]:
        labels.append("memory" if key == "memory" else KINDS_BY_KEY[key].label)
        for kind in ("closed", "failure"):
            for runtime in RUNTIMES:
                cost = (
                    storages.memory_cost(runtime, kind)
                    if key == "memory"
                    else storages.cost(runtime, key, kind)
                )
                series.setdefault((kind, runtime), []).append(cost * 1e6)
    _bars(axis, labels, series)
    axis.set_xscale("log")
    axis.set_title("Per call, by storage (log scale)")


def _contention_panel(axis: Any, results: Results) -> None:
    contention = results.contention
    assert contention is not None
    labels, values, colors = [], [], []
    palette = {
        ("anybreaker", "asyncio"): "#4c72b0",
        ("anybreaker", "trio"): "#8fb3e0",
        ("grelmicro", "asyncio"): "#dd8452",
    }
    # The runs are kept in the order the first round ran them: grouped by database.
    for key, runtime in contention.runs:
        contender = CONTENDERS_BY_KEY[key]
        labels.append(f"{DATABASES[contender.database]}: {contender.label}, {runtime}")
        values.append(contention.figure(key, runtime, "wall"))
        colors.append(palette[contender.library, runtime])
    axis.barh(range(len(labels)), [0.0 if math.isnan(v) else v for v in values], color=colors)
    axis.set_yticks(range(len(labels)), labels, fontsize="small")
    axis.invert_yaxis()
    axis.set_xlabel("wall time, s (lower is better)")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(
        f"Contention: {contention.processes} processes {TIMES} {contention.tasks} tasks "
        f"{TIMES} {contention.failures} failures"
    )


def write(results: Results, directory: Path, copies: list[Path]) -> None:
    """Write latest.md and latest.png into ``directory`` (and the PNG to ``copies``)."""
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / "latest.png"
    chart(results, png)
    (directory / "latest.md").write_text(markdown(results, None) + "\n")
    for copy in copies:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(png.read_bytes())
    print(f"wrote {directory / 'latest.md'} and {png}", file=sys.stderr)
