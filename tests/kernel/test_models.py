"""Model round trips (hypothesis) and the model facts upstream callers rely on."""

from __future__ import annotations

import dataclasses
from datetime import timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core.canonical import canonical_json
from abstractruntime.core.models import (
    Effect,
    EffectType,
    RecordKind,
    RunState,
    RunStatus,
    StepPlan,
    StepRecord,
    StepStatus,
    WaitReason,
    WaitState,
)
from abstractruntime.core.markers import escape
from abstractruntime.storage.base import Checkpoint, LedgerHead, StoredCheckpoint
from abstractruntime.storage.fsio import loads_strict

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10))
json_values = st.recursive(
    _leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
    max_leaves=12)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
maybe_text = st.none() | st.text(min_size=1, max_size=16)
_zones = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))])
iso_times = st.datetimes(timezones=_zones).map(lambda d: d.isoformat())

wait_states = st.builds(
    WaitState,
    reason=st.sampled_from(list(WaitReason)),
    wait_key=maybe_text,
    until=st.none() | iso_times,
    resume_to_node=maybe_text,
    result_key=maybe_text,
    prompt=maybe_text,
    choices=st.none() | st.lists(st.text(max_size=5), max_size=4),
    allow_free_text=st.booleans(),
    details=st.none() | json_objects,
)

run_states = st.builds(
    RunState,
    run_id=st.text(min_size=1, max_size=20),
    workflow_id=st.text(min_size=1, max_size=20),
    status=st.sampled_from(list(RunStatus)),
    current_node=st.text(min_size=1, max_size=10),
    vars=json_objects,
    waiting=st.none() | wait_states,
    output=st.none() | json_objects,
    error=st.none() | st.text(max_size=20),
    created_at=iso_times,
    updated_at=iso_times,
    actor_id=maybe_text,
    parent_run_id=maybe_text,
)

effects = st.builds(Effect, type=st.sampled_from(list(EffectType)), payload=json_objects, result_key=maybe_text)

step_records = st.builds(
    StepRecord,
    run_id=st.text(min_size=1, max_size=12),
    step_id=st.uuids().map(str),
    node_id=st.text(min_size=1, max_size=10),
    status=st.sampled_from(list(StepStatus)),
    effect=st.none() | effects.map(Effect.to_dict),
    result=st.none() | json_objects,
    error=st.none() | st.text(max_size=20),
    started_at=iso_times,
    ended_at=st.none() | iso_times,
    actor_id=maybe_text,
    attempt=st.integers(1, 10),
    idempotency_key=st.none() | st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    prev_hash=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    record_hash=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    signature=maybe_text,
    seq=st.none() | st.integers(1, 10**9),
    kind=st.sampled_from([k.value for k in RecordKind]),
)


def _through_json(data: dict) -> dict:
    """What a file store does: canonical bytes on disk, parsed back strictly."""
    return loads_strict(canonical_json(data))


@settings(max_examples=50, deadline=None)
@given(wait=wait_states)
def test_wait_state_round_trip(wait: WaitState) -> None:
    assert WaitState.from_dict(_through_json(wait.to_dict())) == wait


@settings(max_examples=50, deadline=None)
@given(run=run_states)
def test_run_state_round_trip(run: RunState) -> None:
    data = _through_json(run.to_dict())
    back = RunState.from_dict(data)
    assert back == run
    assert isinstance(back.status, RunStatus)
    assert back.to_dict() == data


@settings(max_examples=50, deadline=None)
@given(rec=step_records)
def test_step_record_round_trip(rec: StepRecord) -> None:
    data = _through_json(rec.to_dict())
    assert data["format"] == 2 and "delta" in data and "effect_id" in data
    back = StepRecord.from_dict(data)
    assert back == rec
    assert isinstance(back.status, StepStatus)


@settings(max_examples=50, deadline=None)
@given(effect=effects)
def test_effect_round_trip(effect: Effect) -> None:
    data = _through_json(effect.to_dict())
    assert data["type"] == EffectType(effect.type).value
    assert Effect.from_dict(data) == effect


@settings(max_examples=30, deadline=None)
@given(run=run_states, seq=st.integers(0, 10**6), head=st.none() | st.text(alphabet="0123456789abcdef", min_size=64,
                                                                            max_size=64))
