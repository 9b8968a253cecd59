"""Code written for upstream AbstractRuntime 0.0.1 runs unchanged.

Walks docs' compatibility contract section by section (import paths §1, models §2,
Runtime §3, policies §4, stores §5), written the way an upstream user writes code: top-level
imports, keyword arguments, ``ValueError``/``KeyError`` handling, ``.value`` comparisons.
Snapshots, artifacts and the scheduler have their own suites.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest

from abstractruntime import (
    DefaultEffectPolicy,
    Effect,
    EffectType,
    HashChainedLedgerStore,
    InMemoryLedgerStore,
    InMemoryRunStore,
    JsonFileRunStore,
    JsonlLedgerStore,
    NoRetryPolicy,
    QueryableRunStore,
    RetryPolicy,
    Runtime,
    RunState,
    RunStatus,
    StepPlan,
    WaitReason,
    WaitState,
    WorkflowSpec,
    compute_idempotency_key,
    verify_ledger_chain,
)
from abstractruntime.core.models import StepRecord
from abstractruntime.core.runtime import EffectOutcome

# -- §1 import paths -----------------------------------------------------------------------

IMPORT_PATHS = {
    "abstractruntime.core.models": ["RunState", "StepRecord", "WaitState"],
    "abstractruntime.core.runtime": ["EffectOutcome"],
    "abstractruntime.storage.base": ["QueryableRunStore"],
    "abstractruntime.storage.in_memory": ["InMemoryRunStore", "InMemoryLedgerStore"],
    "abstractruntime.storage.json_files": ["JsonFileRunStore", "JsonlLedgerStore"],
    "abstractruntime.storage.ledger_chain": ["HashChainedLedgerStore", "verify_ledger_chain"],
    "abstractruntime.storage.snapshots": ["InMemorySnapshotStore", "JsonSnapshotStore", "Snapshot"],
    "abstractruntime.scheduler": ["WorkflowRegistry"],
    "abstractruntime.integrations.abstractcore": ["create_local_runtime", "build_effect_handlers",
                                                  "LocalAbstractCoreLLMClient", "PassthroughToolExecutor"],
    "abstractruntime.integrations.abstractcore.effect_handlers": ["build_effect_handlers"],
    "abstractruntime.integrations.abstractcore.llm_client": ["RemoteAbstractCoreLLMClient"],
    "abstractruntime.integrations.abstractcore.tool_executor": ["AbstractCoreToolExecutor"],
}


@pytest.mark.parametrize("module", sorted(IMPORT_PATHS))
def test_import_paths(module: str) -> None:
    loaded = importlib.import_module(module)
    for name in IMPORT_PATHS[module]:
        assert hasattr(loaded, name), f"{module}.{name}"


def test_top_level_names_are_the_module_ones() -> None:
    import abstractruntime
    from abstractruntime.storage import ledger_chain, snapshots

    assert abstractruntime.HashChainedLedgerStore is ledger_chain.HashChainedLedgerStore
    assert abstractruntime.Snapshot is snapshots.Snapshot
    assert abstractruntime.EffectOutcome is EffectOutcome


BLOCK_ABSTRACTCORE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "abstractcore" or name.startswith("abstractcore."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
import abstractruntime.integrations.abstractcore as m
for name in ("create_local_runtime", "build_effect_handlers", "LocalAbstractCoreLLMClient",
             "PassthroughToolExecutor"):
    getattr(m, name)
from abstractruntime.integrations.abstractcore.llm_client import RemoteAbstractCoreLLMClient
assert not any(k == "abstractcore" or k.startswith("abstractcore.") for k in sys.modules)
print("ok")
"""


def test_integration_imports_without_abstractcore() -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCK_ABSTRACTCORE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# -- §2 models -----------------------------------------------------------------------------


