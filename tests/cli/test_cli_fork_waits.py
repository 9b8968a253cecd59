"""A fork continues its parent's wait numbering: a retried answer on a fork is refused like on any run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CLI = str(Path(sys.executable).parent / "abstractruntime")

TWO_QUESTIONS = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def ask(name, then):
        def node(run, ctx):
            return StepPlan(name, next_node=then, effect=Effect(
                EffectType.ASK_USER, {"prompt": name + "?", "choices": ["yes", "no"]}, name))
        return node

    workflow = WorkflowSpec("two", "first", {
        "first": ask("first", "second"), "second": ask("second", "done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={
            "first": run.vars["first"]["answer"], "second": run.vars["second"]["answer"]})})
''')


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--store", str(store), "--no-input", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _fork(store: Path, tmp_path: Path, *, at: str | None = None) -> str:
    (tmp_path / "wf.py").write_text(TWO_QUESTIONS)
    assert _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", "p").returncode == 5
    snap = _cli(store, "snapshot", "create", "p", "--name", "before", *(("--at", at) if at else ()))
    assert snap.returncode == 0, snap.stderr
    fork = _cli(store, "snapshot", "restore", snap.stdout.strip(), "--fork", "--run-id", "f")
    assert fork.returncode == 0, fork.stderr
    return fork.stdout.strip()


def test_a_retried_answer_on_a_fork_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _fork(store, tmp_path)
    shown = json.loads(_cli(store, "runs", "show", "f", "--json").stdout)
    handle = shown["run"]["waiting"] and f"f@{shown['run']['waiting']['wait_id']}"
    assert handle == "f@w1"  # the parent's wait, under the fork's id
    first = _cli(store, "resume", handle, "--answer", "yes")
    assert first.returncode == 5, first.stderr
    assert first.stdout.strip() != handle  # the fork's next question has a handle of its own
    ledger_before = (store / "runs" / "f" / "ledger.jsonl").read_bytes()
    again = _cli(store, "resume", handle, "--answer", "yes")
    assert again.returncode == 1 and "already answered" in again.stderr, again
    assert (store / "runs" / "f" / "ledger.jsonl").read_bytes() == ledger_before
    state = json.loads(_cli(store, "runs", "show", "f", "--json").stdout)["run"]
    assert state["status"] == "waiting" and state["current_node"] == "second"
    assert _cli(store, "resume", first.stdout.strip(), "--answer", "no").returncode == 0
    assert _cli(store, "verify", "f").returncode == 0


def test_a_fork_numbers_its_waits_after_its_parents(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _fork(store, tmp_path)
    parent = _cli(store, "resume", "p@w1", "--answer", "yes")
    fork = _cli(store, "resume", "f@w1", "--answer", "yes")
    # Parent and fork went through the same positions, so their next waits have the same number.
    assert parent.stdout.strip() == "p@w2" and fork.stdout.strip() == "f@w2"
    assert json.loads(_cli(store, "runs", "show", "f", "--json").stdout)["run"]["waiting"]["wait_id"] == "w2"


def test_a_fork_from_a_past_step_continues_the_numbering_of_that_step(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (tmp_path / "wf.py").write_text(TWO_QUESTIONS)
    assert _cli(store, "run", str(tmp_path / "wf.py"), "--run-id", "p").returncode == 5
    assert _cli(store, "resume", "p@w1", "--answer", "yes").returncode == 5
    # A snapshot of the parent as it waited on its first question, taken after it moved on.
    first_wait = next(r["seq"] for r in json.loads(_cli(store, "ledger", "show", "p", "--json").stdout)
                      if r.get("status") == "waiting")
    snap = _cli(store, "snapshot", "create", "p", "--name", "first", "--at", str(first_wait))
    fork = _cli(store, "snapshot", "restore", snap.stdout.strip(), "--fork", "--run-id", "g")
    assert fork.returncode == 0, fork.stderr
    assert _cli(store, "resume", "g@w1", "--answer", "no").stdout.strip() == "g@w2"
    again = _cli(store, "resume", "g@w1", "--answer", "no")
    assert again.returncode == 1 and "already answered" in again.stderr
