"""The checks that guard a decision on pending tool calls, before anything runs or resumes.

A pass-through ``tool_calls`` wait records the calls and their ``calls_sha256`` twice: in the
run's checkpoint and in the hash-chained ledger record of the wait. Before a host runs or
refuses the calls it re-hashes the pending calls (an edited checkpoint is refused), compares
that hash with the one the ledger recorded (an edit of the checkpoint alone is refused too),
and, when the operator reviewed a hash, with that one (an approval cannot be replayed onto
other arguments). A resume of such a wait must name the hash of the calls it answers.
"""

from __future__ import annotations

from typing import Any, Optional

from ...core.errors import InvalidInputError, RunNotWaitingError, VerificationFailedError
from .approval import is_tool_approval_wait, pending_tool_calls


def require_tool_wait(run_id: str, state: Any) -> Any:
    """The run's waiting state when it waits on tool calls; ``RunNotWaitingError`` otherwise."""
    if state.waiting is None or state.status.value != "waiting" or not is_tool_approval_wait(state.waiting):
        what = (f"waiting on {state.waiting.reason.value}" if state.waiting is not None
                else f"status: {state.status.value}")
        raise RunNotWaitingError(f"Run {run_id} is not waiting on tool calls ({what})",
                                 run_id=run_id, status=state.status.value)
    return state.waiting


def ledger_calls_digest(ledger: list[dict[str, Any]], wait_key: Optional[str]) -> Optional[str]:
    """The ``calls_sha256`` the ledger recorded for the wait ``wait_key`` (``None`` if none)."""
    # The newest "waiting" record for this wait key carries the details the effect produced.
    for rec in reversed(ledger):
        wait = (rec.get("result") or {}).get("wait") if isinstance(rec.get("result"), dict) else None
        if rec.get("status") == "waiting" and isinstance(wait, dict) and wait.get("wait_key") == wait_key:
            details = wait.get("details")
            return details.get("calls_sha256") if isinstance(details, dict) else None
    return None


def checked_calls(waiting: Any, expected_sha256: Optional[str], *, ledger: Optional[list[dict[str, Any]]] = None
                  ) -> tuple[list[dict[str, Any]], str]:
    """The pending calls and their hash, checked against the record and ``expected_sha256``.

    With ``ledger`` (the run's records), the hash must also be the one the hash-chained ledger
    recorded when the run started waiting, so an edit of the checkpoint alone is refused
    (:class:`VerificationFailedError`); a different ``expected_sha256`` is
    :class:`InvalidInputError`.
    """
    calls = pending_tool_calls(waiting)  # VerificationFailedError when the record was edited
    digest = str(waiting.details["calls_sha256"])
    if ledger is not None and ledger_calls_digest(ledger, waiting.wait_key) != digest:
        raise VerificationFailedError("the pending tool calls are not the ones the ledger recorded for this wait; "
                                      "refusing to run them (see: abstractruntime verify)")
    if expected_sha256 is not None and expected_sha256.strip().lower() != digest:
        raise InvalidInputError(f"calls_sha256 mismatch: the run waits on calls {digest}, "
                                f"not {expected_sha256.strip()}; review them with `tools list` and decide again")
    return calls, digest


def check_tool_payload(waiting: Any, payload: Any, ledger: list[dict[str, Any]]) -> None:
    """Refuse a resume of a tool-call wait whose payload does not name the pending calls' hash."""
    _, digest = checked_calls(waiting, None, ledger=ledger)
    given = payload.get("calls_sha256") if isinstance(payload, dict) else None
    if given is None:
        raise InvalidInputError("this run waits on tool calls: resume it with `tools approve` or `tools deny`, "
                                f"or a payload whose calls_sha256 is {digest}")
    if given != digest:
        raise InvalidInputError(f"calls_sha256 mismatch: the run waits on calls {digest}, the payload names {given}")


def record_decision(payload: dict[str, Any], *, digest: str, decision: str, call_ids: list[str],
                    approved: list[str], reason: Optional[str]) -> dict[str, Any]:
    """``payload`` with the hash decided on and an ``approval`` record, both kept in the ledger."""
    payload["calls_sha256"] = digest
    payload["approval"] = {"decision": decision, "calls_sha256": digest, "approved": approved,
                           "denied": [i for i in call_ids if i not in approved], "reason": reason}
    return payload


__all__ = ["require_tool_wait", "ledger_calls_digest", "checked_calls", "check_tool_payload", "record_decision"]
