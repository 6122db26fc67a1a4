"""Every code sample of the documentation and the README runs.

Samples live in ``docs/samples/`` and the pages include them with snippets.
A sample is a module that exposes ``async def main()`` (and runs it under
``if __name__ == "__main__":``), or ``test_*`` coroutine functions (the
samples of the testing page). It runs under the runtimes it is written for:
a sample that imports ``trio`` runs under trio only, one that imports
``asyncio`` under asyncio only, any other under both. When
``docs/samples/NAME.out`` exists, the sample's output must be exactly that.

The ``python`` code blocks written inline in the pages run too, each on its
own: top-level ``await`` and ``async with`` are allowed (such a block runs
under each runtime, like a sample), any other block runs once as a script.
The README's blocks run in order, as a reader runs them: see
``test_readme.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import runpy
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import anyio
import pytest

from ._storages import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    REDIS_HOST,
    REDIS_PORT,
    require_server,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SAMPLES = DOCS / "samples"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
RUNTIMES = ("asyncio", "trio")

SNIPPET = re.compile(r"""^\s*--8<--\s+["']?(?P<path>[^"'\s]+)["']?\s*$""")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int
    language: str
    source: str
    info: str = ""
    """The opening fence's words after the language (``title="search.py"``)."""

    @property
    def title(self) -> str | None:
        """The file name the block is shown as, if its fence gives one."""
        match = re.search(r"""\btitle=(["'])(?P<title>[^"']+)\1""", self.info)
        return match["title"] if match else None

    @property
    def is_include(self) -> bool:
        """Whether the block only includes files with snippets."""
        lines = [line for line in self.source.splitlines() if line.strip()]
        return bool(lines) and all(SNIPPET.match(line) for line in lines)

    @property
    def included(self) -> list[str]:
        """The paths the block includes with snippets."""
        return [
            match["path"] for line in self.source.splitlines() if (match := SNIPPET.match(line))
        ]

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> Iterator[Block]:
    """Yield the fenced code blocks of ``page``, dedented, nested ones included."""
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        start = index
        if opening is None:
            continue
        indent, fence = opening["indent"], opening["fence"]
        language, _, info = opening["info"].strip().partition(" ")
        language = language.lstrip(".").lower()
        body: list[str] = []
        while index < len(lines):
            line = lines[index]
            index += 1
            closing = FENCE.match(line)
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(line.removeprefix(indent))
        yield Block(page, start, language, "\n".join(body), info.strip())


def inline_python_blocks() -> list[Block]:
    """The ``python`` blocks written in the pages themselves (the README's run in order)."""
    return [
        block
        for page in PAGES
        if page.exists() and page != README
        for block in code_blocks(page)
        if block.language in PYTHON and not block.is_include
    ]


