"""The checks before a decision on pending tool calls (integrations.abstractcore.approval_checks)."""

from __future__ import annotations

from typing import Any

import pytest

from abstractruntime.core.errors import InvalidInputError, RunNotWaitingError, VerificationFailedError
from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.integrations.abstractcore._support import canonical_sha256, normalize_tool_calls
from abstractruntime.integrations.abstractcore.approval_checks import (check_tool_payload, checked_calls,
                                                                       ledger_calls_digest, record_decision,
                                                                       require_tool_wait)

CALLS = [{"name": "deploy", "arguments": {"service": "billing"}, "call_id": "c1"},
         {"name": "notify", "arguments": {}, "call_id": "c2"}]
DIGEST = canonical_sha256(normalize_tool_calls(CALLS))


def _waiting(calls: list[dict[str, Any]] = CALLS, digest: str = DIGEST) -> WaitState:
    return WaitState(reason=WaitReason.EVENT, wait_key=f"tool_calls:{digest}", resume_to_node="next",
                     details={"mode": "passthrough", "tool_calls": calls, "calls_sha256": digest})


def _ledger(waiting: WaitState, digest: str = DIGEST) -> list[dict[str, Any]]:
    wait = {"wait_key": waiting.wait_key, "details": {"calls_sha256": digest}}
    return [{"status": "completed", "result": {"x": 1}}, {"status": "waiting", "result": {"wait": wait}}]


def test_the_recorded_calls_pass_every_check() -> None:
    waiting = _waiting()
    calls, digest = checked_calls(waiting, DIGEST.upper(), ledger=_ledger(waiting))
    assert digest == DIGEST and [c["call_id"] for c in calls] == ["c1", "c2"]
    assert ledger_calls_digest(_ledger(waiting), waiting.wait_key) == DIGEST
    assert ledger_calls_digest(_ledger(waiting), "another") is None


def test_an_edited_checkpoint_is_refused() -> None:
    edited = [{**CALLS[0], "arguments": {"service": "everything"}}, CALLS[1]]
    with pytest.raises(VerificationFailedError):
        checked_calls(_waiting(edited), None)


def test_a_checkpoint_rewritten_with_its_hash_disagrees_with_the_ledger() -> None:
    edited = [{**CALLS[0], "arguments": {"service": "everything"}}]
    forged = _waiting(edited, canonical_sha256(normalize_tool_calls(edited)))
    with pytest.raises(VerificationFailedError, match="ledger"):
        checked_calls(forged, None, ledger=_ledger(forged, DIGEST))


def test_a_reviewed_hash_must_match() -> None:
    with pytest.raises(InvalidInputError, match="calls_sha256 mismatch"):
        checked_calls(_waiting(), "0" * 64)


def test_a_resume_payload_must_name_the_calls_hash() -> None:
    waiting = _waiting()
    check_tool_payload(waiting, {"calls_sha256": DIGEST, "results": []}, _ledger(waiting))
    with pytest.raises(InvalidInputError, match="tools approve"):
        check_tool_payload(waiting, {"results": []}, _ledger(waiting))
    with pytest.raises(InvalidInputError, match="mismatch"):
        check_tool_payload(waiting, {"calls_sha256": "f" * 64}, _ledger(waiting))


def test_require_tool_wait() -> None:
    run = RunState.new(workflow_id="w", entry_node="n", run_id="r1")
    run.status, run.waiting = RunStatus.WAITING, _waiting()
    assert require_tool_wait("r1", run) is run.waiting
    run.waiting = WaitState(reason=WaitReason.USER, wait_key="k", prompt="?")
    with pytest.raises(RunNotWaitingError, match="waiting on user"):
        require_tool_wait("r1", run)
    run.status, run.waiting = RunStatus.COMPLETED, None
    with pytest.raises(RunNotWaitingError, match="status: completed"):
        require_tool_wait("r1", run)


def test_record_decision() -> None:
    payload = record_decision({"mode": "executed"}, digest=DIGEST, decision="approved", call_ids=["c1", "c2"],
                              approved=["c1"], reason="only the deploy")
    assert payload["calls_sha256"] == DIGEST
    assert payload["approval"] == {"decision": "approved", "calls_sha256": DIGEST, "approved": ["c1"],
                                   "denied": ["c2"], "reason": "only the deploy"}
