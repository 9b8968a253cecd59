"""Fixtures for the AbstractCore integration tests: a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

# The helpers live next to this file; make them importable whatever pytest's import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_support import HAS_ABSTRACTCORE, AbstractCoreServer  # noqa: E402
from openai_fixture import OpenAIFixture  # noqa: E402


@pytest.fixture
def openai_server() -> Iterator[OpenAIFixture]:
    """A fresh scripted OpenAI-compatible server for one test."""
    with OpenAIFixture() as server:
        yield server


@pytest.fixture(scope="module")
def abstractcore_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AbstractCoreServer]:
    """A real AbstractCore server (module scope: it takes ~2 s to start)."""
    if not HAS_ABSTRACTCORE:
        pytest.skip("abstractcore extra not installed")
    server = AbstractCoreServer(tmp_path_factory.mktemp("abstractcore-home"))
    server.wait_ready()
    try:
        yield server
    finally:
        server.stop()
