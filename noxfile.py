"""Development sessions: tests, lint, typecheck, docs, benchmarks and the demo."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "tests_minimal", "examples", "lint", "typecheck", "docs"]

ROOT = Path(__file__).parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PYTHONS = [
    match.group(1)
    for classifier in PROJECT["classifiers"]
    if (match := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", classifier))
]
TEST_REQUIREMENTS = ["pytest>=8.2", "hypothesis>=6.100"]
# The servers' tests fail instead of skipping where CI demands the servers.
PASSTHROUGH = ("ANYBREAKER_REQUIRE_SERVERS",)


def _env(**extra: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSTHROUGH if name in os.environ}
    env.update(extra)
    return env


@nox.session(python=PYTHONS)
@nox.parametrize("runtime", ["asyncio", "trio"])
def tests(session: nox.Session, runtime: str) -> None:
    """Run the suite with every optional dependency, under one runtime."""
    session.install("-e", ".[all]", "trio", *TEST_REQUIREMENTS)
    session.run("pytest", *session.posargs, env=_env(ANYBREAKER_RUNTIME=runtime))


@nox.session(python=PYTHONS[0])
def tests_minimal(session: nox.Session) -> None:
    """Run the suite with no optional dependency: asyncio only, no SQL, no Redis."""
    session.install("-e", ".", *TEST_REQUIREMENTS)
    session.run("pytest", *session.posargs, env=_env(ANYBREAKER_RUNTIME="asyncio"))


@nox.session(python=PYTHONS[0])
def examples(session: nox.Session) -> None:
    """Run the example storage backend's own conformance tests."""
    session.install("-e", ".", "trio", *TEST_REQUIREMENTS)
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        "--rootdir=examples/json_file_storage",
        "examples/json_file_storage",
        *session.posargs,
    )


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """Type-check src and tests with mypy --strict."""
    session.install("-e", ".[all]", "trio", "mypy", "nox", *TEST_REQUIREMENTS)
    session.run("mypy")


@nox.session(python=PYTHONS[0])
def docs(session: nox.Session) -> None:
    """Build the documentation site, warnings as errors."""
    session.install("-e", ".", "-r", "docs/requirements.txt")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(python="3.12")
def bench(session: nox.Session) -> None:
    """Measure anybreaker against the other breakers, side by side, in one run."""
    session.install("-e", ".[all]", "trio", "-r", "benchmarks/requirements.txt")
    # Only mamba-agents' standard-library errors/circuit_breaker.py is loaded.
    session.install("--no-deps", "mamba-agents")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=PYTHONS[0])
def demo(session: nox.Session) -> None:
    """Run the demo: a trio program guarded by a breaker kept in SQLite."""
    session.install("-e", ".[sqlite]", "trio")
    session.run("python", "-m", "anybreaker", "demo", *session.posargs)
