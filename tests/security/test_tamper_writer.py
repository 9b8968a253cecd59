"""Someone who can write the store's files cannot make the writer adopt, sign or re-run what they wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from abstractruntime import Effect, EffectOutcome, EffectType, RunState, StepPlan, WorkflowSpec, open_store
from abstractruntime.core.jcs import jcs
from abstractruntime.core.records import record_hash3, seal
from abstractruntime.core.errors import CorruptRecordError, RunNotWaitingError, VerificationFailedError
from abstractruntime.storage.signing import Ed25519Signer
from abstractruntime.storage.verify import verify_run


def payment_workflow() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", next_node="pay", effect=Effect(EffectType.ASK_USER, {"prompt": "Amount?"}, "amount"))

    def pay(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("pay", next_node="done", effect=Effect(
            EffectType.TOOL_CALLS, {"pay": run.vars["amount"]["answer"]}, result_key="receipt"))

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("done", complete_output={"receipt": run.vars["receipt"]})

    return WorkflowSpec("payment", "ask", {"ask": ask, "pay": pay, "done": done})


class Bank:
    """Counts payments: the effect an attacker wants to run twice, or skip."""

    def __init__(self) -> None:
        self.payments: list[Any] = []

    def handler(self, run: RunState, effect: Effect) -> EffectOutcome:
        self.payments.append(effect.payload["pay"])
        return EffectOutcome.completed({"receipt": f"paid-{len(self.payments)}"})


def _files(root: Path, run_id: str) -> dict[str, bytes]:
    run_dir = root / "runs" / run_id
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("signing", [False, True], ids=["unsigned", "signed"])
def test_a_rolled_back_checkpoint_changes_nothing(tmp_path: Path, signing: bool) -> None:
    root, bank, wf = tmp_path / "store", Bank(), payment_workflow()
    signer = Ed25519Signer.generate() if signing else None
    rt = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: bank.handler}, signer=signer)
    run_id = rt.start(workflow=wf, run_id="r1")
    waiting = rt.tick(workflow=wf, run_id=run_id)
    old = (root / "runs" / run_id / "run.json").read_bytes()
    done = rt.resume(workflow=wf, run_id=run_id, wait_id=waiting.waiting.wait_id, payload={"answer": 999999})
    assert bank.payments == [999999] and done.output == {"receipt": {"receipt": "paid-1"}}
    head = verify_run(root, run_id).head_hash
    (root / "runs" / run_id / "run.json").write_bytes(old)  # the attacker puts the old checkpoint back

    fresh = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: bank.handler}, signer=signer)
    with pytest.raises(RunNotWaitingError) as info:
        fresh.resume(workflow=wf, run_id=run_id, wait_key=waiting.waiting.wait_key, payload={"answer": 999999})
    assert "not waiting" in str(info.value)  # the ledger says the wait was answered and the run is done
    assert bank.payments == [999999]  # never paid twice
    key = signer.public_key if signer else None
    report = verify_run(root, run_id, expect_head=head, public_key=key)
    assert report.ok and report.head_hash == head


def _forge_receipt(root: Path, run_id: str) -> None:
    """Append one correctly chained 'payment completed' record for the upcoming payment (format 3,
    sealed with the library's own tools, as anyone can)."""
    path = root / "runs" / run_id / "ledger.jsonl"
    last = json.loads(path.read_bytes().splitlines()[-1])
    effect_id = 2  # positions are predictable: the run's second effect
    fields = {"format": 3, "seq": last["seq"] + 1, "kind": "effect", "status": "completed",
              "at": "2030-01-01T00:00:00.000000+00:00", "prev_hash": last["record_hash"], "node_id": "pay",
              "effect_id": effect_id, "effect": {"type": "tool_calls", "payload": {"pay": 1}, "result_key": "receipt"},
              "result": {"receipt": "FORGED"}, "delta": {"current_node": "done", "vars": [["r", ["receipt"]]]}}
    _doc, line = seal(fields)
    with path.open("ab") as handle:
        handle.write(line + b"\n")


def test_a_forged_record_is_refused_by_a_signing_writer_and_never_signed(tmp_path: Path) -> None:
    root, bank, wf = tmp_path / "store", Bank(), payment_workflow()
    signer = Ed25519Signer.generate()
    rt = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: bank.handler}, signer=signer)
    run_id = rt.start(workflow=wf, run_id="r1")
    waiting = rt.tick(workflow=wf, run_id=run_id)
    _forge_receipt(root, run_id)
    before = _files(root, run_id)

    fresh = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: bank.handler}, signer=signer)
    with pytest.raises(VerificationFailedError, match="signed"):
        fresh.resume(workflow=wf, run_id=run_id, wait_id=waiting.waiting.wait_id, payload={"answer": 5})
    with pytest.raises(VerificationFailedError):
        fresh.tick(workflow=wf, run_id=run_id)
    assert _files(root, run_id) == before and bank.payments == []  # nothing written, nothing paid
    for key in (None, signer.public_key):
        report = verify_run(root, run_id, public_key=key)
        assert "unsigned_tail" in {p.type for p in report.problems}