def runtimes_of(source: str, where: object) -> tuple[str, ...]:
    """The runtimes a piece of code is written for, from the modules it imports."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    chosen = tuple(runtime for runtime in RUNTIMES if runtime in imported)
    assert len(chosen) < 2, f"{where} imports both asyncio and trio; pick one, or neither"
    return chosen or RUNTIMES


def skip_unless_available(source: str, runtime: str | None = None) -> None:
    """Skip when the runtime, storage or server the code needs is not available."""
    if runtime == "trio" or re.search(r"^\s*(import|from) trio\b", source, re.MULTILINE):
        pytest.importorskip("trio", reason="needs trio")
    if re.search(r"SQLiteStorage|SQLAlchemyStorage|sqlite(\+\w+)?://|postgresql", source):
        pytest.importorskip(
            "anybreaker.storage.sql", reason="needs anybreaker[sqlite]", exc_type=ImportError
        )
    if "create_async_engine" in source:
        pytest.importorskip("greenlet", reason="needs sqlalchemy[asyncio]")
    if "aiosqlite" in source:
        pytest.importorskip("aiosqlite", reason="needs anybreaker[aiosqlite]")
    if "opentelemetry" in source:
        pytest.importorskip("opentelemetry.sdk.metrics", reason="needs opentelemetry-sdk")
        if "prometheus" in source:
            pytest.importorskip(
                "opentelemetry.exporter.prometheus",
                reason="needs opentelemetry-exporter-prometheus",
            )
    if re.search(r"^\s*(import|from) (httpx|anybreaker\.httpx)\b", source, re.MULTILINE):
        pytest.importorskip("httpx", reason="needs anybreaker[httpx]")
    if re.search(r"^\s*(import|from) openai\b", source, re.MULTILINE):
        pytest.importorskip("openai", reason="needs the OpenAI SDK (nox -s tests_sdk installs it)")
    if "storage_from_url" in source:
        pytest.importorskip("anybreaker.storage._registry", reason="needs storage_from_url")
    if "postgresql" in source:
        driver = "asyncpg" if "asyncpg" in source else "psycopg"
        pytest.importorskip(driver, reason=f"needs {driver}")
        require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    if re.search(r"RedisStorage|redis://", source):
        pytest.importorskip(
            "anybreaker.storage.redis", reason="needs anybreaker[redis]", exc_type=ImportError
        )
        require_server("Redis", REDIS_HOST, REDIS_PORT)


def sample_cases() -> list[Any]:
    """One case per sample and runtime it is written for."""
    return [
        pytest.param(path, runtime, id=f"{path.stem}-{runtime}")
        for path in sorted(SAMPLES.glob("*.py"))
        for runtime in runtimes_of(path.read_text(encoding="utf-8"), path.name)
    ]


def block_cases() -> list[Any]:
    """One case per inline block and runtime (a block without ``await``: once)."""
    cases: list[Any] = []
    for block in inline_python_blocks():
        try:
            is_async = bool(compile_block(block).co_flags & inspect.CO_COROUTINE)
        except SyntaxError:
            is_async = False  # the test reports it
        runtimes: tuple[str | None, ...] = runtimes_of(block.source, block) if is_async else (None,)
        cases.extend(
            pytest.param(block, runtime, id=f"{block}-{runtime or 'script'}")
            for runtime in runtimes
        )
    return cases


def compile_block(block: Block) -> CodeType:
    """Compile an inline block, allowing top-level ``await``."""
    code: CodeType = compile(block.source, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    return code


def load_sample(path: Path) -> Any:
    """Import a sample file as a fresh module (not as ``__main__``)."""
    spec = importlib.util.spec_from_file_location(f"docs_sample_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry_points(module: Any) -> list[Callable[[], Awaitable[None]]]:
    """A sample's ``main``, or else its ``test_*`` coroutine functions."""
    if inspect.iscoroutinefunction(getattr(module, "main", None)):
        return [module.main]
    tests = [
        value
        for name, value in vars(module).items()
        if name.startswith("test_") and inspect.iscoroutinefunction(value)
    ]
    assert tests, f"{module.__file__} has no async def main() and no async tests"
    return tests


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run samples in an empty directory, so the files they make go away."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(("path", "runtime"), sample_cases())
def test_sample_runs(path: Path, runtime: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A sample file runs to completion under each runtime it is written for."""
    skip_unless_available(path.read_text(encoding="utf-8"), runtime)
    module = load_sample(path)
    for entry_point in entry_points(module):
        anyio.run(entry_point, backend=runtime)
    expected = path.with_suffix(".out")
    if expected.exists():
        assert capsys.readouterr().out == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "path",
    [path for path in sorted(SAMPLES.glob("*.py")) if "def main(" in path.read_text()],
    ids=lambda path: path.stem,
)
def test_sample_runs_as_a_script(path: Path) -> None:
    """A sample with ``main()`` runs it when started as a script, as a reader would."""
    source = path.read_text(encoding="utf-8")
    skip_unless_available(source)
    assert 'if __name__ == "__main__":' in source, f"{path.name} has no script runner"
    runpy.run_path(str(path), run_name="__main__")


@pytest.mark.parametrize(("block", "runtime"), block_cases())
def test_inline_block_runs(block: Block, runtime: str | None) -> None:
    """A ``python`` block written in a page runs on its own."""
    skip_unless_available(block.source, runtime)
    code = compile_block(block)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    if runtime is None:
        exec(code, namespace)
        return

    async def run() -> None:
        await eval(code, namespace)

    anyio.run(run, backend=runtime)


def test_every_sample_is_shown() -> None:
    """Every sample file is included by a page, and every include names a file."""
    included: set[Path] = set()
    for page in PAGES:
        if not page.exists():
            continue
        for block in code_blocks(page):
            for name in block.included:
                path = ROOT / name
                assert path.exists(), f"{block} includes {name}, which does not exist"
                included.add(path.resolve())
    shown = {path.resolve() for path in SAMPLES.glob("*.py")}
    assert shown <= included, f"samples no page shows: {sorted(shown - included)}"


def test_pages_are_found() -> None:
    """The page scan sees the README, the pages and their samples (a guard on itself)."""
    assert ROOT / "README.md" in PAGES
    assert (DOCS / "index.md") in PAGES
    assert any(block.is_include for block in code_blocks(DOCS / "index.md"))
