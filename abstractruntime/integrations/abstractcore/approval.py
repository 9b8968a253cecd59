"""Approving or refusing the tool calls a pass-through run is waiting on.

A pass-through ``tool_calls`` effect parks the run (reason ``event``) with
``waiting.details = {"mode": "passthrough", "tool_calls": [...], "calls_sha256": ...}``.
Decide on the calls with the kernel's operations, which record the decision before any call
runs and each result before the next, under the run's lock (a crash or a second operator never
runs a call twice beyond the documented window; :mod:`abstractruntime.core.approvals`)::

    runtime.approve_tool_calls(workflow=wf, run_id=run_id, executor=executor, by="ana")
    runtime.deny_tool_calls(workflow=wf, run_id=run_id, reason="not today", by="ana")

The helpers below build the same payload for a host that runs the calls itself and resumes the
run with it (upstream 0.0.1's pass-through contract) — outside that protocol: nothing is
recorded before the calls run::

    payload = approve_tool_calls(state.waiting, executor)       # run them here
    payload = deny_tool_calls(state.waiting, reason="not today")  # refuse them all
    runtime.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key, payload=payload)

``approve_tool_calls`` re-hashes the calls and refuses to run them if they no longer match
``calls_sha256`` (the checkpoint was edited after the wait was recorded).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from ...core.errors import InvalidInputError, VerificationFailedError
from ...core.models import WaitState
from ._support import canonical_sha256, normalize_tool_calls
from .tool_executor import ToolExecutor


def _details(waiting: Any) -> Mapping[str, Any]:
    details: Any
    if isinstance(waiting, WaitState):
        details = waiting.details
    elif isinstance(waiting, Mapping):
        details = waiting.get("details") if "details" in waiting else waiting
    else:
        details = None
    return details if isinstance(details, Mapping) else {}


def is_tool_approval_wait(waiting: Any) -> bool:
    """True when ``waiting`` (a WaitState or its dict) is a pass-through ``tool_calls`` wait."""
    details = _details(waiting)
    return isinstance(details.get("tool_calls"), list) and isinstance(details.get("calls_sha256"), str)


def pending_tool_calls(waiting: Any) -> list[dict[str, Any]]:
    """The calls a pass-through wait holds, checked against their recorded ``calls_sha256``."""
    if not is_tool_approval_wait(waiting):
        raise InvalidInputError("this run is not waiting for tool-call approval")
    details = _details(waiting)
    calls = normalize_tool_calls(details["tool_calls"])
    if canonical_sha256(calls) != details["calls_sha256"]:
        raise VerificationFailedError(
            "the pending tool calls do not match their recorded calls_sha256; refusing to run them"
        )
    return calls


def approve_tool_calls(
    waiting: Any, executor: ToolExecutor, *, only: Optional[Iterable[str]] = None, reason: str = "not approved"
) -> dict[str, Any]:
    """Run the pending calls with ``executor``; the resume payload ``{"mode": "executed", ...}``.

    ``only`` (call ids) approves a subset; the other calls get a failed result with ``reason``.
    """
    calls = pending_tool_calls(waiting)
    approved_ids = None if only is None else set(only)
    to_run = [c for c in calls if approved_ids is None or c["call_id"] in approved_ids]
    ran = executor.execute(tool_calls=to_run) if to_run else {"mode": "executed", "results": []}
    if not isinstance(ran, Mapping) or ran.get("mode") != "executed":
        raise InvalidInputError("approving tool calls needs an executor that runs them (mode 'executed')")
    ran_results: Any = ran.get("results", [])
    by_id = {r.get("call_id"): r for r in ran_results}
    results = [by_id.get(c["call_id"]) or _refused(c, reason) for c in calls]
    return {"mode": "executed", "results": results}


def deny_tool_calls(waiting: Any, *, reason: str = "denied by operator") -> dict[str, Any]:
    """A resume payload that refuses every pending call (each a failed result with ``reason``)."""
    return {"mode": "executed", "results": [_refused(c, reason) for c in pending_tool_calls(waiting)]}


def _refused(call: Mapping[str, Any], reason: str) -> dict[str, Any]:
    return {"call_id": call["call_id"], "name": call["name"], "success": False, "output": None,
            "error": f"Tool call refused: {reason}"}
