"""Format-4 outcomes at the edges of what a reader starts from: anchors and verify's ranges.

A run that goes back and forth between two nodes — a model call that takes it to the question,
the answer back — each move of the model call's outcome naming no node (its intent named it),
with checkpoints every 5 records and anchors every 8, so that anchors stand on intents whose
outcome is the next record. ``state_at`` of every record — started from
the nearest anchor — is at the node an independent reader of the whole ledger finds there, and
``verify`` cut into ranges at the anchors (each range replayed from its anchor's state, on
several processes) agrees with one pass and finds the ledger clean. An anchor whose state was
edited to forget where its pending effect goes is not believed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core import session
from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage import verify_parallel, verify_pool
from abstractruntime.storage.ledger_scan import LedgerScan
from abstractruntime.storage.segments import list_parts
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run
from abstractruntime.storage.verify_report import VerifyReport

from independent_verifier import nodes as independent_nodes

TURNS = 30


def _ping(run: RunState, ctx: Any) -> StepPlan:
    turns = run.vars.setdefault("turns", [])
    if len(turns) >= TURNS:
        return StepPlan("ping", complete_output={"turns": len(turns)})
    turns.append(f"turn {len(turns)} " + "x" * 40)
    return StepPlan("ping", effect=Effect(EffectType.LLM_CALL, {"turn": len(turns)}, result_key="reply"),
                    next_node="pong")


def _pong(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("pong", effect=Effect(EffectType.ASK_USER, {"prompt": "again?"}, result_key="answer"),
                    next_node="ping")


# An answer, then the next intent: a run answered in a tick stores its checkpoint on that intent
# (session.flush_before_effect), so anchors stand on intents whose outcome is the next record.
PING_PONG = WorkflowSpec("ping-pong", "ping", {"ping": _ping, "pong": _pong})


def _llm(run: RunState, effect: Effect) -> EffectOutcome:
    return EffectOutcome.completed({"turn": effect.payload["turn"]})


@pytest.fixture(autouse=True)
def _small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(session, "ANCHOR_EVERY", 8)
    monkeypatch.setattr(verify_parallel, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(verify_pool, "PARALLEL_STORE_MIN_BYTES", 1)


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    store = FileStore(root, durability="none")
    try:
        rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
        run_id = rt.start(workflow=PING_PONG, run_id="pingpong")
        state = rt.tick(workflow=PING_PONG, run_id=run_id)
        while state.status.value == "waiting":
            state = rt.resume(workflow=PING_PONG, run_id=run_id, wait_key=state.waiting.wait_key,
                              payload={"answer": "yes"})
        assert state.status.value == "completed"
    finally:
        store.close()
    return root, run_id


def _anchors(root: Path, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "runs" / run_id / "anchors.jsonl").read_bytes().splitlines()]


def test_anchors_between_intent_and_outcome_replay_to_the_named_node(run: tuple[Path, str]) -> None:
    root, run_id = run
    lines = (root / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    docs = [json.loads(line) for line in lines]
    anchored = [a["seq"] for a in _anchors(root, run_id)]
    on_intents = [seq for seq in anchored if docs[seq - 1]["status"] == "started" and seq < len(docs)
                  and docs[seq]["status"] == "completed" and "current_node" not in docs[seq].get("delta", {})]
    assert on_intents, "no anchor stands between an intent and its outcome"
    found = independent_nodes(lines)
    store = FileStore(root, durability="none")
    try:
        rt = store.runtime()
        assert [rt.state_at(run_id, seq).run.current_node for seq in range(1, len(docs) + 1)] == found
    finally:
        store.close()


def test_verify_in_ranges_agrees_with_one_pass(run: tuple[Path, str]) -> None:
    root, run_id = run
    run_dir = root / "runs" / run_id
    scan = LedgerScan(VerifyReport(run_id=run_id, path=str(run_dir)), want_seqs=set(), want_hashes=set(),
                      committed_seq=None)
    assert verify_parallel.scan_parallel(scan, list_parts(run_dir), run_dir, jobs=2)  # the ranges alone: clean
    one = verify_run(root, run_id, jobs=1)
    assert one.ok, [(p.type, p.message) for p in one.problems]
    assert verify_run(root, run_id, jobs=2).to_dict() == one.to_dict()


def test_an_anchor_that_forgets_where_its_pending_effect_goes_is_not_believed(run: tuple[Path, str]) -> None:
    root, run_id = run
    path = root / "runs" / run_id / "anchors.jsonl"
    anchors = _anchors(root, run_id)
    edited = 0
    for anchor in anchors:
        pending = anchor["checkpoint"]["state"]["kernel"]["pending"]
        if pending is not None:
            pending["next_node"] = "nowhere"
            edited += 1
    assert edited
    path.write_bytes(b"".join(json.dumps(a).encode() + b"\n" for a in anchors))
    lines = (root / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    found = independent_nodes(lines)
    store = FileStore(root, durability="none")
    try:
        rt = store.runtime()
        assert [rt.state_at(run_id, seq).run.current_node for seq in range(1, len(lines) + 1)] == found
        assert "nowhere" not in found
    finally:
        store.close()
    assert verify_run(root, run_id, jobs=2).ok  # anchors are never believed: an unproven one is passed over
