"""Positions through the real command: runs show --at, snapshot --at, runs reindex, emit races, sys.exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CLI = str(Path(sys.executable).parent / "abstractruntime")

COUNTER = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def step(run, ctx):
        run.vars["i"] = run.vars.get("i", 0) + 1
        if run.vars["i"] < 3:
            return StepPlan("step", next_node="step")
        return StepPlan("step", next_node="done", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, "e"))

    workflow = WorkflowSpec("counter", "step", {
        "step": step, "done": lambda run, ctx: StepPlan("done", complete_output={"i": run.vars["i"]})})
''')


def _cli(store: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--store", str(store), "--no-input", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env=env)


def test_runs_show_at_a_seq_or_a_bookmark_shows_that_past_state(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(COUNTER)
    store = tmp_path / "store"
    assert _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", "c1").returncode == 5
    now = json.loads(_cli(store, "runs", "show", "c1", "--json").stdout)
    assert now["run"]["vars"]["i"] == 3 and now["run"]["status"] == "waiting"
    past = json.loads(_cli(store, "runs", "show", "c1", "--at", "2", "--json").stdout)
    assert past["run"]["vars"] == {"i": 1} and past["run"]["status"] == "running"
    assert past["ledger"]["seq"] == 2 and [r["seq"] for r in past["last_steps"]] == [1, 2]
    assert _cli(store, "bookmark", "add", "c1", "early").returncode == 0
    marked = json.loads(_cli(store, "runs", "show", "c1", "--at", "early", "--json").stdout)
    assert marked["run"] == now["run"] | {"updated_at": marked["run"]["updated_at"]}
    missing = _cli(store, "runs", "show", "c1", "--at", "999")
    assert missing.returncode == 2 and "no seq 999" in missing.stderr
    unknown = _cli(store, "runs", "show", "c1", "--at", "nosuch")
    assert unknown.returncode == 4


def test_a_snapshot_of_a_past_step_forks_a_run_from_there(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(COUNTER)
    store = tmp_path / "store"
    assert _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", "c2").returncode == 5
    snap = _cli(store, "snapshot", "create", "c2", "--at", "2", "--name", "after-first-step")
    assert snap.returncode == 0, snap.stderr
    snapshot_id = snap.stdout.strip()
    fork = _cli(store, "snapshot", "restore", snapshot_id, "--fork", "--run-id", "c2-fork", "--json")
    assert fork.returncode in (0, 5), fork.stderr
    forked = json.loads(_cli(store, "runs", "show", "c2-fork", "--json").stdout)
    assert forked["run"]["vars"]["i"] >= 1 and forked["origin"]["run_id"] == "c2"
    assert _cli(store, "verify", "c2-fork").returncode == 0


def test_runs_reindex_rebuilds_a_deleted_index(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(COUNTER)
    store = tmp_path / "store"
    for run_id in ("a", "b"):
        assert _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", run_id).returncode == 5
    for path in store.glob("index.sqlite3*"):
        path.unlink()
    result = _cli(store, "runs", "reindex", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["indexed"] == 2
    listed = _cli(store, "runs", "list", "--status", "waiting", "--json")
    assert sorted(r["run_id"] for r in json.loads(listed.stdout)) == ["a", "b"]


def test_two_concurrent_emits_resume_every_run_once_and_both_succeed(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(COUNTER)
    store = tmp_path / "store"
    for k in range(6):
        assert _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", f"e{k}").returncode == 5
    procs = [subprocess.Popen([CLI, "--store", str(store), "emit", "go", "--payload", f'{{"by": {n}}}'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for n in range(2)]
    outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in outcomes)
    # Both succeed; or, when one started after the other had resumed every run, it finds no run
    # waiting on the key (exit 4). Never an error for a run the other one resumed.
    assert codes in ([0, 0], [0, 4]), outcomes
    assert "wait_key mismatch" not in "".join(err for _, err, _ in outcomes)
    for k in range(6):
        run = json.loads(_cli(store, "runs", "show", f"e{k}", "--json").stdout)
        assert run["run"]["status"] == "completed"
        resumes = [r for r in json.loads(_cli(store, "ledger", "show", f"e{k}", "--json").stdout)
                   if r["kind"] == "resume"]
        assert len(resumes) == 1


def test_sys_exit_in_a_workflow_file_or_a_node_is_an_error_not_an_exit_code(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    result = _cli(store, "run", str(tmp_path / "exits_on_import.py"))
    assert result.returncode == 1 and "SystemExit" in result.stderr
    (tmp_path / "exits_in_node.py").write_text(textwrap.dedent('''
        import sys
        from abstractruntime import WorkflowSpec
        def boom(run, ctx):
            sys.exit(4)
        workflow = WorkflowSpec("boom", "boom", {"boom": boom})
    '''))
    result = _cli(store, "run", str(tmp_path / "exits_in_node.py"), "--run-id", "x1", "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["status"] == "failed"
    assert "SystemExit" in json.loads(result.stdout)["error"]
    env = dict(os.environ)
    assert _cli(store, "verify", "x1", env=env).returncode == 0


POLLER = textwrap.dedent('''
    import os
    from pathlib import Path
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def status(job):
        """Report a job's status (counts its calls)."""
        with Path(os.environ["POLL_LOG"]).open("a") as log:
            log.write(job + "\\n")
        return "running"

    tools = [status]

    def poll(run, ctx):
        run.vars["polls"] = run.vars.get("polls", 0) + 1
        if run.vars["polls"] > 3:
            return StepPlan("poll", complete_output={"polls": run.vars["polls"] - 1})
        call = {"name": "status", "arguments": {"job": "j1"}, "call_id": "c1"}
        return StepPlan("poll", next_node="poll", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": [call]}, "last"))

    workflow = WorkflowSpec("poller", "poll", {"poll": poll})
''')


def test_a_loop_that_calls_the_same_tool_with_the_same_arguments_runs_it_each_time(tmp_path: Path) -> None:
    (tmp_path / "poller.py").write_text(POLLER)
    env = {**os.environ, "POLL_LOG": str(tmp_path / "polls.log")}
    result = _cli(tmp_path / "store", "run", str(tmp_path / "poller.py"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == {"polls": 3}
    assert (tmp_path / "polls.log").read_text().splitlines() == ["j1", "j1", "j1"]


def test_two_starts_of_one_run_id_at_once_give_one_run_and_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(COUNTER)
    store = tmp_path / "store"
    _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", "warmup")  # creates the store
    procs = [subprocess.Popen([CLI, "--store", str(store), "--no-input", "start", str(tmp_path / "wf.py"),
                               "--run-id", "same"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=120), p.stderr.read()) for p in procs if p.stderr is not None)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "already exists" in outcomes[1][1]
    assert _cli(store, "verify", "same").returncode == 0


def test_redaction_rules_a_workflow_file_declares_apply_to_its_runs(tmp_path: Path) -> None:
    (tmp_path / "hr.py").write_text(textwrap.dedent('''
        from abstractruntime import StepPlan, WorkflowSpec
        redact_keys = ["employee_number"]
        workflow = WorkflowSpec("hr", "n", {"n": lambda run, ctx: StepPlan(
            "n", complete_output={"employee_number": "E-4711", "name": "Ana"})})
    '''))
    store = tmp_path / "store"
    result = _cli(store, "run", str(tmp_path / "hr.py"), "--run-id", "h1", "--json")
    assert result.returncode == 0, result.stderr
    ledger = (store / "runs" / "h1" / "ledger.jsonl").read_text()
    assert "E-4711" not in ledger and '"employee_number":{"$secret":' in ledger and "Ana" in ledger
