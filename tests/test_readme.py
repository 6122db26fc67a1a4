"""The README, run as a reader runs it: every code block, in order, in one empty directory.

- A ``python`` block whose fence names a file (```` ```python title="search.py" ````)
  is saved under that name, for the command lines after it to run; any
  other ``python`` block runs as a script.
- A ``console`` block's ``$`` lines run in a shell, one after the other.
  The lines after a command are what it prints (stdout and stderr); they
  are compared with every number, and every run of spaces, taken as a
  wildcard: times and column widths vary from run to run.
- ``make`` lines are the repository's own commands. They run in the
  repository as a dry run (``make -n``), which checks that the target
  exists: ``make test`` is the command that runs this very test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
from pathlib import Path

import pytest

from .test_docs_samples import DOCS, PYTHON, README, ROOT, Block, code_blocks

COMMAND_TIMEOUT = 120
CONSOLE = {"console", "shell-session"}
EXTRA = re.compile(r"anybreaker\[(?P<extras>[\w,\s-]+)\]")


def _environment() -> dict[str, str]:
    """The reader's shell: this Python's scripts first on PATH, no URL preset."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("ANYBREAKER_URL", "MAKEFLAGS", "MAKELEVEL")
    }
    env["PATH"] = os.pathsep.join([sysconfig.get_path("scripts"), env.get("PATH", "")])
    return env


def _shape(lines: list[str]) -> list[str]:
    """Lines with every number and run of spaces made alike (see the module docstring)."""
    return [" ".join(re.sub(r"\d+(\.\d+)?", "0", line).split()) for line in lines]


def _commands(block: Block) -> list[tuple[str, list[str]]]:
    """A console block's commands, each with the output shown after it."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.source.splitlines():
        if line.startswith("$ "):
            commands.append((line.removeprefix("$ "), []))
        else:
            assert commands, f"{block}: output before any command: {line!r}"
            commands[-1][1].append(line)
    return commands


def _run_command(block: Block, command: str, shown: list[str], directory: Path) -> None:
    """Run one ``$`` line as a reader would, and compare what it prints with ``shown``."""
    words = shlex.split(command, comments=True)
    if words[0] == "make":
        directory = ROOT
        command = shlex.join(["make", "-n", *words[1:]])
    result = subprocess.run(
        command,
        shell=True,
        cwd=directory,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{block}: `{command}` exited {result.returncode}:\n{result.stdout}"
    )
    if shown:
        assert _shape(result.stdout.splitlines()) == _shape(shown), (
            f"{block}: `{command}` printed:\n{result.stdout}"
        )


@pytest.mark.processes
def test_readme_runs_in_order(tmp_path: Path) -> None:
    """Every block of the README runs, in order, and prints what the README shows."""
    pytest.importorskip("trio", reason="the README's samples need anybreaker[trio]")
    pytest.importorskip(
        "anybreaker.storage.sql", reason="the README's samples need anybreaker[sqlite]"
    )
    if shutil.which("make") is None:
        pytest.skip("the README's commands need make")
    blocks = list(code_blocks(README))
    for block in blocks:
        if block.language in PYTHON:
            path = tmp_path / (block.title or f"readme_line_{block.line}.py")
            path.write_text(block.source + "\n", encoding="utf-8")
            if block.title is None:
                _run_command(block, shlex.join(["python", path.name]), [], tmp_path)
        elif block.language in CONSOLE:
            for command, shown in _commands(block):
                _run_command(block, command, shown, tmp_path)
        else:
            pytest.fail(f"{block}: a {block.language or 'plain'} block, which this test cannot run")
    assert {block.language for block in blocks} == {"python", "console"}


def test_extras_named_in_the_docs_exist() -> None:
    """Every ``anybreaker[...]`` extra the README and the pages name is defined."""
    defined = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    named = {
        (page.name, extra.strip())
        for page in [README, *sorted(DOCS.glob("*.md"))]
        for match in EXTRA.finditer(page.read_text(encoding="utf-8"))
        for extra in match["extras"].split(",")
    }
    assert {"trio", "testing", "sqlite"} <= {extra for _, extra in named}
    assert {(page, extra) for page, extra in named if extra not in defined} == set()


def test_ci_runs_the_readme_test_command() -> None:
    """CI's script runs ``make test``, the README's test command."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\nmake test\n" in script
    assert "$ make test" in README.read_text(encoding="utf-8")