def test_enum_values() -> None:
    assert [s.value for s in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPLETED, RunStatus.FAILED,
                              RunStatus.CANCELLED)] == ["running", "waiting", "completed", "failed", "cancelled"]
    assert [r.value for r in (WaitReason.EVENT, WaitReason.UNTIL, WaitReason.USER, WaitReason.JOB,
                              WaitReason.SUBWORKFLOW)] == ["event", "until", "user", "job", "subworkflow"]
    assert [e.value for e in (EffectType.WAIT_EVENT, EffectType.WAIT_UNTIL, EffectType.ASK_USER,
                              EffectType.LLM_CALL, EffectType.TOOL_CALLS, EffectType.START_SUBWORKFLOW)] == [
        "wait_event", "wait_until", "ask_user", "llm_call", "tool_calls", "start_subworkflow"]
    assert isinstance(RunStatus.RUNNING, str)


def test_model_constructors_and_mutation() -> None:
    effect = Effect(type=EffectType.ASK_USER, payload={"prompt": "?"}, result_key="a")
    assert Effect(type=EffectType.WAIT_EVENT).payload == {}
    plan = StepPlan(node_id="n", effect=effect, next_node="m", complete_output=None)
    assert plan.effect is effect
    wait = WaitState(reason=WaitReason.UNTIL, wait_key=None, until="2030-01-01T00:00:00+00:00",
                     resume_to_node="n", result_key=None, prompt=None, choices=None, allow_free_text=True,
                     details=None)
    wait.until = "2031-01-01T00:00:00+00:00"
    run = RunState.new(workflow_id="wf", entry_node="start", actor_id=None, vars={"a": 1}, parent_run_id=None)
    assert run.status == RunStatus.RUNNING and run.status.value == "running"
    run.status, run.current_node, run.output, run.waiting = RunStatus.WAITING, "n", None, wait
    run.updated_at = "2030-01-01T00:00:00+00:00"
    for name in ("run_id", "workflow_id", "status", "current_node", "vars", "waiting", "output", "error",
                 "created_at", "updated_at", "actor_id", "parent_run_id"):
        assert hasattr(run, name)
    rec = StepRecord.start(run=run, node_id="n", effect=effect, attempt=1)
    assert rec.finish_success({"ok": 1}) is rec


# -- §3 Runtime ----------------------------------------------------------------------------


def _ask_workflow() -> WorkflowSpec:
    def ask(run: RunState, ctx: object) -> StepPlan:
        return StepPlan(node_id="ask", effect=Effect(type=EffectType.ASK_USER,
                                                     payload={"prompt": "Name?", "choices": ["a", "b"]},
                                                     result_key="user_input"), next_node="greet")

    def greet(run: RunState, ctx: object) -> StepPlan:
        return StepPlan(node_id="greet", complete_output={"greeting": f"hi {run.vars['user_input']['name']}"})

    return WorkflowSpec(workflow_id="hello", entry_node="ask", nodes={"ask": ask, "greet": greet})


