"""``anybreaker.otel`` is optional: nothing imports OpenTelemetry until it is asked for."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_importing_anybreaker_does_not_import_opentelemetry() -> None:
    """import anybreaker (and using a breaker) loads no opentelemetry module."""
    result = run(
        "import sys, anyio, anybreaker\n"
        "async def main():\n"
        "    async with anybreaker.CircuitBreaker('api'):\n"
        "        pass\n"
        "anyio.run(main)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_opentelemetry_the_error_says_what_to_install() -> None:
    """anybreaker.otel without OpenTelemetry raises ImportError naming the extra."""
    result = run(
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "try:\n"
        "    import anybreaker.otel\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "anybreaker[otel]"' in result.stdout
