"""The command line: ``anybreaker status | watch | reset | force-open | open-for | demo``.

Every command but ``demo`` works on the breakers kept in a storage URL
(``--url``, else ``$ANYBREAKER_URL``, else the demo's SQLite file in the
current directory). Exit codes: 0 done, 1 the storage failed, 2 a usage
error (bad arguments or URL, missing file, unknown breaker name), 3 ``status
--fail-if-open`` found an open breaker, 141 the output's reader went away.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shlex
import shutil
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio

from . import _machine as machine
from ._breaker import CircuitBreaker
from ._config import CircuitBreakerConfig
from ._errors import StorageError
from ._state import CircuitState, WindowStats
from .storage._protocol import BreakerRecord, Storage

__all__ = ["DEMO_DATABASE", "main"]

DEMO_DATABASE = "anybreaker-demo.db"
"""The SQLite file the demo keeps its breaker in, in the current directory."""

URL_VARIABLE = "ANYBREAKER_URL"

_STORAGE_FAILED = 1
_USAGE_ERROR = 2
_SOME_BREAKER_OPEN = 3

_DEFAULTS = CircuitBreakerConfig()


class CommandError(Exception):
    """A failure to report on one line of stderr, with the exit code to return."""

    def __init__(self, message: str, exit_code: int = _USAGE_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    arguments = _parser().parse_args(argv)
    try:
        result: int = arguments.run(arguments)
    except CommandError as error:
        print(f"anybreaker: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`anybreaker status | head`): end quietly, as a
        # program killed by SIGPIPE would, without a traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    return result


# -- arguments -------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="anybreaker",
        description="Inspect and operate the circuit breakers kept in a storage, or run the demo.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    storage_options = argparse.ArgumentParser(add_help=False)
    storage_options.add_argument(
        "--url",
        default=os.environ.get(URL_VARIABLE) or f"sqlite:///{DEMO_DATABASE}",
        help=f"where the breakers are kept (default: ${URL_VARIABLE}, "
        f"else sqlite:///{DEMO_DATABASE}, the demo's file)",
    )
    storage_options.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the async runtime to talk to the storage with (default: asyncio)",
    )
    lease_option = argparse.ArgumentParser(add_help=False)
    lease_option.add_argument(
        "--trial-lease",
        type=_seconds,
        default=_DEFAULTS.trial_lease,
        metavar="SECONDS",
        help="the breakers' trial_lease, to tell when trial permits expire "
        "(default: %(default)s, the default trial_lease)",
    )

    status = commands.add_parser(
        "status",
        parents=[storage_options, lease_option],
        help="list the breakers in a storage",
        description="List the breakers in a storage: state, time until a trial call "
        "is allowed, the window's counts and the trial permits held.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument(
        "--fail-if-open",
        action="store_true",
        help=f"exit with {_SOME_BREAKER_OPEN} when some breaker is open (for health checks)",
    )
    status.set_defaults(run=_run_status)

    watch = commands.add_parser(
        "watch",
        parents=[storage_options, lease_option],
        help="redraw the status table until Ctrl-C",
        description="Show the status table, redrawn every --interval seconds "
        "until interrupted (Ctrl-C).",
    )
    watch.add_argument(
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two redraws (default: %(default)s)",
    )
    watch.set_defaults(run=_run_watch)

    reset = commands.add_parser(
        "reset",
        parents=[storage_options],
        help="close a breaker and clear its history",
        description="Close a breaker and clear its history, for every process "
        "that shares the storage.",
    )
    reset.add_argument("name", metavar="NAME", help="the breaker's name")
    reset.set_defaults(run=_run_reset)

    force_open = commands.add_parser(
        "force-open",
        parents=[storage_options],
        help="open a breaker until it is reset",
        description="Open a breaker until `anybreaker reset`, for every process "
        "that shares the storage. A name the storage does not hold yet is stored, open.",
    )
    force_open.add_argument("name", metavar="NAME", help="the breaker's name")
    force_open.set_defaults(run=_run_force_open)

    open_for = commands.add_parser(
        "open-for",
        parents=[storage_options],
        help="open a breaker for some seconds",
        description="Open a breaker for exactly SECONDS, for every process that "
        "shares the storage; then it admits a trial call. A name the storage "
        "does not hold yet is stored, open.",
    )
    open_for.add_argument("name", metavar="NAME", help="the breaker's name")
    open_for.add_argument(
        "seconds", type=_seconds, metavar="SECONDS", help="how long it stays open"
    )
    open_for.set_defaults(run=_run_open_for)

    demo = commands.add_parser(
        "demo",
        help="run the demo (needs trio)",
        description="A trio program whose simulated model API fails for a while "
        "and recovers, guarded by a breaker kept in SQLite. Run it twice: the "
        "second run starts with the breaker the first one left open.",
    )
    demo.add_argument(
        "--db",
        type=Path,
        default=Path(DEMO_DATABASE),
        metavar="PATH",
        help="the SQLite file to keep the breaker in (default: %(default)s)",
    )
    demo.set_defaults(run=_run_demo)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


# -- status and watch ------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One breaker, as ``status`` shows it at ``now``."""

    name: str
    state: CircuitState
    forced: bool
    time_until_retry: float
    window_size: float
    """The window the counts were written for (0.0: nothing counted yet)."""
    window: WindowStats
    trials: tuple[float, ...]
    """When each trial permit held now was granted, oldest first."""


