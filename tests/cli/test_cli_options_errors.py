"""Global options in either place, JSON errors with --json, and a closed stdout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cli_support import BIN


def test_global_options_after_the_command(sh, store: Path, wf: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    r = sh("run", str(wf / "approval.py"), "--no-input", "--run-id", "g1", "--store", str(other), "-q")
    assert r.exit_code == 5, r.stderr
    assert r.stdout.strip().split("@")[0] == "g1"
    assert r.stderr == ""  # -q after the command silenced the messages
    assert (other / "runs" / "g1").is_dir() and not (store / "runs").exists()
    r = sh("runs", "show", "g1", "--store", str(other), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["run"]["run_id"] == "g1"
    r = sh("runs", "list", f"--store={other}", "-v")
    assert r.exit_code == 0 and r.stdout.startswith("g1\t")
    r = sh("snapshot", "list", "--store", str(other), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_the_value_of_a_command_option_is_not_taken_for_a_global_one(sh, wf: Path) -> None:
    wf_path = wf / "approval.py"
    text = wf_path.read_text(encoding="utf-8")
    assert '"allow_free_text": False' in text
    free = wf / "free.py"
    free.write_text(text.replace('"allow_free_text": False', '"allow_free_text": True'), encoding="utf-8")
    r = sh("run", str(free), "--no-input", "--run-id", "v1")
    assert r.exit_code == 5
    r = sh("resume", r.stdout.strip(), "--answer", "-v", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["vars"]["decision"]["answer"] == "-v"


def test_json_error_document_on_stdout(sh, wf: Path) -> None:
    r = sh("runs", "show", "missing", "--json")
    assert r.exit_code == 4
    doc = json.loads(r.stdout)
    assert doc["error"]["exit_code"] == 4
    assert doc["error"]["code"] in ("store_not_found", "run_not_found")
    assert r.stderr.startswith("error: ")
    sh("run", str(wf / "tools.py"), "--run-id", "t1")
    r = sh("--json", "runs", "show", "missing")
    doc = json.loads(r.stdout)
    assert r.exit_code == 4 and doc["error"]["code"] == "run_not_found"
    assert doc["error"]["message"].startswith("Unknown run_id: missing")
    r = sh("resume", "t1", "--current", "--answer", "x", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["error"]["code"] == "run_not_waiting"
    r = sh("runs", "list", "--status", "bogus", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["error"] == {**doc["error"], "code": "invalid_input", "exit_code": 2}
    r = sh("emit", "no-such-key", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 4 and doc["error"]["code"] == "not_found" and "no-such-key" in doc["error"]["message"]
    # Usage errors from the option parser too.
    r = sh("runs", "list", "--limit", "many", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["error"]["code"] == "usage" and doc["error"]["exit_code"] == 2
    # Without --json an error leaves stdout empty.
    r = sh("runs", "show", "missing")
    assert r.exit_code == 4 and r.stdout == ""


def _long_run(sh, wf: Path) -> str:
    loop = wf / "loop.py"
    loop.write_text(
        "from abstractruntime import StepPlan, WorkflowSpec\n"
        "def step(run, ctx):\n"
        "    n = run.vars.get('n', 0) + 1\n"
        "    run.vars['n'] = n\n"
        "    if n >= 600:\n"
        "        return StepPlan('step', complete_output={'n': n})\n"
        "    return StepPlan('step', next_node='step')\n"
        "workflow = WorkflowSpec('loop', entry_node='step', nodes={'step': step})\n", encoding="utf-8")
    r = sh("run", str(loop), "--run-id", "long1")
    assert r.exit_code == 0, r.stderr
    return "long1"


@pytest.mark.parametrize("command", [["ledger", "show", "long1", "--jsonl"], ["ledger", "show", "long1"]])
def test_closed_stdout_ends_quietly(sh, store: Path, wf: Path, tmp_path: Path, command: list[str]) -> None:
    _long_run(sh, wf)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store)}
    script = f'set -o pipefail; "{BIN}" {" ".join(command)} | head -1'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.count("\n") == 1


def test_cancel_exits_as_documented(sh, wf: Path) -> None:
    from cli_support import REPO

    doc = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "a run that already completed or failed is left as it is, exit 1" in doc
    sh("run", str(wf / "approval.py"), "--run-id", "c1", "--no-input")
    r = sh("cancel", "c1", "--reason", "not needed")
    assert r.exit_code == 0 and r.stdout == "c1\n"
    assert sh("cancel", "c1").exit_code == 0  # already cancelled: what was asked is true
    assert sh("run", str(wf / "tools.py"), "--run-id", "c2").exit_code == 0
    r = sh("cancel", "c2", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["error"]["code"] == "run_terminal"
    assert "already completed; nothing to cancel" in r.stderr
    assert json.loads(sh("runs", "show", "c2", "--json").stdout)["run"]["status"] == "completed"
