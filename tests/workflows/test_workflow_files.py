"""Continuing a run from its workflow file as a library call (abstractruntime.workflow_files).

Real workflow files in tmp_path, real stores (files, and PostgreSQL when it is installed).
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from abstractruntime.core.errors import (RunNotFoundError, WorkflowDriftError,
                                         WorkflowNotRegisteredError)
from abstractruntime.core.models import EffectType, RunState, RunStatus
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.loader import load_workflow_file
from abstractruntime.registry import WorkflowFileRegistry
from abstractruntime.storage.store import open_store
from abstractruntime.workflow_files import handlers_for, load_for_run, runtime_for, workflow_file_for_run

FLOW = '''
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


tools = [add]
redact_keys = ["ssn"]


def call(run, ctx):
    return StepPlan(node_id="call", next_node="ask", effect=Effect(
        type=EffectType.TOOL_CALLS, result_key="sum",
        payload={"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}, "call_id": "c1"}]}))


def ask(run, ctx):
    return StepPlan(node_id="ask", next_node="done",
                    effect=Effect(type=EffectType.LLM_CALL, payload={"prompt": "hi"}, result_key="answer"))


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"sum": run.vars["sum"]["results"][0]["output"],
                                                     "answer": run.vars["answer"]})


workflow = WorkflowSpec(workflow_id="flow", entry_node="call", nodes={"call": call, "ask": ask, "done": done})
'''

SECRET = "123-45-6789"


def _llm(seen: list[Any]) -> Any:
    """An LLM mode's handler builder that records the tool executor it is given."""
    def build(tools: Any) -> dict[Any, Any]:
        seen.append(tools)
        return {EffectType.LLM_CALL: lambda run, effect: EffectOutcome.completed({"content": "ok"})}

    return build


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "flows" / "flow.py"
    path.parent.mkdir()
    path.write_text(FLOW)
    return path