@pytest.fixture(params=["memory", "memory-chained", "json"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[object, object]:
    if request.param == "memory":
        return InMemoryRunStore(), InMemoryLedgerStore()
    if request.param == "memory-chained":
        return InMemoryRunStore(), HashChainedLedgerStore(InMemoryLedgerStore())
    return JsonFileRunStore(tmp_path), HashChainedLedgerStore(JsonlLedgerStore(tmp_path))


def test_runtime_walkthrough(stores: tuple[object, object]) -> None:
    run_store, ledger_store = stores
    runtime = Runtime(run_store=run_store, ledger_store=ledger_store, effect_handlers=None, context=None,
                      workflow_registry=None, artifact_store=None, effect_policy=None)
    wf = _ask_workflow()
    assert (wf.workflow_id, wf.entry_node, sorted(wf.nodes)) == ("hello", "ask", ["ask", "greet"])
    run_id = runtime.start(workflow=wf, vars={"x": 1}, actor_id="actor:1", parent_run_id=None)
    state = runtime.tick(workflow=wf, run_id=run_id, max_steps=100)
    assert state.status.value == "waiting" and state.waiting.reason.value == "user"
    assert state.waiting.prompt == "Name?" and state.waiting.choices == ["a", "b"]
    assert state.waiting.resume_to_node == "greet"

    try:
        runtime.resume(workflow=wf, run_id=run_id, wait_key="wrong", payload={"name": "x"})
    except ValueError as exc:
        assert "wait_key mismatch" in str(exc)
    else:
        pytest.fail("a wrong wait_key must raise ValueError")

    state = runtime.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key, payload={"name": "Ada"})
    assert state.status.value == "completed" and state.output == {"greeting": "hi Ada"}
    assert runtime.get_state(run_id).vars["user_input"] == {"name": "Ada"}
    with pytest.raises(ValueError, match="not waiting"):
        runtime.resume(workflow=wf, run_id=run_id, wait_key=None, payload={})
    with pytest.raises(KeyError):
        runtime.get_state("no-such-run")

    ledger = runtime.get_ledger(run_id)
    assert isinstance(ledger, list) and all(isinstance(r, dict) for r in ledger)
    for record in ledger:
        assert {"effect", "status", "attempt", "idempotency_key", "result", "record_hash", "prev_hash"} <= set(record)
    effects = [r for r in ledger if r["effect"] is not None]
    assert {r["status"] for r in effects} <= {"started", "completed", "failed", "waiting"}
    assert all(isinstance(r["attempt"], int) and len(r["idempotency_key"]) == 32 for r in effects)
    report = verify_ledger_chain(ledger)
    if isinstance(ledger_store, InMemoryLedgerStore):
        # As upstream: the in-memory ledger on its own keeps no chain; verifying it says so.
        assert report["ok"] is False and {e["type"] for e in report["errors"]} == {"missing_record_hash"}
    else:
        assert report["ok"] is True

    # Upstream code that edits and re-saves a run (e.g. to move a timer) keeps working.
    run = runtime.get_state(run_id)
    run.error = "annotated"
    runtime.run_store.save(run)
    assert runtime.get_state(run_id).error == "annotated"


def test_runtime_properties_and_setters() -> None:
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    assert isinstance(runtime.run_store, InMemoryRunStore) and isinstance(runtime.ledger_store, InMemoryLedgerStore)
    assert runtime.workflow_registry is None and runtime.artifact_store is None
    assert runtime.effect_policy is not None
    from abstractruntime import InMemoryArtifactStore, WorkflowRegistry

    registry, artifacts, policy = WorkflowRegistry(), InMemoryArtifactStore(), NoRetryPolicy()
    runtime.set_workflow_registry(registry)
    runtime.set_artifact_store(artifacts)
    runtime.set_effect_policy(policy)
    assert runtime.workflow_registry is registry and runtime.artifact_store is artifacts
    assert runtime.effect_policy is policy


def test_cancel_run() -> None:
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    wf = _ask_workflow()
    run_id = runtime.start(workflow=wf)
    runtime.tick(workflow=wf, run_id=run_id)
    state = runtime.cancel_run(run_id, reason="no longer needed")
    assert (state.status, state.error, state.waiting) == (RunStatus.CANCELLED, "no longer needed", None)
    assert runtime.cancel_run(run_id).status == RunStatus.CANCELLED
    with pytest.raises(KeyError):
        runtime.cancel_run("nope")


def test_effect_outcome_classmethods() -> None:
    assert EffectOutcome.completed().status == "completed" and EffectOutcome.completed().result is None
    assert EffectOutcome.completed({"a": 1}).result == {"a": 1}
    assert EffectOutcome.failed("bad").error == "bad" and EffectOutcome.failed("bad").status == "failed"
    wait = WaitState(reason=WaitReason.EVENT, wait_key="k")
    assert EffectOutcome.waiting(wait).wait is wait and EffectOutcome.waiting(wait).status == "waiting"


def test_builtin_waits_as_upstream_users_drive_them() -> None:
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())

    def one(effect: Effect) -> WorkflowSpec:
        return WorkflowSpec("w", "a", {
            "a": lambda run, ctx: StepPlan(node_id="a", effect=effect, next_node="b"),
            "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"vars": run.vars}),
        })

    wf = one(Effect(type=EffectType.WAIT_EVENT, payload={"wait_key": "evt"}, result_key="e"))
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.waiting.reason == WaitReason.EVENT and state.waiting.wait_key == "evt"
    assert runtime.resume(workflow=wf, run_id=run_id, wait_key="evt", payload={"v": 1}).output == {
        "vars": {"e": {"v": 1}}}

    # wait_until in the past continues at once; in the far future it waits.
    wf = one(Effect(type=EffectType.WAIT_UNTIL, payload={"until": "2000-01-01T00:00:00+00:00"}, result_key="t"))
    assert runtime.tick(workflow=wf, run_id=runtime.start(workflow=wf)).status == RunStatus.COMPLETED
    wf = one(Effect(type=EffectType.WAIT_UNTIL, payload={"until": "2999-01-01T00:00:00+00:00"}))
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.WAITING and state.waiting.reason == WaitReason.UNTIL
    # Upstream users move a timer by editing `until` and re-saving.
    state.waiting.until = "2000-01-01T00:00:00+00:00"
    runtime.run_store.save(state)
    assert runtime.tick(workflow=wf, run_id=run_id).status == RunStatus.COMPLETED

    # Unknown handler and node exceptions fail the run with the error text.
    wf = one(Effect(type=EffectType.LLM_CALL, payload={}))
    assert runtime.tick(workflow=wf, run_id=runtime.start(workflow=wf)).status == RunStatus.FAILED

    def boom(run: RunState, ctx: object) -> StepPlan:
        raise RuntimeError("kaboom")

    wf = WorkflowSpec("w", "a", {"a": boom})
    state = runtime.tick(workflow=wf, run_id=runtime.start(workflow=wf))
    assert state.status == RunStatus.FAILED and "kaboom" in state.error


