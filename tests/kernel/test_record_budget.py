"""The envelope budget of ledger records (docs/file-format.md, "The envelope budget").

A record's *envelope* is everything but its ``effect``, ``result``, ``delta`` and ``error``: the
chain, its position, kind and status, its time, and the ids that say what it belongs to. A pure
node step and an effect's outcome take at most 320 bytes for node ids of up to 32 characters,
whatever the run's length; an effect's intent, which names its node *and* the node the run goes
to next, at most 384. Measured on the lines a file store writes, with ``seq`` and ``effect_id``
counted as if they had seven digits (a run of up to 9,999,999 records). A signature and a state
digest are not counted: they are on the last record of a signed batch or a checkpoint only.

Beyond the envelope, an effect's outcome that takes the run to the node its intent named spends
nothing on the move (format 4): its delta holds its variables only, where a format-3 outcome
named the node again (49 bytes with 32-character ids).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore

BUDGET = 320
INTENT_BUDGET = 384
CONTENT = ("effect", "result", "delta", "error")
PER_BATCH = ("signature", "state")
NODE = "n" * 31 + "1"  # 32 characters
NEXT = "n" * 31 + "2"
DIGITS = 7


def envelope(line: bytes) -> int:
    """The bytes of ``line`` outside its content, with seq and effect_id widened to DIGITS digits."""
    doc = json.loads(line)
    kept = {k: v for k, v in doc.items() if k not in CONTENT and k not in PER_BATCH}
    size = len(json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode())
    for field in ("seq", "effect_id"):
        if field in kept:
            size += DIGITS - len(str(kept[field]))
    return size


def _workflow() -> WorkflowSpec:
    """A pure step, then an effect (its intent and outcome), then the end — ids of 32 characters."""

    def pure(run: Any, ctx: Any) -> StepPlan:
        run.vars["count"] = run.vars.get("count", 0) + 1
        return StepPlan(NODE, next_node=NEXT)

    def call(run: Any, ctx: Any) -> StepPlan:
        effect = Effect(EffectType.TOOL_CALLS, {"calls": [{"name": "x"}]}, result_key="out")
        return StepPlan(NEXT, effect=effect, next_node=NODE if run.vars["count"] < 3 else "end")

    def end(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("end", complete_output={"count": run.vars["count"]})

    return WorkflowSpec("budget", NODE, {NODE: pure, NEXT: call, "end": end})


def _lines(tmp_path: Path) -> list[bytes]:
    store = FileStore(tmp_path / "store", durability="none")
    try:
        rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed(
            {"ok": True})})
        wf = _workflow()
        run_id = rt.start(workflow=wf)
        state = rt.tick(workflow=wf, run_id=run_id, max_steps=100)
        assert state.status.value == "completed"
        return store.ledger.path(run_id).read_bytes().splitlines()
    finally:
        store.close()


def test_a_pure_step_and_an_effects_records_stay_within_the_envelope_budget(tmp_path: Path) -> None:
    lines = _lines(tmp_path)
    docs = [json.loads(line) for line in lines]
    pure = [line for line, doc in zip(lines, docs) if doc["kind"] == "node"]
    intents = [line for line, doc in zip(lines, docs) if doc["kind"] == "effect" and doc["status"] == "started"]
    outcomes = [line for line, doc in zip(lines, docs) if doc["kind"] == "effect" and doc["status"] == "completed"]
    assert pure and intents and outcomes
    # Each kind carries the fields the budget is about: a 32-character node id, the effect's
    # position, the next node of an intent.
    assert all(json.loads(line)["node_id"] == NODE for line in pure)
    assert all(json.loads(line)["next_node"] in (NODE, "end") for line in intents)
    sizes = {"pure step": max(map(envelope, pure)), "effect intent": max(map(envelope, intents)),
             "effect outcome": max(map(envelope, outcomes))}
    assert sizes["pure step"] <= BUDGET and sizes["effect outcome"] <= BUDGET, sizes
    assert sizes["effect intent"] <= INTENT_BUDGET, sizes


def test_an_outcome_that_goes_where_its_intent_said_names_no_node(tmp_path: Path) -> None:
    lines = _lines(tmp_path)
    docs = [json.loads(line) for line in lines]
    outcomes = [(docs[i - 1], doc) for i, doc in enumerate(docs) if doc["kind"] == "effect"
                and doc["status"] == "completed"]
    assert outcomes
    for intent, outcome in outcomes:
        # Every outcome here moves the run to another node than the one it ran in (NEXT -> NODE or "end").
        assert intent["node_id"] == NEXT and intent["next_node"] != NEXT
        assert outcome["format"] == 4
        assert set(outcome.get("delta", {})) <= {"vars"}, outcome["delta"]
    # A pure step still names where it goes: its record is the only one that says so.
    assert all(doc["delta"]["current_node"] == NEXT for doc in docs if doc["kind"] == "node")


def _agent(turns: int, size: int) -> WorkflowSpec:
    """Each turn appends the model's last reply to the conversation and calls the model with all of it."""

    def agent(run: Any, ctx: Any) -> StepPlan:
        messages = run.vars["messages"]
        if "reply" in run.vars:
            messages.append(run.vars["reply"])
        if len(messages) > turns:
            return StepPlan("agent", complete_output={"turns": turns})
        return StepPlan("agent", effect=Effect(EffectType.LLM_CALL, {"messages": messages}, result_key="reply"),
                        next_node="agent")

    return WorkflowSpec("agent", "agent", {"agent": agent})


def test_an_agent_turn_writes_one_message_whatever_the_history(tmp_path: Path) -> None:
    """Nothing is written twice: the conversation is stored by reference and extended by its tail,
    so a turn's two records cost one message plus their envelopes at turn 5 as at turn 150, in
    one process and across processes (a new store opens the run from its files halfway)."""
    size, turns = 1024, 150

    def model(run: Any, effect: Any) -> EffectOutcome:
        n = len(effect.payload["messages"])
        return EffectOutcome.completed({"role": "assistant", "content": f"{n:04d}" + "x" * (size - 36)})

    handlers = {EffectType.LLM_CALL: model}
    wf = _agent(turns, size)
    root = tmp_path / "store"
    store = FileStore(root, durability="none")
    rt = store.runtime(effect_handlers=handlers)
    run_id = rt.start(workflow=wf, vars={"messages": [{"role": "user", "content": "hi"}]})
    rt.tick(workflow=wf, run_id=run_id, max_steps=turns)  # about half the turns
    store.close()
    store = FileStore(root, durability="none")
    try:
        rt = store.runtime(effect_handlers=handlers)
        while rt.tick(workflow=wf, run_id=run_id, max_steps=7).status.value == "running":
            pass
        assert len(rt.get_state(run_id).vars["messages"]) == turns + 1
        lines = store.ledger.path(run_id).read_bytes().splitlines()
    finally:
        store.close()
    turn_bytes = [len(a) + len(b) for a, b in zip(lines[1::2], lines[2::2])][:turns]
    assert len(turn_bytes) == turns
    # One message (its JSON is ``size`` bytes), its definition, two envelopes and the references
    # (from the third turn: the conversation becomes a stored value once it passes 256 bytes).
    assert max(turn_bytes[2:]) <= size + 1024, turn_bytes
    assert max(turn_bytes[-20:]) - min(turn_bytes[5:25]) <= 16, (turn_bytes[5:25], turn_bytes[-20:])
