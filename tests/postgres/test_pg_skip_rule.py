"""The PostgreSQL tests skip only where PostgreSQL is missing outside CI; in CI that fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest


def _cluster() -> Any:
    path = Path(__file__).parent / "cluster.py"
    spec = importlib.util.spec_from_file_location("abstractruntime_tests_pg_cluster_rule", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_missing_postgres_skips_outside_ci_and_fails_in_ci() -> None:
    cluster = _cluster()
    with pytest.raises(pytest.skip.Exception):
        cluster.require_bindir(None, None)
    with pytest.raises(pytest.skip.Exception):
        cluster.require_bindir(None, "false")
    with pytest.raises(pytest.fail.Exception, match="CI must run the PostgreSQL tests"):
        cluster.require_bindir(None, "true")
    assert cluster.require_bindir(Path("/x"), "true") == Path("/x")
