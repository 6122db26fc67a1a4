"""Each trip rule across two processes: their outcomes only together cross it, and both see it."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._storages import REDIS_HOST, REDIS_PORT, redis_url, require_server, unique_name
from .conftest import BACKENDS

pytestmark = pytest.mark.processes

ROOT = Path(__file__).parent.parent
WAIT = 60.0
START = 1_000_000.0

RULES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    # rule: (settings, what each process does, one after the other)
    "failure_threshold": ({"failure_threshold": 4}, ["fail 2"], ["fail 2"]),
    "failure_rate_threshold": (
        {"failure_threshold": None, "failure_rate_threshold": 0.5, "minimum_calls": 8},
        ["succeed 4", "fail 2"],
        ["fail 2"],
    ),
    "consecutive_failures": (
        {"failure_threshold": None, "consecutive_failures": 4},
        ["succeed 1", "fail 2"],
        ["fail 2"],
    ),
    "slow_call_rate_threshold": (
        {
            "failure_threshold": None,
            "slow_call_duration": 1.0,
            "slow_call_rate_threshold": 0.5,
            "minimum_calls": 4,
        },
        ["succeed 2", "slow 1"],
        ["slow 1"],
    ),
}


class Worker:
    """A worker process, driven one command at a time."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests._rules_worker", json.dumps(settings)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.line() == "ready"

    def line(self) -> str:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], WAIT)
        line = self.process.stdout.readline() if readable else ""
        if not line:
            self.process.kill()
            _, errors = self.process.communicate(timeout=WAIT)
            pytest.fail(f"the worker said nothing: {errors}")
        return line.strip()

    def run(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.line())
        return answer

    def close(self) -> str:
        """End the worker; return what it wrote to stderr (its warnings)."""
        if self.process.poll() is None:
            self.process.kill()
        _, errors = self.process.communicate(timeout=WAIT)
        return errors


@pytest.fixture(params=["sqlite", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Where the two processes keep the breaker."""
    if request.param == "redis":
        pytest.importorskip(
            "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
        )
        require_server("Redis", REDIS_HOST, REDIS_PORT)
        yield {"kind": "redis", "url": redis_url(), "prefix": unique_name("rules")}
    else:
        pytest.importorskip(
            "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
        )
        yield {"kind": "sql", "url": f"sqlite:///{tmp_path / 'breakers.db'}", "table": "breakers"}


@pytest.mark.parametrize("rule", RULES)
def test_a_rule_crossed_only_by_two_processes_together_opens_for_both(
    shared: dict[str, Any], rule: str
) -> None:
    """Neither process's outcomes alone meet the rule; together they open it for both."""
    settings, first_does, second_does = RULES[rule]
    common = {
        **shared,
        "staleness": 0.0,
        "start": START,
        "slow_seconds": 2.0,
        # A storage operation slow under load is not what this test is about.
        "breaker": {"timeout": 3600.0, "window_size": 600.0, "storage_timeout": 30.0, **settings},
    }
    runtimes = [BACKENDS[0], BACKENDS[-1]]
    workers = [Worker({**common, "runtime": runtime}) for runtime in runtimes]
    try:
        first, second = workers
        for command in first_does:
            assert first.run(command)["refused"] == 0
        assert first.run("state")["state"] == "closed"
        for command in second_does:
            assert second.run(command)["refused"] == 0
        states = [worker.run("state") for worker in workers]
        refused = first.run("fail 1")["refused"]
    finally:
        errors = [worker.close() for worker in workers]
    assert [state["state"] for state in states] == ["open", "open"], (states, errors)
    assert refused == 1