def test_subworkflows_through_the_registry() -> None:
    from abstractruntime import WorkflowRegistry

    child = WorkflowSpec("child", "c", {"c": lambda run, ctx: StepPlan(node_id="c", complete_output={"v": 7})})
    asker = WorkflowSpec("asker", "q", {"q": lambda run, ctx: StepPlan(
        node_id="q", effect=Effect(type=EffectType.ASK_USER, payload={"prompt": "?"}), next_node="q")})
    registry = WorkflowRegistry()
    registry.register(child)
    registry.register(asker)
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), workflow_registry=registry)

    def parent(payload: dict) -> WorkflowSpec:
        return WorkflowSpec("parent", "p", {
            "p": lambda run, ctx: StepPlan(node_id="p", effect=Effect(type=EffectType.START_SUBWORKFLOW,
                                                                       payload=payload, result_key="sub"),
                                           next_node="end"),
            "end": lambda run, ctx: StepPlan(node_id="end", complete_output={"sub": run.vars["sub"]}),
        })

    wf = parent({"workflow_id": "child"})
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.output["sub"]["output"] == {"v": 7}
    assert runtime.get_state(state.output["sub"]["sub_run_id"]).parent_run_id == run_id

    wf = parent({"workflow_id": "asker"})
    state = runtime.tick(workflow=wf, run_id=runtime.start(workflow=wf))
    assert state.waiting.reason == WaitReason.SUBWORKFLOW
    assert {"sub_run_id", "sub_workflow_id", "sub_waiting"} <= set(state.waiting.details)
    assert state.waiting.details["sub_waiting"]["reason"] == "user"

    wf = parent({"workflow_id": "child", "async": True})
    state = runtime.tick(workflow=wf, run_id=runtime.start(workflow=wf))
    assert state.output["sub"]["async"] is True
    assert runtime.get_state(state.output["sub"]["sub_run_id"]).status == RunStatus.RUNNING

    wf = parent({"workflow_id": "missing"})
    state = runtime.tick(workflow=wf, run_id=runtime.start(workflow=wf))
    assert state.status == RunStatus.FAILED and "missing" in state.error and "not found" in state.error


