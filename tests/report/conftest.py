"""Fixtures for the report tests: real stores under tmp_path, and one shared headless browser."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_support import copy_samples, hostile_run  # noqa: E402


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A private copy of sample_runs/store."""
    return copy_samples(tmp_path)


@pytest.fixture
def hostile_store(tmp_path: Path) -> Path:
    """A store holding the run ``hostile`` (markup, entities and bidi text everywhere)."""
    root = tmp_path / "hostile-store"
    hostile_run(root)
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module (skipped without it, unless CI=true)."""
    from report_browser import Browser, require_browser

    require_browser()
    session = Browser()
    try:
        yield session
    finally:
        session.close()