async def _rows(storage: Storage, lease: float) -> tuple[list[_Row], float]:
    """Read every breaker of ``storage``; return the rows, by name, and the time read."""
    records = [(name, await storage.get(name)) for name in sorted(await storage.names())]
    now = time.time()
    config = CircuitBreakerConfig(trial_lease=lease)
    return [_row(name, record, config, now) for name, record in records if record], now


def _row(name: str, record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> _Row:
    state = machine.view(record, config, now)
    # A record counts its window for the window_size its writers were
    # configured with; one that never counted anything has none.
    window = (
        machine.window_stats(record, record.window_size, now)
        if record.window_size
        else WindowStats(0, 0, 0, record.consecutive_failures, 0.0)
    )
    trials = sorted(
        # A grant later than now (the clock stepped back) counts as now.
        min(granted_at, now)
        for _, granted_at in (record.trials if state is CircuitState.HALF_OPEN else ())
    )
    return _Row(
        name=name,
        state=state,
        forced=record.forced and state is CircuitState.OPEN,
        time_until_retry=machine.time_until_retry(record, config, now),
        window_size=record.window_size,
        window=window,
        trials=tuple(at for at in trials if now - at < config.trial_lease),
    )


def _run_status(arguments: argparse.Namespace) -> int:
    rows, now = _run(arguments, _read, arguments.url, arguments.trial_lease)
    if arguments.json:
        print(json.dumps([_json(row, now, arguments.trial_lease) for row in rows], indent=2))
    else:
        print("\n".join(_table(rows, now, arguments.trial_lease) or [_none(arguments.url)]))
    if arguments.fail_if_open and any(row.state is CircuitState.OPEN for row in rows):
        return _SOME_BREAKER_OPEN
    return 0


async def _read(url: str, lease: float) -> tuple[list[_Row], float]:
    async with _open_storage(url) as storage:
        return await _rows(storage, lease)


def _json(row: _Row, now: float, lease: float) -> dict[str, Any]:
    return {
        "name": row.name,
        "state": row.state.value,
        "forced": row.forced,
        # JSON has no infinity: a forced breaker waits for a reset, not a time.
        "time_until_retry": None if row.forced else round(row.time_until_retry, 3),
        "window": {
            "seconds": row.window_size,
            "calls": row.window.calls,
            "failures": row.window.failures,
            "failure_rate": round(row.window.failure_rate, 4),
            "slow_calls": row.window.slow_calls,
            "consecutive_failures": row.window.consecutive_failures,
        },
        "trials": [
            {"granted_at": round(at, 3), "expires_in": round(at + lease - now, 3)}
            for at in row.trials
        ],
    }


_COLUMNS = ("NAME", "STATE", "RETRY IN", "WINDOW", "CALLS", "FAILURES", "RATE", "SLOW", "TRIALS")


def _table(rows: list[_Row], now: float, lease: float) -> list[str]:
    """The rows as aligned lines under a header; no lines for no rows."""
    if not rows:
        return []
    cells = [_COLUMNS] + [
        (
            row.name,
            f"{row.state.value} (forced)" if row.forced else row.state.value,
            _retry_in(row),
            f"{row.window_size:g}s" if row.window_size else "-",
            str(row.window.calls),
            str(row.window.failures),
            f"{row.window.failure_rate:.0%}" if row.window.calls else "-",
            str(row.window.slow_calls),
            _trials(row, now, lease),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(_COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]


def _retry_in(row: _Row) -> str:
    if row.forced:
        return "until reset"
    if row.state is CircuitState.OPEN:
        return f"{row.time_until_retry:.1f}s"
    return "-"


def _trials(row: _Row, now: float, lease: float) -> str:
    if not row.trials:
        return "-"
    first = "expires" if len(row.trials) == 1 else "first expires"
    return f"{len(row.trials)} ({first} in {row.trials[0] + lease - now:.1f}s)"


def _none(url: str) -> str:
    return f"no breakers in {_shown_url(url)}"


def _run_watch(arguments: argparse.Namespace) -> int:
    try:
        _run(
            arguments,
            _watch,
            arguments.url,
            arguments.interval,
            arguments.trial_lease,
            sys.stdout,
        )
    except KeyboardInterrupt:
        print()  # end the line ^C was echoed on
    return 0


async def _watch(url: str, interval: float, lease: float, out: TextIO) -> None:
    """Redraw the table every ``interval`` seconds, until cancelled or interrupted."""
    # On a terminal each frame replaces the last; elsewhere (a pipe, a log)
    # frames follow each other, a blank line apart.
    start = "\x1b[H\x1b[2J" if out.isatty() else "\n"
    async with _open_storage(url) as storage:
        first = True
        while True:
            try:
                rows, now = await _rows(storage, lease)
            except StorageError as error:
                lines = [f"storage failed: {_describe(error)} (trying again)"]
                now = time.time()
            else:
                lines = _table(rows, now, lease) or [_none(url)]
            title = (
                f"{_shown_url(url)} at {time.strftime('%H:%M:%S', time.localtime(now))}, "
                f"every {interval:g}s (Ctrl-C to stop)"
            )
            out.write(
                ("" if first and start == "\n" else start) + "\n".join([title, *lines]) + "\n"
            )
            out.flush()
            first = False
            await anyio.sleep(interval)


# -- reset, force-open, open-for --------------------------------------------


def _run_reset(arguments: argparse.Namespace) -> int:
    old = _run(arguments, _change, arguments.url, arguments.name, CircuitBreaker.reset, False)
    print(f"{arguments.name}: {old.value} -> closed (history cleared)")
    return 0


def _run_force_open(arguments: argparse.Namespace) -> int:
    old = _run(arguments, _change, arguments.url, arguments.name, CircuitBreaker.force_open, True)
    print(f"{arguments.name}: {old.value} -> forced open until `anybreaker reset {arguments.name}`")
    return 0


def _run_open_for(arguments: argparse.Namespace) -> int:
    seconds: float = arguments.seconds

    async def open_for(breaker: CircuitBreaker) -> None:
        await breaker.open_for(seconds)

    old = _run(arguments, _change, arguments.url, arguments.name, open_for, True)
    until = time.strftime("%H:%M:%S", time.localtime(time.time() + seconds))
    print(f"{arguments.name}: {old.value} -> open for {seconds:g} s, until {until}")
    return 0


async def _change(
    url: str, name: str, change: Callable[[CircuitBreaker], Awaitable[None]], new_ok: bool
) -> CircuitState:
    """Apply ``change`` to the breaker ``name``; return the state it had.

    A name the storage does not hold is an error, unless ``new_ok``: then it
    is noted on stderr (a typo shows there) and stored by the change.
    """
    async with _open_storage(url) as storage:
        names = await storage.names()
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            where = f"{_shown_url(url)} (breakers: {known})"
            if not new_ok:
                raise CommandError(f"no breaker named {name!r} in {where}")
            print(
                f"anybreaker: note: {name!r} is a new breaker name in {where}; "
                "every process that uses this name will find it open",
                file=sys.stderr,
            )
        # An operator's change must reach the storage or fail loudly, never
        # land in a process-local fallback that dies with this command.
        breaker = CircuitBreaker(name, storage=storage, on_storage_error="raise")
        old = await breaker.get_state()
        await change(breaker)
        return old


# -- running against a storage ---------------------------------------------


def _run(arguments: argparse.Namespace, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    backend: str = arguments.backend
    if backend == "trio":
        _require_trio("--backend trio needs trio")
    try:
        return anyio.run(function, *args, backend=backend)
    except StorageError as error:
        raise CommandError(f"storage failed: {_describe(error)}", _STORAGE_FAILED) from None
    except BaseExceptionGroup as group:
        # Ctrl-C that lands while a task group runs (a driver connecting, say)
        # comes out among the group's errors: it is still Ctrl-C.
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        raise KeyboardInterrupt from None


@asynccontextmanager
async def _open_storage(url: str) -> AsyncIterator[Storage]:
    """Open the storage for ``url``, refusing to create a SQLite file that is not there."""
    _check_sqlite_file(url)
    try:
        from .storage._registry import storage_from_url

        storage = storage_from_url(url)
    except (ValueError, ImportError) as error:
        raise CommandError(str(error)) from None
    async with AsyncExitStack() as stack:
        # Every shipped storage is an async context manager, and some (Redis)
        # work only inside one; a bare protocol implementation is just closed.
        if isinstance(storage, AbstractAsyncContextManager):
            await stack.enter_async_context(storage)
        else:
            stack.push_async_callback(storage.aclose)
        yield storage


def _check_sqlite_file(url: str) -> None:
    scheme, separator, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not separator or not rest.startswith("/"):
        return  # not a SQLite file URL: storage_from_url judges it
    # The path as storage_from_url reads it: after the third slash, unquoted.
    path = unquote(rest.partition("?")[0].removeprefix("/"))
    if path in ("", ":memory:"):
        return
    if not Path(path).is_file():
        hint = ""
        if Path(path).name == DEMO_DATABASE:
            hint = "; run `anybreaker demo` first, or give --url"
        raise CommandError(f"no SQLite database at {path} (not creating one){hint}")


def _shown_url(url: str) -> str:
    """``url`` with its password, if any, hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


def _require_trio(purpose: str) -> None:
    try:
        importlib.import_module("trio")
    except ImportError:
        raise CommandError(f'{purpose}: pip install "anybreaker[trio]"') from None


def _describe(error: BaseException) -> str:
    """One line about ``error`` and its cause (drivers' messages span several)."""
    message = _first_line(error)
    cause = error.__cause__
    if cause is not None and _first_line(cause) not in message:
        message = f"{message} ({_first_line(cause)})"
    return message


def _first_line(error: BaseException) -> str:
    return str(error).strip().partition("\n")[0] or type(error).__name__


# -- demo ------------------------------------------------------------------


def _run_demo(arguments: argparse.Namespace) -> int:
    _require_trio("the demo is a trio program")
    directory = arguments.db.parent
    if not directory.is_dir():
        raise CommandError(f"no directory {directory} for the demo's database")
    try:
        from . import _demo
    except ImportError as error:
        raise CommandError(str(error)) from None
    try:
        state = _demo.run(arguments.db)
    except ImportError as error:
        raise CommandError(str(error)) from None
    except StorageError as error:
        raise CommandError(f"the demo failed: {_describe(error)}", _STORAGE_FAILED) from None
    if state is not CircuitState.CLOSED:
        program = _program()
        url = "" if arguments.db == Path(DEMO_DATABASE) else f" --url sqlite:///{arguments.db}"
        print(f"`{program} status{url}` shows it; `{program} reset model-api{url}` closes it.")
    return 0


def _program() -> str:
    """How a shell in the current directory runs this command line, as it is installed."""
    scripts = sysconfig.get_path("scripts")
    script = shutil.which("anybreaker", path=scripts)
    if script is None:  # not installed with its script: run the module
        return f"{_shown_path(sys.executable)} -m anybreaker"
    on_path = shutil.which("anybreaker")
    if on_path is not None and Path(on_path).resolve() == Path(script).resolve():
        return "anybreaker"
    return _shown_path(script)


def _shown_path(path: str) -> str:
    """``path`` for a shell: relative to the current directory when under it."""
    relative = os.path.relpath(path)
    if relative.startswith(os.pardir):
        return shlex.quote(path)
    return shlex.quote(relative if os.sep in relative else os.path.join(os.curdir, relative))


if __name__ == "__main__":
    sys.exit(main())
