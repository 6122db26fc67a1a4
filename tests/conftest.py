"""Runtimes and storages every behaviour test runs under."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from anybreaker import Storage
from anybreaker.testing import FakeClock

from ._storages import STORAGES


def _runtimes() -> tuple[str, ...]:
    """The runtimes to test: both, or the one ``ANYBREAKER_RUNTIME`` names."""
    installed = ("asyncio", "trio") if importlib.util.find_spec("trio") else ("asyncio",)
    wanted = os.environ.get("ANYBREAKER_RUNTIME")
    if wanted is None:
        return installed
    if wanted not in installed:
        raise pytest.UsageError(f"ANYBREAKER_RUNTIME={wanted!r} is not installed")
    return (wanted,)


BACKENDS = _runtimes()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run async tests under both runtimes, and ``storage`` tests on every storage."""
    if hasattr(metafunc.cls, "pytest_generate_tests"):
        return  # the class chooses its own runtimes (as the conformance kit does)
    if "storage" not in metafunc.fixturenames:
        if "anyio_backend" in metafunc.fixturenames:
            metafunc.parametrize("anyio_backend", BACKENDS)
        return
    cases = [
        pytest.param(backend, kind, id=f"{backend}-{kind}")
        for kind, (_, runs_on_trio) in STORAGES.items()
        for backend in BACKENDS
        if backend == "asyncio" or runs_on_trio
    ]
    metafunc.parametrize(("anyio_backend", "storage_kind"), cases)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the runtimes under test; a trio run leaves synchronous tests to asyncio."""

    def wanted(item: pytest.Item) -> bool:
        if "anyio_backend" not in getattr(item, "fixturenames", ()):
            return BACKENDS != ("trio",)
        callspec = getattr(item, "callspec", None)
        # Classes that choose their own runtimes (the kit) are held to BACKENDS too.
        return callspec is None or callspec.params.get("anyio_backend", BACKENDS[0]) in BACKENDS

    deselected = [item for item in items if not wanted(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if wanted(item)]


@pytest.fixture
def anyio_backend() -> str:
    """The runtime; ``pytest_generate_tests`` parametrizes it over both."""
    return "asyncio"


@pytest.fixture
async def storage(storage_kind: str, tmp_path: Path) -> AsyncIterator[Storage]:
    """A fresh, empty storage of each kind."""
    factory, _ = STORAGES[storage_kind]
    async with factory(tmp_path) as made:
        yield made


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()
