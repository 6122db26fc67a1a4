"""anybreaker.httpx is optional: anybreaker works without httpx, and says how to get it."""

from __future__ import annotations

import subprocess
import sys


def test_importing_anybreaker_does_not_import_httpx() -> None:
    """httpx is imported by anybreaker.httpx only."""
    code = "import sys, anybreaker; print('httpx' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_without_httpx_the_import_error_names_the_extra() -> None:
    """Importing anybreaker.httpx without httpx says what to install."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "try:\n    import anybreaker.httpx\n"
        "except ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert 'pip install "anybreaker[httpx]"' in result.stdout
