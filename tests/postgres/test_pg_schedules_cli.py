"""Schedules on PostgreSQL from the command line: two worker processes, one run per tick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

CLI = str(Path(sys.executable).parent / "abstractruntime")
HELLO = '''from abstractruntime import StepPlan, WorkflowSpec

workflow = WorkflowSpec("hello", "end", {"end": lambda run, ctx: StepPlan("end", complete_output={})})
'''


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--store", url, "--no-input", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=_env())


def test_two_worker_processes_on_postgresql_start_one_run_per_tick(database_url: str, tmp_path: Path,
                                                                   admin: Any) -> None:
    import psycopg

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.py").write_text(HELLO, encoding="utf-8")
    added = _cli(database_url, "schedule", "add", "every", str(flows / "hello.py"), "--cron", "* * * * *",
                 "--catch-up", "all", "--overlap", "allow", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(_cli(database_url, "schedule", "list", "--json").stdout)[0]["name"] == "every"
    # As if it had been added 20 minutes ago.
    at = datetime.now(timezone.utc).replace(second=30, microsecond=0) - timedelta(minutes=20)
    with psycopg.connect(database_url, autocommit=True) as conn:
        (raw,) = conn.execute("SELECT record FROM abstractruntime.schedule_log WHERE seq = 1").fetchone()
        record = json.loads(bytes(raw))
        record["at"] = at.isoformat()
        conn.execute("UPDATE abstractruntime.schedule_log SET record = %s WHERE seq = 1", [json.dumps(record).encode()])
    command = [CLI, "--store", database_url, "--workflows", str(flows), "worker", "--once", "--json"]
    procs = [subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    history = json.loads(_cli(database_url, "schedule", "history", "every", "--limit", "100", "--json").stdout)
    assert len(history) in (20, 21) and {d["action"] for d in history} == {"start"}
    runs = json.loads(_cli(database_url, "runs", "list", "--json", "--limit", "1000").stdout)
    assert sorted(r["run_id"] for r in runs) == sorted(d["run_id"] for d in history)
    assert {r["status"] for r in runs} == {"completed"}
    paused = _cli(database_url, "schedule", "pause", "every", "--json")
    assert paused.returncode == 0 and json.loads(paused.stdout)["paused"] is True
    assert _cli(database_url, "schedule", "remove", "every").returncode == 0
    assert _cli(database_url, "schedule", "remove", "every").returncode == 4
