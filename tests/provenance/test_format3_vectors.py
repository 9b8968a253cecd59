"""Test vectors of record formats 3 and 4 (docs/file-format.md), and the independent verifier on real ledgers.

The hashes below were computed once by ``independent_verifier.py`` — written from the page alone,
sharing no code with the package — and are pinned here: the package must seal the same records to
the same bytes and hashes, and a ledger the runtime writes must verify with the independent code.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from independent_verifier import jcs as independent_jcs
from independent_verifier import nodes as independent_nodes
from independent_verifier import record_hash as independent_record_hash
from independent_verifier import verify_lines

from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, open_store
from abstractruntime.core.records import seal
from abstractruntime.core.secret_values import SecretKeeper
from abstractruntime.core.state import StateImage, digest_of
from abstractruntime.core.values import ValueTable, value_id
from abstractruntime.core.wal import apply_record, record_parts

GENESIS: dict[str, Any] = {
    "format": 3, "seq": 1, "kind": "start", "status": "completed", "at": "2026-12-06T10:00:00.000000+00:00",
    "prev_hash": None, "run_id": "run-1", "node_id": "ask", "result": {"workflow_id": "demo", "parent_run_id": None},
    "delta": {"vars": [["s", [], {"amount": 120, "ratio": 0.5, "note": "café"}]], "workflow_id": "demo",
              "status": "running", "current_node": "ask", "waiting": None, "output": None, "error": None,
              "created_at": "2026-12-06T10:00:00.000000+00:00", "actor_id": None, "parent_run_id": None,
              "metadata": {}, "workflow": None, "origin": None, "pending": None, "effects": 0}}
GENESIS_HASH = "fda04b9f3fbd0720cf393722b6a43782446facb9f153e9305e51da900e4a3b47"
GENESIS_LINE = (
    b'{"at":"2026-12-06T10:00:00.000000+00:00","delta":{"actor_id":null,"created_at":"2026-12-06T10:00:00.000000+00:00",'
    b'"current_node":"ask","effects":0,"error":null,"metadata":{},"origin":null,"output":null,"parent_run_id":null,'
    b'"pending":null,"status":"running","vars":[["s",[],{"amount":120,"note":"caf\xc3\xa9","ratio":0.5}]],'
    b'"waiting":null,"workflow":null,"workflow_id":"demo"},"format":3,"kind":"start","node_id":"ask",'
    b'"prev_hash":null,"record_hash":"fda04b9f3fbd0720cf393722b6a43782446facb9f153e9305e51da900e4a3b47",'
    b'"result":{"parent_run_id":null,"workflow_id":"demo"},"run_id":"run-1","seq":1,"status":"completed"}')
MESSAGES = [{"role": "user", "content": "x" * 300}]
INTENT: dict[str, Any] = {
    "format": 3, "seq": 2, "kind": "effect", "status": "started", "at": "2026-12-06T10:00:00.100000+00:00",
    "prev_hash": GENESIS_HASH, "node_id": "ask", "effect_id": 1, "next_node": "done",
    "effect": {"type": "llm_call", "payload": {"messages": {"$val": MESSAGES}}, "result_key": "reply"}}
INTENT_HASH = "8885f6a71edd3e542ca695e3b2e6105393271a0758e0862383843a8afc4ffc12"
MESSAGES_ID = "501ee671ca5181d6f7b442ee4361e5e98d0e521cc7fedeffb71c873ce6bffcfe"
# Format 4: the outcome of that (format-3) intent. It names no node: the run goes to "done", the
# node the intent named. The same outcome whose delta names "ask" keeps the run at "ask".
OUTCOME: dict[str, Any] = {
    "format": 4, "seq": 3, "kind": "effect", "status": "completed", "at": "2026-12-06T10:00:00.200000+00:00",
    "prev_hash": INTENT_HASH, "effect_id": 1, "result": {"role": "assistant", "content": "Approved."},
    "delta": {"vars": [["r", ["reply"]]]}}
OUTCOME_HASH = "7ea7b5ee76d496b0a94dcafd29fcc8225a7f429cf424f71f92e818ced001985d"
OUTCOME_LINE = (
    b'{"at":"2026-12-06T10:00:00.200000+00:00","delta":{"vars":[["r",["reply"]]]},"effect_id":1,"format":4,'
    b'"kind":"effect","prev_hash":"8885f6a71edd3e542ca695e3b2e6105393271a0758e0862383843a8afc4ffc12",'
    b'"record_hash":"7ea7b5ee76d496b0a94dcafd29fcc8225a7f429cf424f71f92e818ced001985d",'
    b'"result":{"content":"Approved.","role":"assistant"},"seq":3,"status":"completed"}')
OUTCOME_STAYS: dict[str, Any] = {**OUTCOME, "delta": {"vars": [["r", ["reply"]]], "current_node": "ask"}}
OUTCOME_STAYS_HASH = "a8786aee77e7df01ec51e7faa1278817c423a4ccf84fc18809d04aca7eefaccc"
# HMAC-SHA256(key = bytes 0..31, JCS("hunter2")): a secret's commitment.
COMMITMENT = "d21965d819fbbae9edced814ab4e2e32051f8b608a3009118f77cb8c05dfc655"


def test_the_package_seals_the_pinned_vectors() -> None:
    doc, line = seal(dict(GENESIS))
    assert doc["record_hash"] == GENESIS_HASH and line == GENESIS_LINE
    intent, _ = seal(dict(INTENT))
    assert intent["record_hash"] == INTENT_HASH


def test_the_independent_verifier_agrees_with_the_pins() -> None:
    assert independent_record_hash(GENESIS) == GENESIS_HASH
    assert independent_jcs({**GENESIS, "record_hash": GENESIS_HASH}).encode() == GENESIS_LINE
    assert independent_record_hash(INTENT) == INTENT_HASH
    intent_line = independent_jcs({**INTENT, "record_hash": INTENT_HASH}).encode() + b"\n"
    ok, head, message = verify_lines([GENESIS_LINE + b"\n", intent_line])
    assert ok and head == INTENT_HASH, message


def _lines(*records: dict[str, Any]) -> list[bytes]:
    return [independent_jcs({**r, "record_hash": independent_record_hash(r)}).encode() + b"\n" for r in records]


def _package_nodes(lines: list[bytes]) -> list[Any]:
    """The current node after each line, as the package replays them."""
    import json

    image, table, out = StateImage.blank("run-1"), ValueTable(), []
    for line in lines:
        doc = json.loads(line)
        for part in record_parts(doc):
            table.collect(part, doc["seq"])
        apply_record(image, doc, table, "run-1")
        out.append(image.run["current_node"])
    return out


def test_format_4_vectors() -> None:
    doc, line = seal(dict(OUTCOME))
    assert doc["record_hash"] == OUTCOME_HASH and line == OUTCOME_LINE
    assert independent_record_hash(OUTCOME) == OUTCOME_HASH
    assert independent_jcs({**OUTCOME, "record_hash": OUTCOME_HASH}).encode() == OUTCOME_LINE
    assert seal(dict(OUTCOME_STAYS))[0]["record_hash"] == OUTCOME_STAYS_HASH
    assert independent_record_hash(OUTCOME_STAYS) == OUTCOME_STAYS_HASH
    # A format-4 outcome closes a format-3 intent: one chain, both formats.
    lines = [GENESIS_LINE + b"\n", *_lines(INTENT), OUTCOME_LINE + b"\n"]
    ok, head, message = verify_lines(lines)
    assert ok and head == OUTCOME_HASH, message


@pytest.mark.parametrize("outcome, after", [(OUTCOME, "done"), (OUTCOME_STAYS, "ask"),
                                            ({**OUTCOME, "format": 3}, "ask"),
                                            ({**OUTCOME, "status": "waiting", "result": None}, "ask"),
                                            ({**OUTCOME, "status": "failed", "result": None}, "ask"),
                                            ({**OUTCOME, "effect_id": 2}, "ask")],
                         ids=["implied", "delta-wins", "format-3-implies-nothing", "waiting-stays",
                              "failed-stays", "another-effect"])
def test_where_an_outcome_leaves_the_run(outcome: dict[str, Any], after: str) -> None:
    lines = _lines(GENESIS, INTENT, {k: v for k, v in outcome.items() if v is not None or k != "result"})
    assert verify_lines(lines)[0]
    assert independent_nodes(lines) == ["ask", "ask", after]
    assert _package_nodes(lines) == ["ask", "ask", after]


def test_an_intent_that_names_no_next_node_implies_none() -> None:
    intent = {k: v for k, v in INTENT.items() if k != "next_node"}
    lines = _lines(GENESIS, intent, OUTCOME)
    assert independent_nodes(lines) == _package_nodes(lines) == ["ask", "ask", "ask"]


def test_a_newer_format_is_refused_by_the_independent_verifier() -> None:
    ok, _, message = verify_lines(_lines(GENESIS, INTENT, {**OUTCOME, "format": 5}))
    assert not ok and "format 5" in message


def test_stored_values_and_commitments() -> None:
    assert value_id(MESSAGES) == MESSAGES_ID
    assert hashlib.sha256(independent_jcs(MESSAGES).encode()).hexdigest() == MESSAGES_ID
    keeper = SecretKeeper.from_entries([{"key": bytes(range(32)).hex()}])
    assert keeper.commit("hunter2") == COMMITMENT
    assert hmac.new(bytes(range(32)), independent_jcs("hunter2").encode(), hashlib.sha256).hexdigest() == COMMITMENT


def test_the_state_digest_is_the_documented_formula() -> None:
    document = {"run": {"run_id": "run-1", "workflow_id": "demo", "status": "waiting", "current_node": "ask",
                        "vars": {"amount": 120, "reply": {"$v": MESSAGES_ID}}, "waiting": None, "output": None,
                        "error": None, "created_at": "t", "updated_at": "u", "actor_id": None,
                        "parent_run_id": None},
                "kernel": {"effects": 1, "pending": None, "metadata": {}, "workflow": None, "origin": None}}
    per_var = {name: hashlib.sha256(independent_jcs(value).encode()).hexdigest()
               for name, value in document["run"]["vars"].items()}
    shaped = {"run": {**document["run"], "vars": per_var}, "kernel": document["kernel"]}
    assert digest_of(document) == hashlib.sha256(independent_jcs(shaped).encode()).hexdigest()


@pytest.mark.parametrize("edit", ["content", "order", "value"])
def test_the_independent_verifier_catches_edits(edit: str) -> None:
    lines = [GENESIS_LINE + b"\n", independent_jcs({**INTENT, "record_hash": INTENT_HASH}).encode() + b"\n"]
    if edit == "content":
        lines[0] = lines[0].replace(b'"amount":120', b'"amount":121')
    elif edit == "order":
        lines.reverse()
    else:  # a stored value swapped for another one, under its old id
        lines[1] = lines[1].replace(b"x" * 300, b"y" * 300)
    ok, _, message = verify_lines(lines)
    assert not ok, message


def _agent(turns: int) -> tuple[WorkflowSpec, Any]:
    def think(run: Any, ctx: Any) -> StepPlan:
        messages = run.vars.setdefault("messages", [])
        if run.vars.get("reply"):
            messages.append(run.vars["reply"])
        if len(messages) >= turns:
            return StepPlan("think", complete_output={"turns": len(messages), "token": "sk-" + "a" * 30})
        return StepPlan("think", next_node="think", effect=Effect(
            EffectType.LLM_CALL, {"messages": messages, "api_key": "sk-live-" + "b" * 24}, result_key="reply"))

    def llm(run: Any, effect: Effect) -> EffectOutcome:
        return EffectOutcome.completed({"role": "assistant", "content": f"turn {len(effect.payload['messages'])} "
                                        + "z" * 400, "score": 0.25})

    return WorkflowSpec("agent", "think", {"think": think}), llm


@pytest.mark.parametrize("backend", ["files", "postgres"])
def test_ledgers_the_runtime_writes_verify_with_the_independent_code(backend: str, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    workflow, llm = _agent(12)
    if backend == "files":
        store: Any = open_store(tmp_path / "store")
    else:
        from abstractruntime.storage.postgres.store import PostgresStore

        store = PostgresStore(request.getfixturevalue("postgres_url"), schema="v3vectors")
    runtime = store.runtime(effect_handlers={EffectType.LLM_CALL: llm})
    run_id = runtime.start(workflow=workflow, vars={"password": "hunter2"})
    assert runtime.tick(workflow=workflow, run_id=run_id, max_steps=100).status.value == "completed"
    if backend == "files":
        lines = (tmp_path / "store" / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    else:
        lines = [line + b"\n" for line in store.ledger.lines(run_id)]
    ok, head, message = verify_lines(lines)
    assert ok, message
    assert head == store.ledger.head(run_id).head_hash
    text = b"".join(lines)
    assert b"hunter2" not in text and b"sk-live-" not in text  # secrets are commitments, never values
    assert b'"$ext"' in text and b'"$v"' in text  # the conversation is stored once, growing by its tail
    store.close()
