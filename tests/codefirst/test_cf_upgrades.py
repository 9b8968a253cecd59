"""Upgrades judged by behaviour, for both styles: a graph run needs the nodes it can still
enter; a code-first run needs its recorded positions to replay. Refusals write nothing."""

from __future__ import annotations

from typing import Any

import pytest

from abstractruntime import NondeterminismError, WorkflowDriftError, workflow
from abstractruntime.core.models import Effect, EffectType, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSource, WorkflowSpec


def _graph(*, with_decide: bool = True, label: str = "v1") -> WorkflowSpec:
    def ask(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("ask", next_node="decide", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"},
                                                                   result_key="reply"))

    def decide(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("decide", complete_output={"reply": run.vars["reply"]["answer"], "by": label})

    nodes = {"ask": ask, **({"decide": decide} if with_decide else {"conclude": decide})}
    return WorkflowSpec("graph_wf", "ask", nodes)


def _source(sha: str, *, upgrade: bool) -> WorkflowSource:
    return WorkflowSource(path=f"/flows/{sha[:4]}.py", sha256=sha, upgrade=upgrade)


OLD, NEW = "a" * 64, "b" * 64


def test_a_graph_run_upgrades_when_the_nodes_it_needs_exist(rt_backend: Any) -> None:
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=_graph().with_source(_source(OLD, upgrade=False)))
    rt.tick(workflow=_graph().with_source(_source(OLD, upgrade=False)), run_id=run_id)
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(WorkflowDriftError, match="--upgrade"):  # changed, not allowed: refused
        rt.resume(workflow=_graph(label="v2").with_source(_source(NEW, upgrade=False)), run_id=run_id,
                  wait_id="w1", payload={"answer": "y"})
    missing = _graph(with_decide=False).with_source(_source(NEW, upgrade=True))
    with pytest.raises(WorkflowDriftError, match="still needs node\\(s\\) 'decide'") as info:
        rt.resume(workflow=missing, run_id=run_id, wait_id="w1", payload={"answer": "y"})
    assert info.value.details["missing"] == ["decide"]
    assert rt_backend.fingerprint(run_id) == before  # nothing written by either refusal
    upgraded = _graph(label="v2").with_source(_source(NEW, upgrade=True))
    state = rt.resume(workflow=upgraded, run_id=run_id, wait_id="w1", payload={"answer": "y"})
    assert state.status is RunStatus.COMPLETED and state.output == {"reply": "y", "by": "v2"}
    [record] = [r for r in rt.get_ledger(run_id) if r["kind"] == "upgrade"]
    assert record["result"] == {"from": OLD, "to": NEW, "checked": "nodes", "nodes": ["ask", "decide"]}
    assert rt.get_checkpoint(run_id).workflow == {"sha256": NEW, "workflow_id": "graph_wf"}


def test_a_code_first_run_upgrades_when_its_history_replays(rt_backend: Any) -> None:
    def step_one() -> int:
        return 1

    def step_two() -> int:
        return 2

    @workflow("cf_up")
    def v1(ctx: Any) -> dict[str, Any]:
        ctx.step(step_one)
        return {"answer": ctx.ask("ok?"), "by": "v1"}

    @workflow("cf_up")
    def v2_compatible(ctx: Any) -> dict[str, Any]:
        ctx.step(step_one)  # same calls, in the same order
        answer = ctx.ask("ok?")
        return {"answer": answer, "by": "v2", "extra": ctx.step(step_two)}  # new work after the wait

    @workflow("cf_up")
    def v2_reordered(ctx: Any) -> dict[str, Any]:
        answer = ctx.ask("ok?")
        ctx.step(step_one)
        return {"answer": answer}

    rt = rt_backend.runtime()
    run_id = rt.start(workflow=v1.with_source(_source(OLD, upgrade=False)))
    rt.tick(workflow=v1.with_source(_source(OLD, upgrade=False)), run_id=run_id)
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(WorkflowDriftError):
        rt.resume(workflow=v2_compatible.with_source(_source(NEW, upgrade=False)), run_id=run_id, wait_id="w2",
                  payload={"answer": "y"})
    with pytest.raises(NondeterminismError, match="position 1: recorded step .*step_one', code ctx.ask\\(\\)") as info:
        rt.resume(workflow=v2_reordered.with_source(_source(NEW, upgrade=True)), run_id=run_id, wait_id="w2",
                  payload={"answer": "y"})
    assert f"sha256 {OLD} -> {NEW}" in str(info.value)
    assert rt_backend.fingerprint(run_id) == before
    state = rt.resume(workflow=v2_compatible.with_source(_source(NEW, upgrade=True)), run_id=run_id, wait_id="w2",
                      payload={"answer": "y"})
    assert state.output == {"answer": "y", "by": "v2", "extra": 2}
    kinds = [r["kind"] for r in rt.get_ledger(run_id)]
    # The upgrade is recorded once the history replayed, before the first new record.
    assert kinds.index("upgrade") == kinds.index("resume") + 1 and kinds.count("upgrade") == 1
    [record] = [r for r in rt.get_ledger(run_id) if r["kind"] == "upgrade"]
    assert record["result"] == {"from": OLD, "to": NEW, "checked": "replay", "positions": 2}
