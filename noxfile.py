"""Development sessions: tests, lint, typecheck, docs, benchmarks and the demo."""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = [
    "tests",
    "tests_minimal",
    "tests_sdk",
    "examples",
    "lint",
    "typecheck",
    "docs",
]

# On a developer's machine a second run reuses the environments the first one
# built, and installs nothing when nothing it installs has changed. CI builds
# every environment afresh, and a Python version it cannot find fails the run
# instead of skipping that version's sessions.
ON_CI = bool(os.environ.get("CI"))
nox.options.reuse_venv = "no" if ON_CI else "yes"
nox.options.error_on_missing_interpreters = ON_CI

ROOT = Path(__file__).parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PYTHONS = [
    match.group(1)
    for classifier in PROJECT["classifiers"]
    if (match := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", classifier))
]
# Besides the extra "testing" (pytest and trio), which the minimal session
# cannot take: it runs with no optional dependency.
TEST_REQUIREMENTS = ["pytest>=8.2", "hypothesis>=6.100"]
# anybreaker.otel's tests read its metrics with the SDK and scrape the
# Prometheus exporter; the dashboard's test renders with matplotlib.
OTEL_TEST_REQUIREMENTS = [
    "opentelemetry-sdk>=1.27",
    "opentelemetry-exporter-prometheus>=0.48b0",
    "matplotlib",
]
# A model SDK built on httpx, for the tests of anybreaker.httpx under it (and
# the samples that use it): from 3.14.1 on, the OpenAI SDK lets an exception of
# its HTTP client that is not an httpx error reach its caller unretried.
SDK_REQUIREMENTS = ["openai>=3.14.1"]
# The servers' tests fail instead of skipping where CI demands the servers.
PASSTHROUGH = ("ANYBREAKER_REQUIRE_SERVERS",)


def _env(**extra: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSTHROUGH if name in os.environ}
    env.update(extra)
    return env


def _install(session: nox.Session, *args: str) -> None:
    """Install ``args``, unless this environment already holds exactly what they install.

    What they install is decided by the arguments, pyproject.toml (for the
    project and its extras) and the requirement files named with ``-r``; the
    project itself is installed editable, so a change to its code needs no
    reinstall.
    """
    digest = hashlib.sha256("\0".join(args).encode())
    for path in ["pyproject.toml", *(args[i + 1] for i, arg in enumerate(args) if arg == "-r")]:
        digest.update(b"\0" + (ROOT / path).read_bytes())
    location = getattr(session.virtualenv, "location", None)
    stamp = Path(location) / "installed-by-noxfile.txt" if location else None
    if stamp is not None and digest.hexdigest() in _lines(stamp):
        session.log(f"already installed, unchanged: {' '.join(args)}")
        return
    session.install(*args)
    if stamp is not None:
        with stamp.open("a", encoding="utf-8") as file:
            file.write(digest.hexdigest() + "\n")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@nox.session(python=PYTHONS)
@nox.parametrize("runtime", ["asyncio", "trio"])
def tests(session: nox.Session, runtime: str) -> None:
    """Run the suite with every optional dependency, under one runtime."""
    _install(session, "-e", ".[all,otel,testing]", *TEST_REQUIREMENTS, *OTEL_TEST_REQUIREMENTS)
    session.run("pytest", *session.posargs, env=_env(ANYBREAKER_RUNTIME=runtime))


@nox.session(python=PYTHONS[0])
def tests_minimal(session: nox.Session) -> None:
    """Run the suite with no optional dependency: asyncio only, no SQL, no Redis."""
    _install(session, "-e", ".", *TEST_REQUIREMENTS)
    session.run("pytest", *session.posargs, env=_env(ANYBREAKER_RUNTIME="asyncio"))


@nox.session(python=PYTHONS[0])
@nox.parametrize("runtime", ["asyncio", "trio"])
def tests_sdk(session: nox.Session, runtime: str) -> None:
    """Run the httpx transport's tests under a real model SDK, and the samples that use it."""
    _install(session, "-e", ".[all,testing]", *SDK_REQUIREMENTS, *TEST_REQUIREMENTS)
    session.run(
        "pytest",
        "tests/test_httpx_sdk.py",
        "tests/test_docs_samples.py",
        *session.posargs,
        env=_env(ANYBREAKER_RUNTIME=runtime),
    )


@nox.session(python=PYTHONS[0])
def examples(session: nox.Session) -> None:
    """Run the example storage backend's own conformance tests."""
    _install(session, "-e", ".[testing]")
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
    _install(session, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """Type-check src and tests with mypy --strict."""
    _install(
        session,
        "-e",
        ".[all,otel,testing]",
        "mypy",
        "nox",
        *SDK_REQUIREMENTS,
        *TEST_REQUIREMENTS,
        *OTEL_TEST_REQUIREMENTS,
    )
    session.run("mypy")


@nox.session(python=PYTHONS[0])
def docs(session: nox.Session) -> None:
    """Build the documentation site, warnings as errors."""
    _install(session, "-e", ".", "-r", "docs/requirements.txt")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(python="3.12")
def bench(session: nox.Session) -> None:
    """Measure anybreaker against the other breakers, side by side, in one run."""
    _install(session, "-e", ".[all,otel]", "-r", "benchmarks/requirements.txt")
    # Only mamba-agents' standard-library errors/circuit_breaker.py is loaded.
    _install(session, "--no-deps", "mamba-agents")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=PYTHONS[0])
def demo(session: nox.Session) -> None:
    """Run the demo: a trio program guarded by a breaker kept in SQLite."""
    _install(session, "-e", ".[sqlite,trio]")
    session.run("python", "-m", "anybreaker", "demo", *session.posargs)
