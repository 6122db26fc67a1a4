"""The command line: ``anybreaker status | reset | force-open | demo``.

``status``, ``reset`` and ``force-open`` work on the breakers kept in a
storage URL (``--url``, else ``$ANYBREAKER_URL``, else the demo's SQLite
file in the current directory). Exit codes: 0 done, 1 the storage failed,
2 a usage error (bad URL, missing file, unknown breaker name).
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
from typing import Any
from urllib.parse import unquote

import anyio

from . import _machine as machine
from ._breaker import CircuitBreaker
from ._config import CircuitBreakerConfig
from ._errors import StorageError
from ._state import CircuitState
from .storage._protocol import BreakerRecord, Storage

__all__ = ["DEMO_DATABASE", "main"]

DEMO_DATABASE = "anybreaker-demo.db"
"""The SQLite file the demo keeps its breaker in, in the current directory."""

URL_VARIABLE = "ANYBREAKER_URL"

_USAGE_ERROR = 2
_STORAGE_FAILED = 1


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

    status = commands.add_parser(
        "status",
        parents=[storage_options],
        help="list the breakers in a storage",
        description="List the breakers in a storage: state, failures within the "
        "window, and time until a trial call is allowed.",
    )
    status.add_argument(
        "--window",
        type=_seconds,
        default=CircuitBreakerConfig().window_size,
        metavar="SECONDS",
        help="count the failures of the last SECONDS "
        "(default: %(default)s, the default window_size)",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(run=_run_status)

    reset = commands.add_parser(
        "reset",
        parents=[storage_options],
        help="close a breaker and clear its history",
        description="Close a breaker and clear its failure history, for every "
        "process that shares the storage.",
    )
    reset.add_argument("name", help="the breaker's name")
    reset.set_defaults(run=_run_reset)

    force_open = commands.add_parser(
        "force-open",
        parents=[storage_options],
        help="open a breaker until it is reset",
        description="Open a breaker until `anybreaker reset`, for every process "
        "that shares the storage.",
    )
    force_open.add_argument("name", help="the breaker's name")
    force_open.set_defaults(run=_run_force_open)

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


# -- status ----------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    name: str
    state: CircuitState
    forced: bool
    failures: int
    time_until_retry: float


def _run_status(arguments: argparse.Namespace) -> int:
    rows = _run(arguments, _status, arguments.url, arguments.window)
    if arguments.json:
        print(json.dumps([_json(row) for row in rows], indent=2))
    elif rows:
        _print_table(rows, arguments.window)
    else:
        print(f"no breakers in {arguments.url}")
    return 0


async def _status(url: str, window: float) -> list[_Row]:
    config = CircuitBreakerConfig(window_size=window)
    async with _open_storage(url) as storage:
        records = [(name, await storage.get(name)) for name in await storage.names()]
    now = time.time()
    return sorted(
        (_row(name, record, config, now) for name, record in records if record),
        key=lambda row: row.name,
    )


def _row(name: str, record: BreakerRecord, config: CircuitBreakerConfig, now: float) -> _Row:
    state = machine.view(record, config, now)
    failures = machine.window_stats(record, config.window_size, now).failures
    return _Row(
        name=name,
        state=state,
        forced=record.forced and state is CircuitState.OPEN,
        failures=failures if state is CircuitState.CLOSED else 0,
        time_until_retry=machine.time_until_retry(record, config, now),
    )


def _json(row: _Row) -> dict[str, Any]:
    return {
        "name": row.name,
        "state": row.state.value,
        "forced": row.forced,
        "failures": row.failures,
        # JSON has no infinity: a forced breaker waits for a reset, not a time.
        "time_until_retry": None if row.forced else round(row.time_until_retry, 3),
    }


def _print_table(rows: list[_Row], window: float) -> None:
    header = ("NAME", "STATE", f"FAILURES ({window:g}s)", "RETRY IN")
    lines = [header] + [
        (
            row.name,
            f"{row.state.value} (forced)" if row.forced else row.state.value,
            str(row.failures),
            _retry_in(row),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _retry_in(row: _Row) -> str:
    if row.forced:
        return "until reset"
    if row.state is CircuitState.OPEN:
        return f"{row.time_until_retry:.1f}s"
    return "-"


# -- reset and force-open --------------------------------------------------


def _run_reset(arguments: argparse.Namespace) -> int:
    old = _run(arguments, _change, arguments.url, arguments.name, CircuitBreaker.reset)
    print(f"{arguments.name}: {old.value} -> closed (history cleared)")
    return 0


def _run_force_open(arguments: argparse.Namespace) -> int:
    old = _run(arguments, _change, arguments.url, arguments.name, CircuitBreaker.force_open)
    print(f"{arguments.name}: {old.value} -> forced open until `anybreaker reset {arguments.name}`")
    return 0


async def _change(
    url: str, name: str, change: Callable[[CircuitBreaker], Awaitable[None]]
) -> CircuitState:
    """Apply ``change`` to the stored breaker ``name``; return the state it had."""
    async with _open_storage(url) as storage:
        names = await storage.names()
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise CommandError(f"no breaker named {name!r} in {url} (breakers: {known})")
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