def test_stripped_signatures_and_a_forged_answer_are_refused_by_a_signing_writer(tmp_path: Path) -> None:
    # Issue 20, item 5: remove every signature, append a forged answer. The first record names
    # the key, so the run never loses it: the writer refuses (nothing written, nothing paid).
    root, bank, wf = tmp_path / "store", Bank(), payment_workflow()
    signer = Ed25519Signer.generate()
    rt = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: bank.handler}, signer=signer)
    run_id = rt.start(workflow=wf, run_id="r1")
    waiting = rt.tick(workflow=wf, run_id=run_id)
    path = root / "runs" / run_id / "ledger.jsonl"
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    for record in records:
        record.pop("signature", None)
    last, wait = records[-1], waiting.waiting
    forged, _ = seal({"format": 3, "seq": last["seq"] + 1, "kind": "resume", "status": "completed",
                      "at": "2030-01-01T00:00:00.000000+00:00", "prev_hash": last["record_hash"], "node_id": "pay",
                      "result": {"payload": {"answer": 5000}, "reason": "user", "wait_id": wait.wait_id,
                                 "wait_key": wait.wait_key},
                      "delta": {"current_node": "pay", "status": "running", "waiting": None,
                                "vars": [["r", ["amount"], ["payload"]]]}})
    path.write_bytes(b"".join(jcs(r) + b"\n" for r in [*records, forged]))
    before = _files(root, run_id)

    fresh = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: bank.handler}, signer=signer)
    with pytest.raises(VerificationFailedError, match="not signed"):
        fresh.tick(workflow=wf, run_id=run_id)
    assert _files(root, run_id) == before and bank.payments == []
    for key in (None, signer.public_key):
        assert "signature_missing" in {p.type for p in verify_run(root, run_id, public_key=key).problems}


def test_without_a_key_an_appended_record_is_replayed_but_an_edit_is_caught(tmp_path: Path) -> None:
    # Without signing, a writer-capable attacker can append well-chained records (documented
    # in docs/provenance.md: only a key or a head published elsewhere stops that); what they
    # cannot do is edit an earlier record unnoticed.
    root, bank, wf = tmp_path / "store", Bank(), payment_workflow()
    rt = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: bank.handler})
    run_id = rt.start(workflow=wf, run_id="r1")
    rt.tick(workflow=wf, run_id=run_id)
    published = verify_run(root, run_id).head_hash
    path = root / "runs" / run_id / "ledger.jsonl"
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    edited = json.loads(lines[1])
    edited["attempt"] = 2  # an edit, without re-hashing
    lines[1] = jcs(edited) + b"\n"
    path.write_bytes(b"".join(lines))
    assert "record_hash_mismatch" in {p.type for p in verify_run(root, run_id).problems}
    path.write_bytes(original)
    _forge_receipt(root, run_id)
    report = verify_run(root, run_id, expect_head=published)
    assert report.ok and report.expect_head_seq == 3 and report.head_seq == 4  # the append shows after it


def test_a_checkpoint_moved_to_another_runs_directory_is_corruption(tmp_path: Path) -> None:
    root, wf = tmp_path / "store", payment_workflow()
    rt = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: Bank().handler})
    for run_id in ("A", "B"):
        rt.tick(workflow=wf, run_id=rt.start(workflow=wf, run_id=run_id))
    shutil.copyfile(root / "runs" / "B" / "run.json", root / "runs" / "A" / "run.json")
    before = _files(root, "B")
    fresh = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: Bank().handler})
    with pytest.raises(CorruptRecordError, match="run.json") as info:
        fresh.resume(workflow=wf, run_id="A", wait_id="w1", payload={"answer": 1})
    assert "'B'" in str(info.value)
    assert _files(root, "B") == before  # B was never written while holding only A's lock


def test_a_signature_field_that_is_not_a_signature_fails_verification(tmp_path: Path) -> None:
    root, wf = tmp_path / "store", payment_workflow()
    rt = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: Bank().handler})
    run_id = rt.start(workflow=wf, run_id="r1")
    rt.tick(workflow=wf, run_id=run_id)
    path = root / "runs" / run_id / "ledger.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    first = json.loads(lines[0])
    first["signature"] = {"note": "APPROVED BY CFO"}  # outside the hash: the chain alone cannot see it
    lines[0] = jcs(first) + b"\n"
    path.write_bytes(b"".join(lines))
    report = verify_run(root, run_id)
    assert "signature_malformed" in {p.type for p in report.problems} and not report.ok


def test_an_unknown_field_in_a_hashed_record_fails_verification(tmp_path: Path) -> None:
    root, wf = tmp_path / "store", payment_workflow()
    rt = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: Bank().handler})
    run_id = rt.start(workflow=wf, run_id="r1")
    path = root / "runs" / run_id / "ledger.jsonl"
    doc = json.loads(path.read_bytes())
    doc["approved_by"] = "CFO"
    doc["record_hash"] = record_hash3(doc)  # re-hashed: the chain holds, the field is still foreign
    path.write_bytes(jcs(doc) + b"\n")
    assert "unknown_field" in {p.type for p in verify_run(root, run_id).problems}
