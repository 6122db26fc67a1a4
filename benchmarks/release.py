"""Release 0.1 of anybreaker, loaded beside the current code to measure both in one run.

Release 0.1 did not count closed-state successes at all; the current code
counts them (for the failure-rate rule) without I/O. To compare the two in
the same rounds, the release's source is taken from git at bench time
(``git archive`` of ``src/anybreaker`` at ``RELEASE``) into a temporary
directory and imported under another package name. Its package uses only
relative imports on the in-memory path, so the copy runs as it was
released, beside the installed ``anybreaker``.
"""

from __future__ import annotations

import atexit
import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
RELEASE = "a172b0e"
"""Release 0.1: the last commit before the window became counts in time buckets."""
PACKAGE = "anybreaker_release_0_1"

_loaded: ModuleType | None = None


def load() -> ModuleType:
    """Import release 0.1 as ``anybreaker_release_0_1``; ``RuntimeError`` if git cannot give it."""
    global _loaded
    if _loaded is not None:
        return _loaded
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", RELEASE, "src/anybreaker"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        raise RuntimeError(
            f"git cannot give release 0.1 ({RELEASE}) here: "
            f"{detail.decode(errors='replace').strip() or error}"
        ) from error
    directory = Path(tempfile.mkdtemp(prefix="anybreaker-release-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    (directory / "src" / "anybreaker").rename(directory / PACKAGE)
    sys.path.insert(0, str(directory))
    try:
        _loaded = importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(directory))
    return _loaded
