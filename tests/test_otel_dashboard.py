"""The dashboard picture of the docs is drawn from metrics the current code reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.metrics", reason="needs opentelemetry-sdk")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "dashboard.py"
ASSETS = ROOT / "docs" / "assets"


def load_script() -> Any:
    """Import benchmarks/dashboard.py by path (the benchmarks are not a package)."""
    spec = importlib.util.spec_from_file_location("dashboard", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_numbers_are_what_the_code_reports() -> None:
    """Re-recording the outage gives the committed CSV (else: python benchmarks/dashboard.py)."""
    dashboard = load_script()
    scrapes = dashboard.record()
    assert dashboard.to_csv(scrapes) == (ASSETS / "dashboard.csv").read_text(encoding="utf-8"), (
        "the breaker reports other numbers now: run `python benchmarks/dashboard.py` "
        "and commit docs/assets/dashboard.png and dashboard.csv"
    )
    states = {scrape.state for scrape in scrapes}
    assert {"closed", "open"} <= states
    assert any(scrape.rejected for scrape in scrapes)


def test_the_picture_renders(tmp_path: Path) -> None:
    """The script writes the PNG and the CSV where it is told."""
    pytest.importorskip("matplotlib", reason="needs matplotlib")
    load_script().main(["--output", str(tmp_path)])
    assert (tmp_path / "dashboard.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "dashboard.csv").read_text(encoding="utf-8") == (
        ASSETS / "dashboard.csv"
    ).read_text(encoding="utf-8")
