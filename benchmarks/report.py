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

from core import CallResults, FlatResults, MemoryResult
from libraries import LIBRARIES
from storages import KINDS_BY_KEY, StorageResults
from timing import RUNTIMES, micro

MEMORY_TARGET = 300.0
FLAT_TARGET = 1.2
SQLITE_CLOSED_TARGET = 3.0
SQLITE_FAILURE_TARGET = 2.0
CALL_KINDS = ("closed", "rejected", "failure")
CALL_TARGETS = {
    "closed": "closed call cheaper than every other library",
    "rejected": "rejected call cheaper than every other library",
    "failure": "recorded failure cheaper than every other library (not a target)",
}
TARGETED_KINDS = ("closed", "rejected")
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
    "sqlalchemy",
    "aiosqlite",
    "psycopg",
    "asyncpg",
    "coredis",
]


@dataclass
class Results:
    """Everything one run measured, and how it was run."""

    command: str
    settings: dict[str, Any]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    calls: CallResults | None = None
    memory: list[MemoryResult] | None = None
    breakers: FlatResults | None = None
    tasks: FlatResults | None = None
    storages: StorageResults | None = None


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
        for kind in CALL_KINDS:
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
                            f"{CALL_TARGETS[kind]} ({runtime})",
                            f"closest: {worst[0]} at {worst[1]:.2f}{TIMES} anybreaker's cost",
                            worst[1] > 1.0 if kind in TARGETED_KINDS else None,
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
        for (kind, runtime), figures in storages.processes.items():
            checks.append(
                (
                    f"{kind}: {figures['processes']} processes on one breaker lose no "
                    f"outcome and raise nothing but the guarded error ({runtime})",
                    f"lost {figures['lost']}, other errors {figures['other_errors']}",
                    figures["lost"] == 0 and figures["other_errors"] == 0,
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
        lines += [
            "### Per call, in memory (µs)",
            "",
            "Each cell: µs per call (ratio to anybreaker's cost in the same rounds).",
            "",
            f"Closed: `async with breaker:` around a no-op coroutine "
            f"({results.settings['n_closed']:,} calls per measurement). Rejected: a "
            f"call refused by a breaker opened by real failures "
            f"({results.settings['n_rejected']:,} calls). Failure: a failed call "
            f"recorded by a closed breaker that never opens "
            f"({results.settings['n_failures']:,} calls).",
            "",
        ]
        header = ["library", "version", "call"]
        for kind in CALL_KINDS:
            for runtime in RUNTIMES:
                header.append(f"{kind}, {runtime}")
        rows = []
        for library in LIBRARIES:
            row = [
                library.label,
                library.version() if not _skipped_all(calls, library.key) else "-",
                library.how,
            ]
            for kind in CALL_KINDS:
                for runtime in RUNTIMES:
                    if (runtime, library.key) in calls.skipped:
                        row.append("not measured")
                        continue
                    cell = micro(calls.cost(runtime, library.key, kind))
                    if library.key != "anybreaker" and cell != "-":
                        cell += f" ({_ratio(calls.ratio(runtime, library.key, kind))})"
                    row.append(cell)
            rows.append(row)
        lines += _table(header, rows)
        lines.append("")
        labels = {library.key: library.label for library in LIBRARIES}
        for (runtime, key), reason in sorted(calls.skipped.items()):
            lines.append(f"- {labels[key]} not measured under {runtime}: {reason}")
        if not calls.skipped:
            lines.append(
                "- Every library runs under both asyncio and trio here: none of "
                "their in-memory paths touches the event loop."
            )
        lines += [
            "- pybreaker's `call` is synchronous (its async path needs tornado): it "
            "makes the coroutine, and the loop awaits it outside the breaker, so "
            "pybreaker never sees the coroutine's outcome; its failure loop calls "
            "a synchronous function that raises.",
            "",
        ]
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
    if storages.processes:
        lines += [
            "### Several processes on one breaker",
            "",
            "Each process records failures on the same breaker as fast as it can "
            "(a huge threshold keeps the breaker closed). Every recorded failure is "
            "one compare-and-set, so the record's version must grow by exactly the "
            "number of failures the processes saw; *lost* is the shortfall.",
            "",
        ]
        rows = []
        for (key, runtime), figures in storages.processes.items():
            rows.append(
                [
                    KINDS_BY_KEY[key].label,
                    runtime,
                    f"{figures['processes']} {TIMES} {figures['failures_each']:,}",
                    f"{figures['outcomes_per_second']:,.0f}",
                    f"{figures['recorded']:,}",
                    f"{figures['versions']:,}",
                    str(figures["lost"]),
                    str(figures["other_errors"]),
                    "; ".join(sorted(set(figures["errors"])))[:200] or "",
                ]
            )
        lines += _table(
            [
                "storage",
                "runtime",
                f"processes {TIMES} failures",
                "outcomes/s",
                "recorded",
                "versions",
                "lost",
                "other errors",
                "errors seen",
            ],
            rows,
        )
        lines.append("")
    return lines


def console(results: Results) -> str:
    """The same tables, for the terminal."""
    return markdown(results, None)


def chart(results: Results, path: Path) -> None:
    """Draw per-call costs: libraries (closed, rejected) and storages, both runtimes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if results.calls is not None:
        panels.append("calls")
    if results.storages is not None and results.storages.kinds:
        panels.append("storages")
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6.0), squeeze=False)
    colors = {
        ("closed", "asyncio"): "#4c72b0",
        ("closed", "trio"): "#8fb3e0",
        ("rejected", "asyncio"): "#c44e52",
        ("rejected", "trio"): "#e8a0a2",
        ("failure", "asyncio"): "#c44e52",
        ("failure", "trio"): "#e8a0a2",
    }
    for axis, panel in zip(axes[0], panels, strict=True):
        labels: list[str] = []
        series: dict[tuple[str, str], list[float]] = {}
        if panel == "calls":
            assert results.calls is not None
            kinds = ("closed", "rejected")
            for library in LIBRARIES:
                labels.append(library.label)
                for kind in kinds:
                    for runtime in RUNTIMES:
                        series.setdefault((kind, runtime), []).append(
                            results.calls.cost(runtime, library.key, kind) * 1e6
                        )
            axis.set_title("Per call, in memory")
        else:
            assert results.storages is not None
            storages = results.storages
            kinds = ("closed", "failure")
            names = ["memory", *storages.kinds]
            for key in names:
                labels.append("memory" if key == "memory" else KINDS_BY_KEY[key].label)
                for kind in kinds:
                    for runtime in RUNTIMES:
                        cost = (
                            storages.memory_cost(runtime, kind)
                            if key == "memory"
                            else storages.cost(runtime, key, kind)
                        )
                        series.setdefault((kind, runtime), []).append(cost * 1e6)
            axis.set_xscale("log")
            axis.set_title("Per call, by storage (log scale)")
        height = 0.8 / 4
        for index, ((kind, runtime), values) in enumerate(series.items()):
            positions = [row + (index - 1.5) * height for row in range(len(labels))]
            shown = [0.0 if math.isnan(v) else v for v in values]
            axis.barh(
                positions,
                shown,
                height=height,
                color=colors[kind, runtime],
                label=f"{kind}, {runtime}",
            )
        axis.set_yticks(range(len(labels)), labels)
        axis.invert_yaxis()
        axis.set_xlabel("µs per call (lower is better)")
        axis.grid(axis="x", alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    when = results.started.strftime("%Y-%m-%d")
    python = f"Python {platform.python_version()}"
    figure.suptitle(f"anybreaker benchmarks, {when}, {python}, {machine()}", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
