"""Real servers going away, coming back and answering slowly, under a breaker.

Each test runs against a throwaway server of its own, so that stopping or
pausing it disturbs nothing else: a ``redis-server`` on a free port (with an
append-only file, so its data survives a restart), and a PostgreSQL cluster
made with ``initdb`` in a temporary directory. Breaker time is a FakeClock;
the only real waits are for the servers to start and stop.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest

from anybreaker import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    Storage,
    StorageError,
)
from anybreaker.testing import FakeClock

from ._storages import unique_name

pytestmark = [pytest.mark.anyio, pytest.mark.processes, pytest.mark.server]

STORAGE_TIMEOUT = 0.3
RETRY_INTERVAL = 1.0
PAUSE_SECONDS = 1.5
SETTINGS: dict[str, Any] = {
    "failure_threshold": 2,
    "success_threshold": 1,
    "timeout": 10.0,
    "storage_timeout": STORAGE_TIMEOUT,
    "storage_retry_interval": RETRY_INTERVAL,
}


class Boom(Exception):
    """The guarded dependency failed."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, *, up: bool, deadline: float = 15.0) -> None:
    """Wait (bounded) until ``port`` accepts connections, or stops accepting them."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            listening = True
        except OSError:
            listening = False
        if listening is up:
            return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} did not {'open' if up else 'close'} in {deadline} s")


class Server(Protocol):
    """A throwaway server the test may stop, start and slow down."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def storage(self) -> Any: ...

    def slow(self) -> Any: ...


class RedisServer:
    """A ``redis-server`` of the test's own, persisting to an append-only file."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.prefix = unique_name("outage")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.directory), "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def storage(self) -> Any:
        from anybreaker.storage.redis import RedisStorage

        return RedisStorage(self.url, prefix=self.prefix, staleness=0)

    @contextmanager
    def slow(self) -> Iterator[None]:
        """Hold every command for several times the breaker's storage_timeout."""
        self._cli("CLIENT", "PAUSE", str(int(PAUSE_SECONDS * 1000)), "ALL")
        try:
            yield
        finally:
            # A paused server holds CLIENT UNPAUSE too; this PING returns
            # when the pause is over.
            self._cli("PING")

    def _cli(self, *command: str) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), *command],
            check=True,
            capture_output=True,
            timeout=15,
        )


def missing_binary(reason: str) -> NoReturn:
    """Skip for a server binary that is not installed, or fail where servers are required."""
    if os.environ.get("ANYBREAKER_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason}; ANYBREAKER_REQUIRE_SERVERS=1 demands it")
    pytest.skip(reason)


def postgres_binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, if a PostgreSQL server is installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """A PostgreSQL cluster of the test module's own, in a temporary directory."""

    def __init__(self, binaries: Path, directory: Path) -> None:
        self.binaries = binaries
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.table = unique_name("outage")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *arguments: str) -> None:
        command = [str(self.binaries / tool), *arguments]
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options,
            "-l", str(self.directory / "log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def storage(self) -> Any:
        from anybreaker.storage.sql import SQLAlchemyStorage

        return SQLAlchemyStorage(self.url, table=self.table, staleness=0)

    @contextmanager
    def slow(self) -> Iterator[None]:
        """Lock the breakers' table so that every statement on it waits."""
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn) as connection:
            connection.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                connection.rollback()


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the module (initdb takes seconds)."""
    pytest.importorskip(
        "anybreaker.storage.sql", reason="needs anybreaker[postgres]", exc_type=ImportError
    )
    pytest.importorskip("psycopg", reason="needs anybreaker[postgres]")
    binaries = postgres_binaries()
    if binaries is None:
        missing_binary("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Not pytest's tmp_path: its parents are private to this user, and the
    # server may have to run as the postgres user.
    directory = Path(tempfile.mkdtemp(prefix="anybreaker-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    try:
        cluster = PostgresServer(binaries, directory)
        cluster.start()
        yield cluster
        if cluster.running():
            cluster.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["redis", "postgresql+psycopg"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A throwaway server, running; whatever a test does to it, it is running after."""
    if request.param == "redis":
        pytest.importorskip(
            "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
        )
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            missing_binary("redis-server and redis-cli are not both installed")
        redis = RedisServer(tmp_path)
        redis.start()
        yield redis
        redis.stop()
        return
    cluster: PostgresServer = request.getfixturevalue("postgres_cluster")
    cluster.table = unique_name("outage")
    if not cluster.running():
        cluster.start()
    yield cluster
    if not cluster.running():
        cluster.start()


