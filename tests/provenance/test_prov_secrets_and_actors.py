"""Secrets never reach the ledger file; every record names the actor that started the run."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core.effects import EffectOutcome
from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.redaction import Redactor
from abstractruntime.core.restore import restore_snapshot, take_snapshot
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.identity import ActorFingerprint
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

from prov_helpers import DEMO, finish, ledger_path, open_demo, read_records, start_waiting

SECRETS = {
    "api_key": "sk-live-0001",
    "Authorization": "Bearer tok-0002",
    "password": "hunter2-0003",
    "token": "tok-0004",
    "secret": "shh-0005",
    "X-Api-Key": "xak-0006",
    "client_secret": "cs-0007",
    "openai_api_key": "oak-0008",
    "github_token": "ghp-0009",
    "refresh_token": "rt-0010",
}


def call_node(run: RunState, ctx: Any) -> StepPlan:
    payload = {"url": "https://api.example.com", "headers": {"Authorization": SECRETS["Authorization"],
                                                            "X-Api-Key": SECRETS["X-Api-Key"]},
               "auth": [{"password": SECRETS["password"]}, {"client_secret": SECRETS["client_secret"]}],
               "api_key": SECRETS["api_key"], "openai_api_key": SECRETS["openai_api_key"]}
    return StepPlan("call", next_node="ask", effect=Effect(EffectType.TOOL_CALLS, payload, result_key="out"))


def ask_node(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("ask", next_node="done", effect=Effect(EffectType.ASK_USER, {"prompt": "login?"},
                                                           result_key="login"))


def done_node(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("done", complete_output={"ok": True, "secret": SECRETS["secret"]})


FLOW = WorkflowSpec("secrets", "call", {"call": call_node, "ask": ask_node, "done": done_node})


def test_secret_values_never_reach_the_ledger_bytes(tmp_path: Path) -> None:
    received: list[dict] = []

    def tool(run: RunState, effect: Effect) -> EffectOutcome:
        received.append(effect.payload)
        return EffectOutcome.completed({"token": SECRETS["token"], "github_token": SECRETS["github_token"],
                                        "data": "public"})

    root = tmp_path / "store"
    store = FileStore(root, durability="none")
    runtime = store.runtime(effect_handlers={EffectType.TOOL_CALLS: tool})
    run_id = runtime.start(workflow=FLOW, vars={"refresh_token": SECRETS["refresh_token"], "user": "ann"})
    state = runtime.tick(workflow=FLOW, run_id=run_id)
    runtime.resume(workflow=FLOW, run_id=run_id, wait_key=state.waiting.wait_key,
                   payload={"user": "ann", "password": SECRETS["password"]})

    data = ledger_path(root, run_id).read_bytes()
    for key, value in SECRETS.items():
        assert value.encode() not in data, f"{key} leaked into the ledger"
    assert data.count(b'"[REDACTED]"') >= len(SECRETS)
    assert b"https://api.example.com" in data and b'"public"' in data and b'"ann"' in data
    # The handler still got the real values; only the record is scrubbed, before it is hashed.
    assert received[0]["headers"]["Authorization"] == SECRETS["Authorization"]
    assert verify_run(root, run_id).ok


def test_extra_keys_are_configurable(tmp_path: Path) -> None:
    def node(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("n", complete_output={"ssn": "078-05-1120", "name": "ann"})

    flow = WorkflowSpec("pii", "n", {"n": node})
    for redactor, leaked in ((None, True), (Redactor(extra_keys=["SSN"]), False)):
        root = tmp_path / f"store-{leaked}"
        _, runtime = open_demo(root, redactor=redactor) if redactor else open_demo(root)
        run_id = runtime.start(workflow=flow)
        runtime.tick(workflow=flow, run_id=run_id)
        data = ledger_path(root, run_id).read_bytes()
        assert (b"078-05-1120" in data) is leaked
        assert b'"ann"' in data and verify_run(root, run_id).ok


KEY_FORMS = st.sampled_from(["api_key", "API-KEY", "Authorization", "password", "Token", "secret", "x-api-key",
                             "my_password", "slack_token", "aws_secret", "cookie", "private_key"])


@settings(max_examples=25, deadline=None)
@given(key=KEY_FORMS, depth=st.integers(min_value=0, max_value=3), in_list=st.booleans())
def test_secret_keys_at_any_depth(tmp_path_factory: Any, key: str, depth: int, in_list: bool) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    payload: Any = {key: value, "visible": "yes"}
    for level in range(depth):
        payload = {f"level{level}": [payload] if in_list else payload}

    def node(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("n", next_node="end", effect=Effect(EffectType.LLM_CALL, payload, result_key="r"))

    def end(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("end", complete_output={"r": run.vars.get("r")})

    flow = WorkflowSpec("deep", "n", {"n": node, "end": end})
    root = tmp_path_factory.mktemp("deep")
    _, runtime = open_demo(root, effect_handlers={EffectType.LLM_CALL: lambda run, eff: EffectOutcome.completed(
        {"echo": eff.payload})})
    run_id = runtime.start(workflow=flow)
    runtime.tick(workflow=flow, run_id=run_id)
    data = ledger_path(root, run_id).read_bytes()
    assert value.encode() not in data and b'"visible":"yes"' in data


def test_actor_id_is_in_every_record(tmp_path: Path) -> None:
    actor = ActorFingerprint.from_metadata(kind="agent", display_name="Planner", metadata={"team": "ops"})
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_id = runtime.start(workflow=DEMO, actor_id=actor.actor_id)
    waiting = runtime.tick(workflow=DEMO, run_id=run_id)
    snap = take_snapshot(runtime, run_id, name="asked")
    finish(runtime, waiting)
    restore_snapshot(runtime, snap)
    runtime.cancel_run(run_id, reason="enough")

    records = read_records(ledger_path(root, run_id))
    kinds = {r["kind"] for r in records}
    assert {"start", "node", "effect", "resume", "complete", "restore", "cancel"} <= kinds
    # Format 3 names the run's actor once, in its first record, which every later record is chained to
    # (and a restore carries the whole state again); list() shows it on every record.
    assert records[0]["delta"]["actor_id"] == actor.actor_id
    assert all(r["delta"]["actor_id"] == actor.actor_id for r in records if r["kind"] == "restore")
    assert all(r["actor_id"] == actor.actor_id for r in runtime.get_ledger(run_id))
    assert verify_run(root, run_id).ok

    other = start_waiting(runtime)  # no actor given: records say so (null), they do not invent one
    assert {r["actor_id"] for r in runtime.get_ledger(other.run_id)} == {None}
