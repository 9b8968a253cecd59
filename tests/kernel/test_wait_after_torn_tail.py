"""After a torn ledger tail took a wait away, an answer naming that wait is not "already answered":
the run is not waiting on it (its last step was cut short), and `tick` makes it wait again."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec, open_store
from abstractruntime.core.errors import AlreadyAnsweredError, RunNotWaitingError

CLI = str(Path(sys.executable).parent / "abstractruntime")

FLOW = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    workflow = WorkflowSpec("torn", "ask", {
        "ask": lambda run, ctx: StepPlan("ask", next_node="done", effect=Effect(
            EffectType.ASK_USER, {"prompt": "Ship it?"}, "reply")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"reply": run.vars["reply"]}),
    })
''')


def _flow() -> WorkflowSpec:
    return WorkflowSpec("torn", "ask", {
        "ask": lambda run, ctx: StepPlan("ask", next_node="done", effect=Effect(
            EffectType.ASK_USER, {"prompt": "Ship it?"}, "reply")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"reply": run.vars["reply"]}),
    })


def _tear_the_wait(store: Path, run_id: str) -> None:
    """What a crash in the middle of the append of the wait's batch leaves: the wait's record cut
    short (no newline), and no checkpoint written for it."""
    ledger = store / "runs" / run_id / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    assert b'"status":"waiting"' in lines[-1]
    ledger.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    (store / "runs" / run_id / "run.json").unlink()


def test_resume_of_a_wait_a_torn_tail_took_away_says_the_run_is_not_waiting_on_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    wf = _flow()
    rt = open_store(store).runtime()
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).waiting.wait_id == "w1"
    _tear_the_wait(store, run_id)
    rt = open_store(store).runtime()
    with pytest.raises(RunNotWaitingError) as refused:
        rt.resume(workflow=wf, run_id=run_id, wait_id="w1", payload={"answer": "yes"})
    assert not isinstance(refused.value, AlreadyAnsweredError)
    assert "not waiting on w1" in str(refused.value) and "tick" in str(refused.value)
    assert rt.get_state(run_id).status.value == "running"
    # The way on that the message names: tick records the wait again, and it takes its answer.
    assert rt.tick(workflow=wf, run_id=run_id).waiting.wait_id == "w1"
    state = rt.resume(workflow=wf, run_id=run_id, wait_id="w1", payload={"answer": "yes"})
    assert state.output == {"reply": {"answer": "yes"}}
    with pytest.raises(AlreadyAnsweredError):  # now it was answered
        rt.resume(workflow=wf, run_id=run_id, wait_id="w1", payload={"answer": "yes"})


def test_the_command_line_says_the_same(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (tmp_path / "flow.py").write_text(FLOW)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, "--store", str(store), "--no-input", *args], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)

    started = cli("run", str(tmp_path / "flow.py"), "--run-id", "t")
    assert started.returncode == 5 and started.stdout.strip() == "t@w1", started.stderr
    _tear_the_wait(store, "t")
    refused = cli("resume", "t@w1", "--answer", "yes")
    assert refused.returncode == 1, refused
    assert "already answered" not in refused.stderr
    assert "not waiting on w1" in refused.stderr and "abstractruntime tick t" in refused.stderr
    assert cli("tick", "t").returncode == 5
    assert cli("resume", "t@w1", "--answer", "yes").returncode == 0
    again = cli("resume", "t@w1", "--answer", "yes")
    assert again.returncode == 1 and "already answered" in again.stderr