@pytest.fixture(params=["files", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "files":
        made: Any = open_store(tmp_path / "store", durability="none")
    else:
        from abstractruntime.storage.postgres.store import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_url"), schema=f"t_{uuid.uuid4().hex[:16]}")
    yield made
    made.close()


def _start(store: Any, flow: Path) -> str:
    return str(runtime_for(store, load_workflow_file(flow)).start(workflow=load_workflow_file(flow).workflow,
                                                                  vars={"ssn": SECRET}))


def test_a_run_continues_from_the_registered_file(store: Any, flow: Path) -> None:
    run_id = _start(store, flow)
    loaded, runtime = load_for_run(store, run_id)   # the registry: $ABSTRACTRUNTIME_WORKFLOWS (tests/conftest.py)
    assert loaded.path == flow and loaded.workflow.workflow_id == "flow"
    assert runtime.get_checkpoint(run_id).workflow == {"workflow_id": "flow", "sha256": loaded.sha256}

    # The file's tools serve its tool call; the llm_call has no handler, so the run waits for one.
    state = runtime.tick(workflow=loaded.workflow, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.vars["sum"]["results"][0]["output"] == 5

    # An LLM mode: its handlers get the file's tool executor; the run now completes.
    seen: list[Any] = []
    loaded, runtime = load_for_run(store, run_id, llm_handlers=_llm(seen))
    state = runtime.tick(workflow=loaded.workflow, run_id=run_id)
    assert state.status is RunStatus.COMPLETED, state.error
    assert state.output == {"sum": 5, "answer": {"content": "ok"}}
    assert len(seen) == 1 and callable(getattr(seen[0], "execute", None))

    # The file's redact_keys applied: the secret never reached the ledger.
    assert SECRET not in repr(runtime.get_ledger(run_id))


def test_named_file_unregistered_file_and_unknown_run(store: Any, flow: Path, tmp_path: Path) -> None:
    run_id = _start(store, flow)
    elsewhere = tmp_path / "elsewhere.py"
    shutil.copy(flow, elsewhere)
    flow.unlink()
    nothing = WorkflowFileRegistry([str(tmp_path / "nowhere")])
    with pytest.raises(WorkflowNotRegisteredError, match="--workflow FILE"):
        load_for_run(store, run_id, registry=nothing)
    loaded, runtime = load_for_run(store, run_id, workflow_file=elsewhere, registry=nothing)  # the caller's file
    assert loaded.path == elsewhere
    assert runtime.tick(workflow=loaded.workflow, run_id=run_id).status is RunStatus.WAITING
    with pytest.raises(RunNotFoundError):
        load_for_run(store, "no-such-run")


def test_a_checkpoint_naming_another_workflow_is_refused(store: Any, flow: Path) -> None:
    run_id = _start(store, flow)
    planted = flow.parent / "planted.py"
    planted.write_text(FLOW.replace("tools = [add]", "raise SystemExit('must never be imported')"))
    checkpoint = store.runs.load_checkpoint(run_id)
    planted_sha = hashlib.sha256(planted.read_bytes()).hexdigest()
    checkpoint.state["kernel"]["workflow"] = {**checkpoint.workflow, "sha256": planted_sha}
    store.runs.save_checkpoint(checkpoint)
    # The runtime never believes the edited checkpoint: the workflow identity is the ledger's, so the
    # registered file the ledger names is loaded, and the planted one is never imported.
    assert store.runtime().get_checkpoint(run_id).workflow["sha256"] != planted_sha
    loaded, _ = load_for_run(store, run_id)
    assert Path(loaded.path).resolve() == flow.resolve()


def test_a_changed_file_is_refused_before_it_is_imported(store: Any, flow: Path, tmp_path: Path) -> None:
    run_id = _start(store, flow)
    flow.write_text("raise SystemExit('must never be imported')\n" + FLOW)
    with pytest.raises(WorkflowDriftError, match="nothing of it was imported"):
        load_for_run(store, run_id)
    with pytest.raises(WorkflowDriftError, match="nothing of it was imported"):
        load_for_run(store, run_id, workflow_file=flow)


def test_the_located_file(store: Any, flow: Path, tmp_path: Path) -> None:
    run_id = _start(store, flow)
    runtime = store.runtime()
    checkpoint = runtime.get_checkpoint(run_id)
    path, recorded = workflow_file_for_run(runtime, run_id, checkpoint)
    assert path == flow and recorded.workflow_id == "flow" and recorded.sha256 == load_workflow_file(flow).sha256
    named = tmp_path / "not-checked-here.py"
    assert workflow_file_for_run(runtime, run_id, checkpoint, workflow_file=named)[0] == named
    # A run started without a file (plain Python use) recorded no hash: its id alone finds the file.
    no_file = str(runtime_for(store, None).start(workflow=load_workflow_file(flow).workflow.with_source(None)))
    loaded, _ = load_for_run(store, no_file)
    assert loaded.path == flow


def test_handlers_the_file_declares_win(tmp_path: Path) -> None:
    path = tmp_path / "own.py"
    path.write_text(FLOW + '''
def own_llm(run, effect):
    return None


effect_handlers = {EffectType.LLM_CALL: own_llm, "tool_calls": own_llm}
require_approval = ["add"]
''')
    loaded = load_workflow_file(path)
    seen: list[Any] = []
    handlers = handlers_for(loaded, llm_handlers=_llm(seen))
    assert handlers == {"llm_call": loaded.module.own_llm, "tool_calls": loaded.module.own_llm}
    assert type(seen[0]).__name__ == "ApprovalGate" and seen[0].require_approval == frozenset({"add"})
    plain = tmp_path / "plain.py"
    plain.write_text(FLOW.replace("tools = [add]", "tools = []"))
    assert handlers_for(load_workflow_file(plain)) == {}
    assert handlers_for(load_workflow_file(plain), llm_handlers=_llm(seen)).keys() == {"llm_call"}
    assert seen[-1] is None  # no tools: the LLM mode gets no executor


def test_the_cli_wrappers_agree(store: Any, flow: Path) -> None:
    from abstractruntime.cli import workflows
    from abstractruntime.cli.output import Settings

    run_id = _start(store, flow)
    loaded, runtime = workflows.load_for_run(Settings(), store, run_id)
    assert loaded.path == flow
    assert workflows.handlers_for(loaded).keys() == {"tool_calls"}
    assert isinstance(runtime.tick(workflow=loaded.workflow, run_id=run_id), RunState)
