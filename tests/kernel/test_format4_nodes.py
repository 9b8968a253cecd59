"""Property: format 4 — an effect's outcome implies the node its intent named — replays exactly.

Random workflows over three nodes run to the end: pure steps, effects whose ``next_node`` is the
node they run in or another one, effects that fail once and are retried by the policy, effects
whose every attempt fails (the run fails, and ``retry`` performs the effect again), ``ask_user``
and ``wait_event`` waits answered later (some resuming to another node than the intent named),
tool calls waiting for a decision (approved or denied: the ``decision`` record makes the effect
pending again, by its delta, and the outcome closes it), and effects with an explicit
idempotency key, whose later repetitions reuse the first result.
Between actions the run is sometimes opened from its files by a new runtime.

After every action the node the run is at is the one an independent reader of the ledger finds
(tests/provenance/independent_verifier.py, which shares no code with the package). At the end,
on the file store and on PostgreSQL: the state each record leaves (``state_at``) is at the node
the independent reader finds there, the state rebuilt from the ledger alone is exactly the live
state, the ledger verifies (the package's verifier and the independent one), and every effect
outcome that closed its intent and went where the intent said names no node.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.jcs import jcs
from abstractruntime.core.models import Effect, EffectType, StepPlan, WaitReason, WaitState
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "provenance"))
from independent_verifier import nodes as independent_nodes  # noqa: E402
from independent_verifier import verify_lines as independent_verify  # noqa: E402

EXAMPLES = int(os.environ.get("FORMAT4_EXAMPLES", "40"))
NODES = ("n0", "n1", "n2")
KINDS = ("pure", "ok", "flaky", "fail", "ask", "event", "keyed", "tools")
# One step: what it does, the node it names as next, and a spare choice (where a wait resumes, which key).
STEPS = st.tuples(st.sampled_from(KINDS), st.integers(0, 2), st.integers(0, 2))
PLANS = st.tuples(st.lists(STEPS, min_size=1, max_size=10),
                  st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=8))


class Flow:
    """The workflow of one plan: every node runs the plan's next step."""

    def __init__(self, steps: list[tuple[str, int, int]]) -> None:
        self.steps = steps
        self.index = 0
        self.calls: dict[int, int] = {}

    def workflow(self) -> WorkflowSpec:
        return WorkflowSpec("format4_nodes", "n0", {name: self._node(name) for name in NODES})

    def _node(self, name: str) -> Any:
        def node(run: Any, ctx: Any) -> StepPlan:
            if self.index >= len(self.steps):
                return StepPlan(name, complete_output={"steps": self.index})
            i = self.index
            kind, nxt, spare = self.steps[i]
            self.index += 1
            run.vars.setdefault("trail", []).append(name)
            target = NODES[nxt]
            if kind == "pure":
                return StepPlan(name, next_node=target)
            if kind == "ask":
                payload: dict[str, Any] = {"prompt": f"question {i}"}
                if spare != nxt:
                    payload["resume_to_node"] = NODES[spare]  # the wait resumes elsewhere than the intent says
                return StepPlan(name, effect=Effect(EffectType.ASK_USER, payload, result_key="answer"),
                                next_node=target)
            if kind == "event":
                return StepPlan(name, effect=Effect(EffectType.WAIT_EVENT, {"wait_key": f"evt:{i}"},
                                                    result_key="event"), next_node=target)
            if kind == "tools":
                calls = [{"name": "add", "arguments": {"a": i, "b": spare}, "call_id": f"c{i}"}]
                return StepPlan(name, effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls, "step": i},
                                                    result_key="tools"), next_node=target)
            payload = {"step": i}
            if kind == "keyed":
                payload["idempotency_key"] = f"key-{spare}"
            return StepPlan(name, effect=Effect(EffectType.LLM_CALL, payload, result_key="reply"), next_node=target)

        return node

    def llm(self, run: Any, effect: Effect) -> EffectOutcome:
        i = effect.payload["step"]
        n = self.calls[i] = self.calls.get(i, 0) + 1
        kind = self.steps[i][0]
        if kind == "flaky" and n == 1:
            return EffectOutcome.failed("flaky: try again")  # the policy's second attempt succeeds
        if kind == "fail" and n <= 2:
            return EffectOutcome.failed("down")  # both attempts fail: the run fails, `retry` goes on
        return EffectOutcome.completed({"step": i, "attempt": n})


    def tools(self, run: Any, effect: Effect) -> EffectOutcome:
        """Tool calls wait for a person's decision; the wait resumes to the step's spare node."""
        from abstractruntime.integrations.abstractcore._support import canonical_sha256, normalize_tool_calls

        pending = normalize_tool_calls(effect.payload["tool_calls"])
        spare = self.steps[effect.payload["step"]][2]
        return EffectOutcome.waiting(WaitState(
            reason=WaitReason.EVENT, wait_key=f"tools:{run.run_id}:{effect.payload['step']}",
            resume_to_node=NODES[spare], result_key=effect.result_key,
            details={"mode": "passthrough", "tool_calls": pending, "calls_sha256": canonical_sha256(pending)}))


def add(a: int, b: int) -> int:
    """The one tool: a sum."""
    return a + b


def _options(flow: Flow) -> dict[str, Any]:
    return {"effect_handlers": {EffectType.LLM_CALL: flow.llm, EffectType.TOOL_CALLS: flow.tools},
            "effect_policy": DefaultEffectPolicy(default_max_attempts=2, default_backoff_base=0.0)}