def test_checkpoint_round_trip(run: RunState, seq: int, head: str | None) -> None:
    state = {"run": escape(run.to_dict()), "kernel": {"effects": seq, "pending": None, "metadata": {}, "origin": {"run_id": "x"},
                                              "workflow": {"sha256": "0" * 64, "workflow_id": run.workflow_id}}}
    checkpoint = StoredCheckpoint(state=state, ledger=LedgerHead(seq=seq, head_hash=head))
    data = _through_json(checkpoint.to_dict())
    assert data["format"] == 3
    back = StoredCheckpoint.from_dict(data)
    assert back == checkpoint and back.run_view() == run
    # An older checkpoint (format 2) still reads, as the live state it held.
    legacy = Checkpoint(run=run, ledger=LedgerHead(seq=seq, head_hash=head), origin={"run_id": "x"})
    old = StoredCheckpoint.from_dict({"format": 2, **_through_json(legacy.to_dict())})
    assert old.legacy == legacy and old.run_view() == run


def test_enum_values_are_the_upstream_strings() -> None:
    assert {s.value for s in RunStatus} == {"running", "waiting", "completed", "failed", "cancelled"}
    # Every upstream reason, plus ours (``budget``: a run that reached its LLM budget).
    assert {r.value for r in WaitReason} >= {"event", "until", "user", "job", "subworkflow"}
    assert {r.value for r in WaitReason} - {"event", "until", "user", "job", "subworkflow"} == {"budget"}
    assert {e.value for e in EffectType} >= {"wait_event", "wait_until", "ask_user", "llm_call", "tool_calls",
                                             "start_subworkflow", "wait_job"}
    assert {s.value for s in StepStatus} == {"started", "completed", "failed", "waiting"}
    # str enums: callers compare with plain strings.
    assert RunStatus.WAITING == "waiting" and isinstance(EffectType.ASK_USER, str)
    assert RunStatus.COMPLETED.is_terminal and not RunStatus.WAITING.is_terminal


def test_run_state_new() -> None:
    run = RunState.new(workflow_id="wf", entry_node="start", actor_id="a", vars={"x": 1}, parent_run_id="p")
    assert run.status is RunStatus.RUNNING and run.current_node == "start"
    assert run.vars == {"x": 1} and run.actor_id == "a" and run.parent_run_id == "p"
    assert run.waiting is None and run.output is None and run.error is None
    assert len(run.run_id) == 36 and run.run_id != RunState.new(workflow_id="wf", entry_node="s").run_id
    assert run.created_at.endswith("+00:00")
    # Fields are settable, as upstream callers do.
    run.status, run.current_node, run.output = RunStatus.WAITING, "n2", None
    run.waiting = WaitState(reason=WaitReason.UNTIL, until="2030-01-01T00:00:00Z")
    run.waiting.until = "2031-01-01T00:00:00Z"
    assert RunState.from_dict(run.to_dict()).waiting.until == "2031-01-01T00:00:00Z"


def test_effect_and_plan_are_frozen_with_upstream_defaults() -> None:
    effect = Effect(type=EffectType.WAIT_EVENT)
    assert effect.payload == {} and effect.result_key is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        effect.result_key = "x"  # type: ignore[misc]
    plan = StepPlan(node_id="n")
    assert plan.effect is None and plan.next_node is None and plan.complete_output is None
    wait = WaitState(reason=WaitReason.USER)
    assert wait.allow_free_text is True and wait.choices is None and wait.details is None


def test_step_record_lifecycle() -> None:
    run = RunState.new(workflow_id="wf", entry_node="n", actor_id="actor")
    effect = Effect(type=EffectType.LLM_CALL, payload={"prompt": "p"}, result_key="r")
    rec = StepRecord.start(run=run, node_id="n", effect=effect, attempt=2)
    assert rec.status is StepStatus.STARTED and rec.attempt == 2 and rec.actor_id == "actor"
    assert rec.effect == {"type": "llm_call", "payload": {"prompt": "p"}, "result_key": "r"}
    assert rec.kind == "effect" and rec.ended_at is None
    assert rec.finish_success({"ok": True}) is rec
    assert rec.status is StepStatus.COMPLETED and rec.result == {"ok": True} and rec.ended_at
    node = StepRecord.start(run=run, node_id="n", effect=None)
    assert node.kind == "node" and node.effect is None
    failed = StepRecord.start(run=run, node_id="n", effect=effect).finish_failure("bad")
    assert failed.status is StepStatus.FAILED and failed.error == "bad"
    wait = WaitState(reason=WaitReason.USER, wait_key="k")
    waiting = StepRecord.start(run=run, node_id="n", effect=effect).finish_waiting(wait)
    assert waiting.status is StepStatus.WAITING and waiting.result == {"wait": wait.to_dict()}


def test_from_dict_ignores_unknown_keys() -> None:
    run = RunState.new(workflow_id="wf", entry_node="n")
    data = run.to_dict() | {"future_field": 1}
    assert RunState.from_dict(data) == run
    rec = StepRecord.start(run=run, node_id="n", effect=None)
    assert StepRecord.from_dict(rec.to_dict() | {"future_field": 1}) == rec
