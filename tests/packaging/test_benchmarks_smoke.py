"""Smoke test of the benchmark runner: ``python -m benchmarks --quick`` works end to end.

It asserts that the runner exits 0 and writes a results document in which every scenario
is either measured or explicitly skipped — never any timing (CI machines are noisy).
The PostgreSQL group (``python -m benchmarks.postgres --quick``) starts its own throwaway
cluster; like the PostgreSQL tests it skips only where PostgreSQL is missing outside CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("fsync_floor", "durable_steps", "effect_steps", "flat_cost", "ask_roundtrip", "verify",
             "runs_list", "startup", "checkpoint_proof", "code_first_replay", "long_ledger")
BASELINES = ("upstream", "langgraph", "dbos")
BENCH_PYTHON = REPO / ".bench-venv" / "bin" / "python"


def _run(tmp_path: Path, *extra: str, module: str = "benchmarks") -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--output", str(tmp_path), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = list(tmp_path.glob("*-quick.json"))
    assert len(written) == 1, written
    assert str(written[0]) in proc.stderr  # the runner says where the results are
    return json.loads(written[0].read_text())


def _measured_or_skipped(section: dict) -> bool:
    if "error" in section:
        return False
    return bool(section.get("skipped")) or len(section) > 0


def test_quick_run_writes_every_scenario(tmp_path: Path) -> None:
    results = _run(tmp_path, "--baselines", "none")
    assert results["quick"] is True
    assert set(SCENARIOS) <= set(results["scenarios"])
    for name in SCENARIOS:
        section = results["scenarios"][name]
        assert _measured_or_skipped(section), (name, section)
        assert "skipped" not in section, (name, section)  # our own scenarios always run
    for name in BASELINES:
        assert results["baselines"][name]["skipped"], name
    # Nested parts that may be unavailable are explicitly skipped, never silently absent.
    assert "api" in results["scenarios"]["ask_roundtrip"]
    assert "cli" in results["scenarios"]["ask_roundtrip"]
    # A new run answered once: two new directory entries and three appends, each made durable once.
    assert results["scenarios"]["ask_roundtrip"]["api"]["fsyncs"] == {"directory": 2, "ledger.jsonl": 3}
    fsync_rows = [row for row in results["table"] if row["measure"] == "API: fsyncs per round trip"]
    assert fsync_rows and fsync_rows[0]["met"] is True
    assert results["scenarios"]["verify"]["records"] > 0
    assert results["scenarios"]["long_ledger"]["segments"] >= 2  # the quick run is sealed into segments too
    scenarios_in_table = {row["scenario"] for row in results["table"]}
    assert {"durable steps", "effect steps", "flat cost", "verify", "start-up", "code-first replay"} <= scenarios_in_table


def test_missing_bench_venv_is_reported_as_skipped(tmp_path: Path) -> None:
    results = _run(tmp_path, "--only", "fsync_floor", "--bench-python", str(tmp_path / "no-such-python"))
    for name in BASELINES:
        assert "no bench venv" in results["baselines"][name]["skipped"]
    assert results["scenarios"]["durable_steps"]["skipped"]


@pytest.mark.skipif(not BENCH_PYTHON.exists(), reason="no bench venv (.bench-venv) on this machine")
def test_quick_run_with_the_upstream_baseline(tmp_path: Path) -> None:
    results = _run(tmp_path, "--only", "durable_steps", "--baselines", "upstream")
    upstream = results["baselines"]["upstream"]
    if "skipped" in upstream:
        pytest.skip(upstream["skipped"])
    assert "error" not in upstream, upstream
    assert upstream["package"] == "abstractruntime 0.0.1"
    assert upstream["durable"]["steps"] == results["sizes"]["steps"]


def _require_postgres() -> None:
    """Skip without PostgreSQL's initdb — or fail in CI (tests/postgres/cluster.py's rule)."""
    path = REPO / "tests" / "postgres" / "cluster.py"
    spec = importlib.util.spec_from_file_location("abstractruntime_tests_pg_cluster_bench", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.require_bindir(module.find_bindir(), os.environ.get("CI"))


def _pg_group(results: dict) -> dict:
    from benchmarks.postgres import PG_SCENARIOS

    group = results["postgres"]
    assert "skipped" not in group and "error" not in group, group
    assert group["server"]["settings"]["fsync"] == "on"  # benchmarks commit durably
    for name in PG_SCENARIOS:  # every registered scenario runs in the quick form
        assert _measured_or_skipped(group["scenarios"][name]), (name, group["scenarios"][name])
        assert "skipped" not in group["scenarios"][name], name
    return group


def test_quick_postgres_group_ours(tmp_path: Path) -> None:
    _require_postgres()
    results = _run(tmp_path, "--baselines", "none", "--markdown", module="benchmarks.postgres")
    group = _pg_group(results)
    effects = group["scenarios"]["pg_effect_steps"]
    assert effects["ours"]["steps"] == results["sizes"]["pg_effect_steps"]
    assert effects["ours"]["steps_per_s"] > 0
    assert effects["dbos"]["skipped"] == "not selected (--baselines)"
    assert all(results["scenarios"][name]["skipped"] for name in SCENARIOS)  # only the PostgreSQL group ran
    assert "effect steps (PostgreSQL)" in {row["scenario"] for row in results["table"]}


@pytest.mark.skipif(not BENCH_PYTHON.exists(), reason="no bench venv (.bench-venv) on this machine")
def test_quick_postgres_group_with_dbos(tmp_path: Path) -> None:
    _require_postgres()
    results = _run(tmp_path, "--baselines", "dbos", module="benchmarks.postgres")
    dbos = _pg_group(results)["scenarios"]["pg_effect_steps"]["dbos"]
    if "skipped" in dbos:
        pytest.skip(dbos["skipped"])  # dbos (or its psycopg) not installed in the bench venv
    assert "error" not in dbos, dbos
    assert dbos["package"].startswith("dbos ") and dbos["steps"] == results["sizes"]["pg_effect_steps"]


def test_fleet_fault_rows_render_as_markdown() -> None:
    """The kill -9 rows have no "compared with" cell: the table still renders, cells are text."""
    from benchmarks.pg_fleet import worker_kill_rows
    from benchmarks.report import render_markdown

    rows = worker_kill_rows({"runs": 40, "workers": 4, "lease_s": 2.0, "lost": 0, "never_executed": 0,
                             "executed_twice": 1, "executed_more": 0, "not_verifying": 0,
                             "drained_after_kill_s": 3.5})
    for row in rows:
        assert all(isinstance(cell, str) for cell in (row.scenario, row.measure, row.ours, row.versus, row.target))
    table = render_markdown(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[2].startswith("| fleet fault (PostgreSQL) | kill -9 of 1 of 4 workers") and "| 0 |  |" in table[2]


def test_agent_loop_group_runs_alone(tmp_path: Path) -> None:
    """``python -m benchmarks.agent_loop --quick``: ours on every (turns, variant), the baselines of
    the group in the bench venv when there is one (skipped with the reason otherwise), and none of
    the other groups' baselines."""
    results = _run(tmp_path, module="benchmarks.agent_loop")
    section = results["scenarios"]["agent_loop"]
    assert "error" not in section and "skipped" not in section, section
    sizes = results["sizes"]
    assert [(p["turns"], p["variant"]) for p in section["points"]] == [
        (t, v) for t in sizes["agent_turns"] for v in sizes["agent_variants"]]
    for point in section["points"]:
        ours = point["ours"]
        assert ours["disk_bytes"] >= ours["files"]["ledger"] > ours["conversation_bytes"]
        assert ours["verify_seconds"] > 0 and ours["report_seconds"] > 0 and ours["report_bytes"] > 0
        assert ours["cpu_late_seconds"] > 0 and ours["cpu_early_seconds"] > 0
        for name in ("langgraph", "dbos"):
            assert _measured_or_skipped(point[name]), (name, point[name])
    for name in BASELINES:
        assert results["baselines"][name]["skipped"], name
    assert any(row["scenario"] == "agent loop" for row in results["table"])
    assert any("verify, then the HTML report" in row["measure"] for row in results["table"])
    assert not any(row["ours"].startswith("skipped: not selected") for row in results["table"])
