"""The command line against PostgreSQL: the same commands as on a folder, credentials never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "abstractruntime")
APPROVAL = REPO / "sample_runs" / "workflows" / "approval.py"


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    return subprocess.run([CLI, "--store", url, "--no-input", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env)


def test_run_resume_list_show_verify_and_report_on_postgresql(database_url: str, tmp_path: Path) -> None:
    url = database_url
    started = _cli(url, "run", str(APPROVAL), "--run-id", "pg1", "--var", "service=billing")
    assert started.returncode == 5, started.stderr
    handle = started.stdout.strip()
    assert handle.startswith("pg1@w")
    done = _cli(url, "resume", handle, "--answer", "yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    again = _cli(url, "resume", handle, "--answer", "yes")
    assert again.returncode == 1 and "already answered" in again.stderr
    listed = json.loads(_cli(url, "runs", "list", "--json").stdout)
    assert [r["run_id"] for r in listed] == ["pg1"]
    shown = json.loads(_cli(url, "runs", "show", "pg1", "--at", "2", "--json").stdout)
    assert shown["ledger"]["seq"] == 2
    assert _cli(url, "ledger", "show", "pg1", "--jsonl").stdout.count("\n") >= 5
    verified = _cli(url, "verify", "pg1", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True
    assert _cli(url, "verify", "--all").returncode == 0
    page = tmp_path / "pg1.html"
    assert _cli(url, "report", "pg1", "-o", str(page)).returncode == 0 and page.stat().st_size > 1000


def test_a_password_in_the_url_is_never_printed(database_url: str) -> None:
    url = database_url
    parts = urlsplit(url)
    secret = "Pa55-w0rd-never-shown"
    wrong = urlunsplit((parts.scheme, f"nobody:{secret}@{parts.hostname}:{parts.port}", parts.path, "", ""))
    for args in (("runs", "list"), ("runs", "list", "--json")):
        result = _cli(wrong, *args)
        assert result.returncode != 0
        assert secret not in result.stdout + result.stderr


def test_store_copy_moves_runs_to_postgresql_and_back(database_url: str, tmp_path: Path) -> None:
    folder, back = tmp_path / "runs", tmp_path / "back"
    url = database_url
    started = _cli(str(folder), "run", str(APPROVAL), "--run-id", "f1", "--var", "service=billing")
    assert started.returncode == 5, started.stderr

    copied = _cli(str(folder), "store", "copy", "--to", url, "--json")
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["copied"] == ["f1"]
    # The copied run goes on in PostgreSQL, then comes back to another folder and verifies there.
    assert _cli(url, "resume", started.stdout.strip(), "--answer", "yes").returncode == 0
    assert _cli(url, "store", "copy", "--to", str(back)).stdout.split() == ["f1"]
    assert json.loads(_cli(str(back), "runs", "show", "f1", "--json").stdout)["run"]["status"] == "completed"
    assert _cli(str(back), "verify", "f1").returncode == 0

    again = _cli(str(folder), "store", "copy", "--to", url)  # the destination holds f1 further on: refused
    assert again.returncode == 1 and "holds a different run f1" in again.stderr and "Traceback" not in again.stderr
    assert json.loads(_cli(url, "runs", "show", "f1", "--json").stdout)["run"]["status"] == "completed"


GATED = '''
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec

def launch(target: str) -> str:
    """Launch something (needs approval)."""
    return "launched " + target

tools = [launch]
require_approval = ["launch"]

def go(run, ctx):
    calls = [{"name": "launch", "arguments": {"target": "moon"}, "call_id": "c1"}]
    return StepPlan("go", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, result_key="res"),
                    next_node="done")

workflow = WorkflowSpec("gated", "go", {"go": go, "done": lambda run, ctx: StepPlan(
    "done", complete_output={"out": run.vars["res"]["results"][0]["output"]})})
'''


def test_snapshots_bookmarks_tools_emit_and_cancel_on_postgresql(database_url: str, tmp_path: Path) -> None:
    url = database_url
    gated = tmp_path / "gated.py"
    gated.write_text(GATED)
    assert _cli(url, "run", str(APPROVAL), "--run-id", "s1", "--var", "service=billing").returncode == 5
    assert _cli(url, "snapshot", "create", "s1", "--name", "before").returncode == 0
    snapshots = json.loads(_cli(url, "snapshot", "list", "--json").stdout)
    assert [s["name"] for s in snapshots] == ["before"]
    assert _cli(url, "bookmark", "add", "s1", "audited").returncode == 0
    assert [b["name"] for b in json.loads(_cli(url, "bookmark", "list", "s1", "--json").stdout)] == ["audited"]
    assert _cli(url, "verify", "s1").returncode == 0  # the bookmark is checked too

    assert _cli(url, "run", str(gated), "--run-id", "g1").returncode == 5
    listed = json.loads(_cli(url, "tools", "list", "g1", "--json").stdout)
    assert [c["name"] for c in listed["tool_calls"]] == ["launch"]
    approved = _cli(url, "tools", "approve", "g1", "--calls-sha256", listed["calls_sha256"], "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["output"] == {"out": "launched moon"}

    event = REPO / "sample_runs" / "workflows" / "event.py"
    assert _cli(url, "run", str(event), "--run-id", "e1", "--var", "order_id=o-1").returncode == 5
    emitted = _cli(url, "emit", "payment:o-1", "--payload", '{"amount": 3}', "--json")
    assert emitted.returncode == 0, emitted.stderr
    assert json.loads(emitted.stdout)[0]["output"]["paid"] == {"amount": 3}
    assert _cli(url, "emit", "payment:o-1").returncode == 4  # nobody waits any more

    assert _cli(url, "cancel", "s1", "--reason", "not today").returncode == 0
    assert json.loads(_cli(url, "runs", "show", "s1", "--json").stdout)["run"]["status"] == "cancelled"
