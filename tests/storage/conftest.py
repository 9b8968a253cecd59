"""Fixtures shared by the storage tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import abstractruntime.storage.run_index as run_index


@pytest.fixture
def boot_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The boot id of this process read from a file of the test's (re-read: the cache is reset)."""
    path = tmp_path / "boot"
    path.write_bytes(b"boot-A")
    monkeypatch.setenv(run_index.BOOT_ID_FILE_ENV, str(path))
    monkeypatch.setattr(run_index, "_BOOT_ID", [])
    return path