@asynccontextmanager
async def opened(server: Server) -> AsyncIterator[Storage]:
    """A second storage on the same server, to see what was really stored."""
    async with server.storage() as storage:
        yield storage


async def fail(breaker: CircuitBreaker) -> None:
    """Make one guarded call that fails."""
    with pytest.raises(Boom):
        async with breaker:
            raise Boom


async def refused(breaker: CircuitBreaker) -> None:
    """Check that a guarded call is refused without running."""
    ran = False
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            ran = True
    assert not ran


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "anybreaker" and record.levelno == logging.WARNING
    ]


async def test_server_stopped_mid_run_and_started_again(
    server: Server, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The breaker keeps protecting through an outage, and loses nothing to it."""
    async with server.storage() as storage:
        breaker = CircuitBreaker("api", storage=storage, clock=clock, **SETTINGS)
        async with breaker:
            pass
        await fail(breaker)
        await fail(breaker)
        before = await storage.get("api")
        assert before is not None
        assert before.state is CircuitState.OPEN

        server.stop()
        # Refused as open, from the last state it knew: never a driver error.
        await refused(breaker)
        assert await breaker.get_state() is CircuitState.OPEN
        clock.advance(SETTINGS["timeout"])
        await fail(breaker)  # the trial, decided locally, fails: open again
        await refused(breaker)
        assert len(outage_warnings(caplog)) == 1

        server.start()
        async with opened(server) as other:
            assert await other.get("api") == before
        # Until the retry interval passes it stays on its local state...
        await refused(breaker)
        clock.advance(RETRY_INTERVAL)
        # ...then it reads the server again, where the breaker opened
        # `timeout + RETRY_INTERVAL` ago: a trial is due, and it closes it.
        async with breaker:
            pass
        assert await breaker.get_state() is CircuitState.CLOSED
        async with opened(server) as other:
            after = await other.get("api")
        assert after is not None
        assert after.state is CircuitState.CLOSED
        assert after.version > before.version
    assert len(outage_warnings(caplog)) == 1


async def test_server_down_at_start_then_up(server: Server, clock: FakeClock) -> None:
    """With no server at first, the breaker protects locally, then tells the server."""
    server.stop()
    async with server.storage() as storage:
        breaker = CircuitBreaker("api", storage=storage, clock=clock, **SETTINGS)
        async with breaker:
            pass
        await fail(breaker)
        await fail(breaker)
        await refused(breaker)

        server.start()
        clock.advance(RETRY_INTERVAL)
        # Back on the server, which learns the failures counted meanwhile:
        # the breaker opens there too, for every process.
        await refused(breaker)
        async with opened(server) as other:
            stored = await other.get("api")
            assert stored is not None
            assert stored.state is CircuitState.OPEN
            assert await other.names() == ["api"]


async def test_slow_server_counts_as_an_outage(server: Server, clock: FakeClock) -> None:
    """A server slower than storage_timeout is a storage failure, handled locally."""
    async with server.storage() as storage:
        breaker = CircuitBreaker("api", storage=storage, clock=clock, **SETTINGS)
        await fail(breaker)
        clock.advance(0.1)
        with server.slow():
            started = time.monotonic()
            await fail(breaker)  # the second failure opens it, in this process
            await refused(breaker)
            assert await breaker.get_state() is CircuitState.OPEN
            elapsed = time.monotonic() - started
        assert elapsed < PAUSE_SECONDS
        clock.advance(RETRY_INTERVAL)
        # Answering again: the failure counted during the outage reaches the
        # server, whose window then holds both; it opens there, for everyone.
        await refused(breaker)
        async with opened(server) as other:
            stored = await other.get("api")
            assert stored is not None
            assert stored.state is CircuitState.OPEN


@pytest.mark.parametrize("policy", ["allow", "reject", "raise"])
async def test_other_policies_with_no_server(server: Server, clock: FakeClock, policy: str) -> None:
    """Connection refused means what on_storage_error says, never a driver error."""
    server.stop()
    settings = {**SETTINGS, "on_storage_error": policy}
    async with server.storage() as storage:
        breaker = CircuitBreaker("api", storage=storage, clock=clock, **settings)
        ran = 0

        async def call() -> None:
            nonlocal ran
            async with breaker:
                ran += 1
                raise Boom

        expected = {"allow": Boom, "reject": CircuitBreakerOpenError}
        for _ in range(3):
            with pytest.raises(expected.get(policy, StorageError)) as caught:
                await call()
            if policy == "raise":
                assert caught.value.__cause__ is not None
        assert ran == (3 if policy == "allow" else 0)
