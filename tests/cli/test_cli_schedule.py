"""`abstractruntime schedule ...`: add, list, pause, resume, remove, history; exit codes; a worker
starting a due tick's run."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HELLO = '''from abstractruntime import StepPlan, WorkflowSpec

workflow = WorkflowSpec("hello", "end", {"end": lambda run, ctx: StepPlan(
    "end", complete_output={"who": run.vars.get("who")})})
'''


def _flow(tmp_path: Path) -> Path:
    path = tmp_path / "flows" / "hello.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(HELLO, encoding="utf-8")
    return path


def test_add_list_pause_resume_remove(cli: Any, tmp_path: Path) -> None:
    flow = _flow(tmp_path)
    added = cli("schedule", "add", "morning", str(flow), "--cron", "0 9 * * MON-FRI", "--tz", "Europe/Paris",
                "--var", "who=ops", "--catch-up", "one", "--overlap", "queue", "--json")
    assert added.exit_code == 0, added.stderr
    doc = json.loads(added.stdout)
    assert (doc["name"], doc["workflow_id"], doc["tz"], doc["vars"]) == ("morning", "hello", "Europe/Paris",
                                                                         {"who": "ops"})
    assert (doc["catch_up"], doc["overlap"], doc["paused"]) == ("one", "queue", False)
    assert doc["next_tick"].endswith(("T07:00:00+00:00", "T08:00:00+00:00"))  # 09:00 in Paris
    assert "path" not in doc and str(flow) not in added.stdout  # never a path
    listed = json.loads(cli("schedule", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["morning"]
    assert json.loads(cli("schedule", "pause", "morning", "--json").stdout)["paused"] is True
    assert json.loads(cli("schedule", "list", "--json").stdout)[0]["next_tick"] is None
    assert json.loads(cli("schedule", "resume", "morning", "--json").stdout)["paused"] is False
    assert json.loads(cli("schedule", "remove", "morning", "--json").stdout) == {"name": "morning", "removed": True}
    assert json.loads(cli("schedule", "list", "--json").stdout) == []


def test_bad_input_is_one_line_and_a_documented_exit_code(cli: Any, tmp_path: Path) -> None:
    flow = _flow(tmp_path)
    bad = cli("schedule", "add", "x", str(flow), "--cron", "0 9 * *")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "bad cron expression" in bad.stderr
    assert "Traceback" not in bad.stderr
    zone = cli("schedule", "add", "x", str(flow), "--cron", "0 9 * * *", "--tz", "Europe/Atlantis")
    assert zone.exit_code == 2 and "unknown time zone" in zone.stderr
    policy = cli("schedule", "add", "x", str(flow), "--cron", "0 9 * * *", "--catch-up", "some")
    assert policy.exit_code == 2 and "catch-up" in policy.stderr
    name = cli("schedule", "add", "no.dots", str(flow), "--cron", "0 9 * * *")
    assert name.exit_code == 2 and "bad schedule name" in name.stderr
    assert cli("schedule", "add", "x", str(flow), "--cron", "0 9 * * *").exit_code == 0
    again = cli("schedule", "add", "x", str(flow), "--cron", "0 9 * * *")
    assert again.exit_code == 1 and "exists already" in again.stderr
    for verb in ("pause", "resume", "remove", "history"):
        missing = cli("schedule", verb, "nope")
        assert missing.exit_code == 4 and "no schedule 'nope'" in missing.stderr, verb
    assert json.loads(cli("schedule", "list", "--json").stdout)[0]["name"] == "x"


def test_a_worker_starts_the_due_tick_through_the_registry(cli: Any, sh: Any, tmp_path: Path, store: Path) -> None:
    flow = _flow(tmp_path)
    assert cli("schedule", "add", "every", str(flow), "--cron", "* * * * *", "--catch-up", "one",
               "--var", "who=ops").exit_code == 0
    # As if the schedule had been added an hour ago (the log stamps the real time).
    log = store / "schedules" / "every" / "log.jsonl"
    record = json.loads(log.read_text(encoding="utf-8"))
    record["at"] = "2000-01-01T00:00:00+00:00"
    log.write_text(json.dumps(record) + "\n", encoding="utf-8")
    worked = sh("--workflows", str(tmp_path / "flows"), "worker", "--once", "--json")
    assert worked.exit_code == 0, worked.stderr
    (line,) = worked.stdout.splitlines()
    state = json.loads(line)
    assert state["run_id"].startswith("every.") and state["status"] == "completed"
    assert state["output"] == {"who": "ops"}
    history = json.loads(cli("schedule", "history", "every", "--json").stdout)
    # The latest tick ran; the 59 before it in the last hour, and the decades before, were skipped.
    assert [d["action"] for d in history] == ["start", "skip", "skip"]
    assert history[0]["run_id"] == state["run_id"] and history[1]["ticks"] == 59
    assert history[2]["ticks"] is None and history[2]["first_tick"] == "2000-01-01T00:01:00+00:00"
    minute = lambda: datetime.now(timezone.utc).strftime("every.%Y%m%dT%H%M00Z")  # noqa: E731
    before = minute()
    again = sh("--workflows", str(tmp_path / "flows"), "worker", "--once", "--json")
    after = minute()
    assert again.exit_code == 0, again.stderr
    started = [json.loads(line)["run_id"] for line in again.stdout.splitlines()]
    # The tick already started is never started again; only the real clock passing into a new
    # minute since the first worker makes a new tick due, and then that one alone.
    expected = [[tick] for tick in {before, after} - {state["run_id"]}]  # due when the worker looked
    if before == state["run_id"]:
        expected.append([])  # the worker may have looked before the minute turned
    assert started in expected and state["run_id"] not in started, (state["run_id"], before, after, started)


def test_a_worker_names_a_schedule_whose_workflow_is_not_registered(cli: Any, sh: Any, tmp_path: Path,
                                                                     store: Path, monkeypatch: Any) -> None:
    flow = _flow(tmp_path)
    added = cli("schedule", "add", "every", str(flow), "--cron", "* * * * *", "--catch-up", "one")
    log = store / "schedules" / "every" / "log.jsonl"
    record = json.loads(log.read_text(encoding="utf-8"))
    record["at"] = "2030-01-01T00:00:00+00:00"  # not due before 2030: the warning alone is checked
    log.write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert added.exit_code == 0
    monkeypatch.delenv("ABSTRACTRUNTIME_WORKFLOWS")
    other = tmp_path / "elsewhere"
    other.mkdir()
    warned = cli("--workflows", str(other), "schedule", "add", "late", str(flow), "--cron", "* * * * *")
    assert warned.exit_code == 0 and "workers will start no run of it yet" in warned.stderr


def _backdate(store_files: Path, name: str, minutes: int) -> None:
    """As if schedule ``name`` had been added ``minutes`` ago (the log stamps the real time)."""
    from datetime import datetime, timedelta, timezone

    log = store_files / "schedules" / name / "log.jsonl"
    record = json.loads(log.read_text(encoding="utf-8"))
    at = datetime.now(timezone.utc).replace(second=30, microsecond=0) - timedelta(minutes=minutes)
    record["at"] = at.isoformat()
    log.write_text(json.dumps(record) + "\n", encoding="utf-8")


def test_two_worker_processes_start_one_run_per_tick(cli: Any, tmp_path: Path, store: Path) -> None:
    """Two `worker --once` processes at the same moment, 30 ticks to catch up: 30 runs, 30 decisions."""
    import os
    import subprocess

    from tests.cli.cli_support import BIN

    flow = _flow(tmp_path)
    assert cli("schedule", "add", "every", str(flow), "--cron", "* * * * *", "--catch-up", "all",
               "--overlap", "allow").exit_code == 0
    _backdate(store, "every", 30)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1"}
    command = [str(BIN), "--workflows", str(tmp_path / "flows"), "worker", "--once", "--json"]
    procs = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    runs = sorted(p.name for p in (store / "runs").iterdir() if p.name.startswith("every."))
    history = json.loads(cli("schedule", "history", "every", "--limit", "100", "--json").stdout)
    assert len(runs) in (30, 31)  # the minute may turn while the workers run
    assert sorted(d["run_id"] for d in history) == runs and {d["action"] for d in history} == {"start"}
    advanced = [json.loads(line)["run_id"] for out, _ in outputs for line in out.splitlines()]
    assert sorted(advanced) == runs  # each run advanced by one of the two, once