def test_retry_and_idempotency_as_documented() -> None:
    attempts: list[int] = []

    def llm(run: RunState, effect: Effect) -> EffectOutcome:
        attempts.append(1)
        return EffectOutcome.failed("rate limited")

    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(),
                      effect_handlers={EffectType.LLM_CALL: llm}, effect_policy=RetryPolicy(llm_max_attempts=3))
    wf = WorkflowSpec("w", "a", {"a": lambda run, ctx: StepPlan(
        node_id="a", effect=Effect(type=EffectType.LLM_CALL, payload={"prompt": "p"}, result_key="r"),
        next_node="b"), "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"r": run.vars["r"]})})
    run_id = runtime.start(workflow=wf)
    with patch("time.sleep") as sleep:
        state = runtime.tick(workflow=wf, run_id=run_id)
    assert sleep.call_count == 2 and len(attempts) == 3
    assert state.status == RunStatus.FAILED and "after 3 attempts" in state.error
    started = [r for r in runtime.get_ledger(run_id) if r["status"] == "started"]
    assert [r["attempt"] for r in started] == [1, 2, 3]

    # A completed effect is reused when the run is reset to its node.
    calls: list[int] = []

    def ok(run: RunState, effect: Effect) -> EffectOutcome:
        calls.append(1)
        return EffectOutcome.completed({"text": "done"})

    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(),
                      effect_handlers={EffectType.LLM_CALL: ok})
    run_id = runtime.start(workflow=wf)
    with patch("time.sleep") as sleep:
        assert runtime.tick(workflow=wf, run_id=run_id).status == RunStatus.COMPLETED
        run = runtime.get_state(run_id)
        run.status, run.current_node = RunStatus.RUNNING, "a"
        runtime.run_store.save(run)
        assert runtime.tick(workflow=wf, run_id=run_id).output == {"r": {"text": "done"}}
    assert calls == [1] and sleep.call_count == 0


# -- §4 policies ---------------------------------------------------------------------------


def test_default_effect_policy() -> None:
    policy = DefaultEffectPolicy(default_max_attempts=2, default_backoff_base=0.5, default_backoff_max=3.0,
                                 effect_max_attempts={"llm_call": 4})
    llm, wait = Effect(type=EffectType.LLM_CALL, payload={}), Effect(type=EffectType.WAIT_EVENT, payload={})
    assert policy.max_attempts(llm) == 4 and policy.max_attempts(wait) == 2
    assert [policy.backoff_seconds(effect=llm, attempt=a) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    default = DefaultEffectPolicy()
    assert default.max_attempts(llm) == 1
    assert default.backoff_seconds(effect=llm, attempt=1) == 1.0
    assert default.backoff_seconds(effect=llm, attempt=10) == 60.0


def test_retry_and_no_retry_policies() -> None:
    policy = RetryPolicy()
    by_type = {t: policy.max_attempts(Effect(type=t, payload={})) for t in EffectType}
    assert by_type[EffectType.LLM_CALL] == 3 and by_type[EffectType.TOOL_CALLS] == 2
    assert all(v == 1 for t, v in by_type.items() if t not in (EffectType.LLM_CALL, EffectType.TOOL_CALLS))
    assert RetryPolicy(llm_max_attempts=5, tool_max_attempts=1).max_attempts(Effect(type=EffectType.LLM_CALL)) == 5
    assert all(NoRetryPolicy().max_attempts(Effect(type=t)) == 1 for t in EffectType)


def test_compute_idempotency_key() -> None:
    effect = Effect(type=EffectType.LLM_CALL, payload={"prompt": "p", "n": 1})
    key = compute_idempotency_key(run_id="r1", node_id="n", effect=effect)
    assert len(key) == 32 and int(key, 16) >= 0
    same = Effect(type=EffectType.LLM_CALL, payload={"n": 1, "prompt": "p"})
    assert compute_idempotency_key(run_id="r1", node_id="n", effect=same) == key
    assert compute_idempotency_key(run_id="r2", node_id="n", effect=effect) != key
    assert compute_idempotency_key(run_id="r1", node_id="m", effect=effect) != key
    other = Effect(type=EffectType.LLM_CALL, payload={"prompt": "q", "n": 1})
    assert compute_idempotency_key(run_id="r1", node_id="n", effect=other) != key


# -- §5 stores -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "json"])
def test_run_store_queries(kind: str, tmp_path: Path) -> None:
    store = InMemoryRunStore() if kind == "memory" else JsonFileRunStore(tmp_path)
    assert isinstance(store, QueryableRunStore)
    parent = RunState.new(workflow_id="wf", entry_node="a")
    store.save(parent)
    timer = RunState.new(workflow_id="wf", entry_node="a", parent_run_id=parent.run_id)
    timer.status = RunStatus.WAITING
    timer.waiting = WaitState(reason=WaitReason.UNTIL, until="2000-01-01T00:00:00+00:00")
    store.save(timer)
    assert store.load(timer.run_id).waiting.until == "2000-01-01T00:00:00+00:00"
    assert store.load("unknown") is None
    assert {r.run_id for r in store.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.UNTIL,
                                              workflow_id="wf", limit=100)} == {timer.run_id}
    due = store.list_due_wait_until(now_iso="2001-01-01T00:00:00+00:00", limit=10)
    assert [r.run_id for r in due] == [timer.run_id]
    assert [r.run_id for r in store.list_children(parent_run_id=parent.run_id, status=None)] == [timer.run_id]
    if kind == "json":
        again = JsonFileRunStore(tmp_path)
        assert again.load(timer.run_id) == store.load(timer.run_id)


@pytest.mark.parametrize("kind", ["memory", "json"])
def test_ledger_stores_and_the_chain(kind: str, tmp_path: Path) -> None:
    inner = InMemoryLedgerStore() if kind == "memory" else JsonlLedgerStore(tmp_path)
    ledger = HashChainedLedgerStore(inner)
    run = RunState.new(workflow_id="wf", entry_node="a")
    for i in range(3):
        rec = StepRecord.start(run=run, node_id=f"n{i}", effect=None)
        ledger.append(rec.finish_success({"i": i}))
    records = ledger.list(run.run_id)
    assert [r["result"] for r in records] == [{"i": 0}, {"i": 1}, {"i": 2}]
    report = verify_ledger_chain(records)
    assert {"ok", "count", "head_hash", "first_bad_index", "errors"} <= set(report)
    assert report["ok"] is True and report["count"] == 3 and report["head_hash"] == records[-1]["record_hash"]
    assert report["first_bad_index"] is None and report["errors"] == []

    records[1]["result"] = {"i": 42}
    tampered = verify_ledger_chain(records)
    assert tampered["ok"] is False and tampered["first_bad_index"] == 1
    assert all(isinstance(e["type"], str) for e in tampered["errors"])

    unhashed = verify_ledger_chain([{"run_id": "x", "status": "completed"}])
    assert unhashed["ok"] is False and unhashed["errors"][0]["type"] == "missing_record_hash"


def test_actor_fingerprint() -> None:
    from abstractruntime import ActorFingerprint

    one = ActorFingerprint.from_metadata(kind="agent", display_name="Bot", metadata={"v": 1})
    assert isinstance(one.actor_id, str) and one.actor_id
    assert ActorFingerprint.from_metadata(kind="agent", display_name="Bot", metadata={"v": 1}).actor_id == one.actor_id
    assert ActorFingerprint.from_metadata(kind="human", display_name="Bot", metadata={"v": 1}).actor_id != one.actor_id
