"""Two processes share the breakers of their httpx clients through one SQLite file."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx", reason='needs anybreaker[httpx] (pip install "anybreaker[httpx]")')
pytest.importorskip(
    "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
)

from ._http_server import Reply, serve

pytestmark = pytest.mark.processes

WORKER = Path(__file__).with_name("_httpx_worker.py")
WAIT = 30.0
"""Seconds the test waits for any one answer of a child before it fails."""


@contextmanager
def worker(runtime: str, database: Path, url: str) -> Iterator[subprocess.Popen[str]]:
    """A worker child, set up and waiting for requests to send; ended at the end."""
    child = subprocess.Popen(
        [sys.executable, str(WORKER), runtime, str(database), url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(child) == "ready"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=WAIT)


def read_line(child: subprocess.Popen[str]) -> str:
    """The child's next line of output; fail if it takes longer than ``WAIT``."""
    assert child.stdout is not None
    readable, _, _ = select.select([child.stdout], [], [], WAIT)
    line = child.stdout.readline() if readable else ""
    if not line:
        child.kill()
        _, errors = child.communicate(timeout=WAIT)
        pytest.fail(f"worker said nothing: {errors}")
    return line.strip()


def send(child: subprocess.Popen[str]) -> dict[str, Any]:
    """Have the child send one request; return what it saw."""
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    seen: dict[str, Any] = json.loads(read_line(child))
    return seen


def test_a_retry_after_seen_by_one_process_keeps_the_other_away(
    anyio_backend: str, tmp_path: Path
) -> None:
    """A 429 with Retry-After: 2 seen by one process: the other sends nothing for 2 s."""
    database = tmp_path / "breakers.db"
    with serve() as server:
        url = f"{server.url}/v1/models"
        server.answer(Reply(429, headers={"Retry-After": "2"}))
        with (
            worker(anyio_backend, database, url) as first,
            worker(anyio_backend, database, url) as second,
        ):
            limited = send(first)
            assert limited["status"] == 429
            server.answer(Reply(200))

            refused = send(second)
            assert refused["refused"]
            assert refused["key"] == server.origin
            assert 1.0 < refused["retry_in"] <= 2.0
            assert send(first)["refused"]

            # Wait as a caller would: for the time the refusal named, and no longer.
            time.sleep(max(0.0, refused["at"] + refused["retry_in"] - time.time() + 0.05))
            assert send(second)["status"] == 200
        assert server.requests == ["GET /v1/models", "GET /v1/models"]
        # The opening began after the 429 left the server, and lasted 2 s.
        first_sent, next_sent = server.arrivals
        assert next_sent - first_sent >= 2.0
