"""The demo (``anybreaker demo``), as a new user runs it: twice, then the command it suggests."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import anybreaker
from anybreaker.__main__ import main

SUBPROCESS_TIMEOUT = 60
CALL = re.compile(r"^ *\d+\.\d\ds  call +\d+  (?P<result>ok|failed|rejected)")
CHANGE = re.compile(r"^ +>> (?P<old>\w+) -> (?P<new>\w+): (?P<why>.*)$")


def _requirements() -> None:
    pytest.importorskip("trio", reason="the demo needs trio")
    pytest.importorskip(
        "anybreaker.storage.sql", reason="the demo needs anybreaker[sqlite]", exc_type=ImportError
    )


def _path(scripts_on_path: bool) -> str:
    """PATH with or without this Python's scripts directory (where ``anybreaker`` is)."""
    scripts = sysconfig.get_path("scripts")
    others = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    others = [entry for entry in others if Path(entry).resolve() != Path(scripts).resolve()]
    return os.pathsep.join([scripts, *others] if scripts_on_path else others)


def _run(command: list[str], cwd: Path, path: str) -> str:
    """Run ``command`` as a user's shell would; return what it printed, failing on stderr."""
    env = {name: value for name, value in os.environ.items() if name != "ANYBREAKER_URL"}
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        env={**env, "PATH": path, "PYTHONWARNINGS": "error"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def _demo(cwd: Path, path: str) -> list[str]:
    return _run([sys.executable, "-m", "anybreaker", "demo"], cwd, path).splitlines()


def _suggested(lines: list[str]) -> list[list[str]]:
    """The commands the demo's last line suggests, as a shell splits them."""
    return [shlex.split(command) for command in re.findall(r"`([^`]+)`", lines[-1])]


def _periods(lines: list[str], start: str) -> list[tuple[str, list[str]]]:
    """The call results between state changes: ``[(state, [result, ...]), ...]``."""
    periods: list[tuple[str, list[str]]] = [(start, [])]
    for line in lines:
        if change := CHANGE.match(line):
            assert change["old"] == periods[-1][0], line
            periods.append((change["new"], []))
        elif call := CALL.match(line):
            periods[-1][1].append(call["result"])
    return periods


@pytest.mark.processes
def test_demo_shows_each_change_after_the_call_that_caused_it(tmp_path: Path) -> None:
    """The demo prints its settings, then each state change after the calls that caused it."""
    _requirements()
    lines = _demo(tmp_path, _path(scripts_on_path=True))
    text = "\n".join(lines)
    for setting in (
        "failure_threshold=3, window_size=10  3 failures within 10 s open it",
        "timeout=0.5",
        "success_threshold=2",
        "backoff_multiplier=60",
        "re-opens it 60 times longer: 30 s",
        "max_timeout=60",
    ):
        assert setting in text
    assert "It starts closed." in text

    periods = _periods(lines, "closed")
    assert [state for state, _ in periods] == [
        "closed",
        "open",
        "half_open",
        "closed",
        "open",
        "half_open",
        "open",
    ]
    for state, results in periods:
        if state == "closed" and results[-1] == "failed":  # it opened: 3 failures in a row
            assert results[-3:] == ["failed"] * 3
        if state == "open":  # no call reached the API while open
            assert set(results) == {"rejected"}
        if state == "half_open":  # the first call after the open period is the trial
            assert results[0] != "rejected"
    assert periods[-1][1] == ["rejected"]  # open, backed off, at the end of the run
    reasons = [change["why"] for line in lines if (change := CHANGE.match(line))]
    assert reasons[0] == "3 failures within 10 s; open for 0.5 s"
    assert reasons[-1] == "the trial failed; open for 30 s, backed off"
    assert "Run the demo again: it starts open." in text


@pytest.mark.processes
@pytest.mark.parametrize("scripts_on_path", [True, False], ids=["on-path", "not-on-path"])
def test_demo_suggests_commands_that_work_as_printed(scripts_on_path: bool, tmp_path: Path) -> None:
    """The demo run twice starts open, and the commands it then prints work as printed."""
    _requirements()
    path = _path(scripts_on_path)
    _demo(tmp_path, path)
    second = _demo(tmp_path, path)
    assert any(line.startswith("It starts OPEN, left so by an earlier run") for line in second)
    assert _periods(second, "open") == [("open", ["rejected"] * 5)]  # no call reached the API

    status, reset = _suggested(second)
    assert (status[0] == "anybreaker") is scripts_on_path
    assert status[1:] == ["status"]
    assert reset[1:] == ["reset", "model-api"]
    table = _run(status, tmp_path, path).splitlines()
    assert table[1].split()[:2] == ["model-api", "open"]
    assert _run(reset, tmp_path, path) == "model-api: open -> closed (history cleared)\n"


def test_demo_without_trio_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without trio, ``demo`` says to install it instead of failing with a traceback."""
    monkeypatch.setitem(sys.modules, "trio", None)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == (
        'anybreaker: error: the demo is a trio program: pip install "anybreaker[trio]"\n'
    )


def test_demo_without_sqlalchemy_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without SQLAlchemy, ``demo`` names the extra to install and creates no file."""
    pytest.importorskip("trio", reason="the demo needs trio")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    for module in ("anybreaker.storage.sql", "anybreaker._demo"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delitem(vars(anybreaker), "SQLiteStorage", raising=False)
    assert main(["demo"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("anybreaker: error: ")
    assert 'pip install "anybreaker[sqlite]"' in error
    assert list(tmp_path.iterdir()) == []