def _drive(flow: Flow, open_store: Any, ticks: list[tuple[int, bool]], lines_of: Any) -> tuple[str, Any]:
    """Run the plan to its end; after each action the live node is the independent reader's."""
    wf = flow.workflow()
    store = open_store()
    rt = store.runtime(**_options(flow))
    run_id = rt.start(workflow=wf, vars={})
    state = rt.get_state(run_id)
    answers = 0
    for turn in range(6 * len(flow.steps) + 6):
        max_steps, reopen = ticks[turn % len(ticks)]
        if reopen:
            store = open_store()
            rt = store.runtime(**_options(flow))
        status = state.status.value
        details = state.waiting.details if state.waiting is not None else None
        if status == "waiting" and isinstance(details, dict) and details.get("mode") == "passthrough":
            from abstractruntime.integrations.abstractcore import LocalToolExecutor

            answers += 1
            if answers % 2:
                state = rt.approve_tool_calls(workflow=wf, run_id=run_id, executor=LocalToolExecutor([add]),
                                              max_steps=max_steps)
            else:
                state = rt.deny_tool_calls(workflow=wf, run_id=run_id, reason="not now", max_steps=max_steps)
        elif status == "waiting":
            answers += 1
            state = rt.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key,
                              payload={"answer": answers}, max_steps=max_steps)
        elif status == "failed":
            state = rt.retry(workflow=wf, run_id=run_id, max_steps=max_steps)
        elif status == "completed":
            break
        else:
            state = rt.tick(workflow=wf, run_id=run_id, max_steps=max_steps)
        found = independent_nodes(lines_of(store, run_id))
        assert found[-1] == state.current_node, f"turn {turn}: the ledger says {found[-1]}, the run is at " \
                                                f"{state.current_node}"
    assert state.status.value == "completed", (state.status, state.error)
    return run_id, state


def _check_ledger(store: Any, run_id: str, live: Any, lines: list[bytes], verify: Any = verify_run) -> None:
    ok, head, message = independent_verify(lines)
    assert ok and head == store.ledger.head(run_id).head_hash, message
    found = independent_nodes(lines)
    rt = store.runtime()
    for seq in range(1, len(lines) + 1):
        assert rt.state_at(run_id, seq).run.current_node == found[seq - 1], f"seq {seq}"
    assert jcs(rt.state_at(run_id, len(lines)).run.to_dict()) == jcs(live.to_dict())
    report = verify(store, run_id)
    assert report.ok, [(p.type, p.message) for p in report.problems]
    docs = [json.loads(line) for line in lines]
    assert {d["format"] for d in docs} == {4}
    pending: Optional[dict[str, Any]] = None
    for doc, at in zip(docs, found):
        closes = pending is not None and doc.get("effect_id") == pending.get("effect_id")
        if doc["kind"] == "effect" and doc["status"] == "completed" and closes and pending is not None:
            went_as_named = at == pending.get("next_node")
            assert ("current_node" in doc.get("delta", {})) is not went_as_named, doc
        if doc["kind"] == "effect" and doc["status"] == "started":
            pending = {"effect_id": doc["effect_id"], "next_node": doc.get("next_node", (pending or {}).get(
                "next_node") if closes else None)}
        elif doc["kind"] == "effect" and doc["status"] in ("completed", "waiting") and closes:
            pending = None
        if "pending" in doc.get("delta", {}):
            pending = doc["delta"]["pending"]


def _file_lines(store: Any, run_id: str) -> list[bytes]:
    return (store.root / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLANS)
def test_random_workflows_replay_to_the_live_node_on_files(plan: tuple[list[Any], list[tuple[int, bool]]]) -> None:
    steps, ticks = plan
    flow = Flow(steps)
    work = Path(tempfile.mkdtemp(prefix="format4-"))
    root = work / "store"
    stores: list[FileStore] = []

    def open_store() -> FileStore:
        stores.append(FileStore(root, durability="none"))
        return stores[-1]

    try:
        run_id, live = _drive(flow, open_store, ticks, _file_lines)
        store = open_store()
        _check_ledger(store, run_id, live, _file_lines(store, run_id))
        for opened in stores:
            opened.close()
        stores.clear()
        # The ledger alone (no checkpoint, no anchor) rebuilds exactly the live state.
        (root / "runs" / run_id / "run.json").unlink()
        (root / "runs" / run_id / "anchors.jsonl").unlink(missing_ok=True)
        assert jcs(open_store().runtime().get_state(run_id).to_dict()) == jcs(live.to_dict())
    finally:
        for opened in stores:
            opened.close()
        shutil.rmtree(work, ignore_errors=True)


@settings(max_examples=max(EXAMPLES // 4, 5), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=PLANS)
def test_random_workflows_replay_to_the_live_node_on_postgres(plan: tuple[list[Any], list[tuple[int, bool]]],
                                                              request: pytest.FixtureRequest) -> None:
    from abstractruntime.storage.postgres.store import PostgresStore
    from abstractruntime.storage.postgres.verify import verify_run as pg_verify_run

    url = request.getfixturevalue("postgres_url")
    steps, ticks = plan
    flow = Flow(steps)
    stores: list[Any] = []

    def open_store() -> Any:
        stores.append(PostgresStore(url, schema="format4nodes"))
        return stores[-1]

    def lines_of(store: Any, run_id: str) -> list[bytes]:
        return [line + b"\n" for line in store.ledger.lines(run_id)]

    try:
        run_id, live = _drive(flow, open_store, ticks, lines_of)
        store = open_store()
        _check_ledger(store, run_id, live, lines_of(store, run_id), pg_verify_run)
    finally:
        for opened in stores:
            opened.close()
