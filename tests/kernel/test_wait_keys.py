"""A wait key no store can hold (U+0000, a lone surrogate, too long to index) is refused where
the wait is made, with a clear error, on every store — not recorded in the ledger and then
failing every checkpoint write after it (PostgreSQL cannot store U+0000 in a text column)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason, WaitState
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler.events import emit_event
from abstractruntime.storage.ledger_chain import verify_ledger_chain
from abstractruntime.storage.store import FileStore


@pytest.fixture(params=["folder", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "folder":
        made: Any = FileStore(tmp_path / "store", durability="none")
    else:
        from abstractruntime.storage.postgres.store import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_url"), schema=f"t_{uuid.uuid4().hex[:16]}")
    yield made
    made.close()


def _flow(effect: Effect) -> WorkflowSpec:
    return WorkflowSpec("keys", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="done", effect=effect),
        "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True}),
    })


@pytest.mark.parametrize("effect, why", [
    (Effect(EffectType.WAIT_EVENT, {"wait_key": "order\x00paid"}, "paid"), "U+0000"),
    (Effect(EffectType.ASK_USER, {"prompt": "Go?", "wait_key": "ask\x00me"}, "reply"), "U+0000"),
    (Effect(EffectType.WAIT_JOB, {"job_id": "j\x00b"}, "job"), "U+0000"),
    (Effect(EffectType.WAIT_EVENT, {"wait_key": "k" * 3000}, "paid"), "at most 1024 bytes"),
])
def test_a_wait_key_no_store_can_hold_fails_the_run_clearly(store: Any, effect: Effect, why: str) -> None:
    rt = store.runtime()
    flow = _flow(effect)
    run_id = rt.start(workflow=flow)
    state = rt.tick(workflow=flow, run_id=run_id)
    assert state.status is RunStatus.FAILED
    assert why in (state.error or "") and "wait key" in (state.error or "")
    # The store holds the failure, and goes on working for this run.
    assert store.runs.load(run_id).status is RunStatus.FAILED
    assert rt.tick(workflow=flow, run_id=run_id).status is RunStatus.FAILED
    assert verify_ledger_chain(store.ledger.list(run_id))["ok"] is True
    assert [r.run_id for r in store.runs.list_runs(status=RunStatus.FAILED)] == [run_id]


def test_a_handler_that_waits_on_such_a_key_fails_its_effect(store: Any) -> None:
    def custom(run: RunState, effect: Effect) -> EffectOutcome:
        return EffectOutcome.waiting(WaitState(reason=WaitReason.EVENT, wait_key="custom\x00key"))

    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: custom})
    flow = _flow(Effect(EffectType.TOOL_CALLS, {}, "r"))
    run_id = rt.start(workflow=flow)
    state = rt.tick(workflow=flow, run_id=run_id)
    assert state.status is RunStatus.FAILED and "U+0000" in (state.error or "")
    assert store.runs.load(run_id).status is RunStatus.FAILED
    with pytest.raises(InvalidInputError):  # built directly, bypassing waiting(): refused too
        EffectOutcome(status="waiting", wait=WaitState(reason=WaitReason.EVENT, wait_key="a\x00b"))


def test_emit_refuses_such_a_key(store: Any) -> None:
    def resolve(run: RunState) -> Any:
        raise AssertionError("nothing may be resumed")

    for key in ("a\x00b", "k" * 2000):
        with pytest.raises(InvalidInputError) as info:
            emit_event(store.runs, key, {}, resolve=resolve)
        assert "wait key" in str(info.value)
