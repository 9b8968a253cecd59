"""What is checked when a workflow file loads: its entry node, and literal next_node values.

Real workflow files in tmp_path; the CLI runs as a subprocess of the installed command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abstractruntime.core.errors import WorkflowLoadError
from abstractruntime.core.models import RunStatus
from abstractruntime.loader import load_workflow_file
from abstractruntime.storage.store import FileStore
from abstractruntime.workflow_files import load_for_run

BIN = Path(sys.executable).parent / "abstractruntime"

HEAD = """\
from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec

"""

TYPO = HEAD + textwrap.dedent("""\
    def ask(run, ctx):
        return StepPlan("ask", next_node="done" if run.vars.get("ok") else "rejectd")

    def done(run, ctx):
        return StepPlan("done", complete_output={"ok": True})

    def rejected(run, ctx):
        return StepPlan("rejected", complete_output={"ok": False})

    workflow = WorkflowSpec("typo", "ask", {"ask": ask, "done": done, "rejected": rejected})
    """)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_unknown_literal_next_node_is_refused_naming_file_line_and_node(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.py", TYPO)
    with pytest.raises(WorkflowLoadError) as caught:
        load_workflow_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: node 'ask' of workflow 'typo' goes to 'rejectd', which is not one of")
    assert "\n" not in message and "'rejected'" in message
    assert caught.value.details["node"] == "ask" and caught.value.details["line"] == 5


def test_a_missing_entry_node_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "entry.py", TYPO.replace('"typo", "ask"', '"typo", "start"').replace('"rejectd"',
                                                                                                '"rejected"'))
    with pytest.raises(WorkflowLoadError, match=r"entry\.py: workflow 'typo': entry node 'start' is not one of "
                                                r"its nodes \('ask', 'done', 'rejected'\)"):
        load_workflow_file(path)


def test_the_command_line_says_it_in_one_line_before_anything_runs(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.py", TYPO)
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1"}
    proc = subprocess.run([str(BIN), "run", str(path), "--var", "ok=true"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {path}:5: node 'ask' of workflow 'typo' goes to 'rejectd', which is not one of its nodes "
        "('ask', 'done', 'rejected')")
    assert proc.stdout == "" and not (tmp_path / "store" / "runs").exists()


def test_values_the_source_does_not_state_for_certain_are_not_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "tables.py", HEAD + textwrap.dedent("""\
        ROUTES = {"yes": "done", "maybe": "later"}      # "later" is not a node: reached only by a lookup

        def ask(run, ctx):
            return StepPlan("ask", next_node=ROUTES.get(run.vars.get("answer"), "elsewhere"))

        def done(run, ctx):
            return StepPlan("done", complete_output={"note": "not-a-node"})

        workflow = WorkflowSpec("tables", "ask", {"ask": ask, "done": done})
        """))
    assert load_workflow_file(path).workflow.workflow_id == "tables"


def test_a_run_continues_with_the_bytes_it_recorded_without_the_check(tmp_path: Path) -> None:
    # A run started before the check (or through the Python API) is not stranded by it.
    path = write(tmp_path, "typo.py", TYPO)
    store = FileStore(tmp_path / "store")
    loaded = load_workflow_file(path, check=False)
    rt = store.runtime()
    run_id = rt.start(workflow=loaded.workflow, vars={"ok": True})
    again, runtime = load_for_run(store, run_id, workflow_file=path)
    assert runtime.tick(workflow=again.workflow, run_id=run_id).status is RunStatus.COMPLETED
    with pytest.raises(WorkflowLoadError, match="rejectd"):
        load_for_run(store, run_id, workflow_file=path, allow_drift=True)  # other code is checked


def test_a_step_plan_named_after_another_node_is_accepted_and_recorded_under_its_own_name(tmp_path: Path) -> None:
    # Upstream 0.0.1 accepted it (a helper shared by several nodes); the ledger keeps the plan's name.
    path = write(tmp_path, "shared.py", HEAD + textwrap.dedent("""\
        def step(run, ctx):
            return StepPlan("shared-step", next_node="done")

        def done(run, ctx):
            return StepPlan("done", complete_output={})

        workflow = WorkflowSpec("shared", "a", {"a": step, "done": done})
        """))
    store = FileStore(tmp_path / "store")
    loaded = load_workflow_file(path)
    rt = store.runtime()
    run_id = rt.start(workflow=loaded.workflow)
    assert rt.tick(workflow=loaded.workflow, run_id=run_id).status is RunStatus.COMPLETED
    nodes = [rec["node_id"] for rec in rt.get_ledger(run_id)]
    assert "shared-step" in nodes and "a" not in nodes[1:]
