"""Deciding on the tool calls a run waits on: approval and denial are kernel operations.

A ``tool_calls`` effect whose calls wait for an operator (a pass-through executor, or a tool a
workflow lists in ``require_approval``) parks its run with ``waiting.details = {"mode",
"tool_calls", "calls_sha256"}``. :meth:`Runtime.approve_tool_calls
<abstractruntime.core.runtime.Runtime.approve_tool_calls>` decides on them under the run's
lock, by the protocol every effect follows:

1. a ``decision`` record (``result``: ``{"calls_sha256", "decision", "by", "wait_id",
   "approved", "denied", "reason"}``) binds the decision to the hash of the exact calls; its
   ``delta`` makes the waiting effect pending again, with the approved calls as its payload —
   the decision is the intent, durable before any tool runs;
2. each approved call runs and its result is recorded as a ``part`` of that effect, durable
   before the next call starts;
3. the effect's outcome (``completed``, the results of every call — refused ones as failed
   results) answers the wait, lands at its ``result_key`` and the run goes on.

A crash inside a tool leaves the run waiting on the same wait with the decision and the parts
recorded: approving again performs only the calls without a result (the one the crash cut
short runs again: the documented at-least-once window). Two operators approving at once are
serialised by the lock: the calls run once, the second is told the wait was answered.

A raw answer to such a wait (``resume``, ``emit``) must name the calls' hash when the caller
asks for it (``require_calls_hash``: the CLI always does); without it, upstream 0.0.1's
pass-through contract — ``resume(payload={"results": [...]})`` — keeps working.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import field
from .fastclass import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional

from .canonical import canonical_json, sha256_hex
from .drive import Io, Request, Step, settle_in_thread
from .effect_context import CURRENT_EFFECT, EffectIdentity
from .effect_exec import _complete, _part_recorder
from .errors import InvalidInputError, RunNotWaitingError, VerificationFailedError
from .models import Effect, EffectType, RecordKind, RunState, RunStatus, StepPlan, WaitState
from .ports import Checkpoint, Pending
from .session import RunSession, leave_wait, new_record
from .wait_checks import refuse_other_wait
from .wal import positional_key

if TYPE_CHECKING:
    from .host import StepHost
    from .spec import WorkflowSpec

APPROVED, DENIED = "approved", "denied"


def calls_digest(calls: Any) -> str:
    """The ``calls_sha256`` of tool calls: sha256 of their canonical JSON."""
    return sha256_hex(canonical_json(calls))


def is_tool_wait(wait: Optional[WaitState]) -> bool:
    """Whether ``wait`` waits for a decision on tool calls."""
    details = wait.details if wait is not None else None
    return isinstance(details, dict) and isinstance(details.get("tool_calls"), list) \
        and isinstance(details.get("calls_sha256"), str)


def pending_calls(run: RunState) -> tuple[list[dict[str, Any]], str]:
    """The calls ``run`` waits on and their hash, checked: :class:`RunNotWaitingError` when it does
    not wait on tool calls, :class:`VerificationFailedError` when the calls do not hash to the
    ``calls_sha256`` recorded with them."""
    wait = run.waiting if run.status is RunStatus.WAITING else None
    if wait is None or not is_tool_wait(wait):
        what = f"waiting on {wait.reason.value}" if wait is not None else f"status: {run.status.value}"
        raise RunNotWaitingError(f"Run {run.run_id} is not waiting on tool calls ({what})", run_id=run.run_id,
                                 status=run.status.value)
    details = wait.details or {}
    calls, digest = details["tool_calls"], str(details["calls_sha256"])
    if calls_digest(calls) != digest:
        raise VerificationFailedError(f"run {run.run_id}: the pending tool calls do not hash to their recorded "
                                      "calls_sha256; refusing to run them (see: abstractruntime verify)")
    return calls, digest


def check_calls_hash(wait: Optional[WaitState], payload: Any, run_id: str, *, required: bool) -> None:
    """The check on a raw answer to a wait on tool calls (nothing written when it refuses).

    An answer that names a ``calls_sha256`` must name the pending calls' hash, so an approval
    reviewed for some calls is never replayed onto others. With ``required`` (the command line's
    ``resume`` and ``emit``) it must name one; without, an answer with none is taken as upstream
    0.0.1 took it.
    """
    if not is_tool_wait(wait):
        return
    assert wait is not None and wait.details is not None
    digest = str(wait.details["calls_sha256"])
    if calls_digest(wait.details["tool_calls"]) != digest:
        raise VerificationFailedError(f"run {run_id}: the pending tool calls do not hash to their recorded "
                                      "calls_sha256; refusing the answer (see: abstractruntime verify)")
    given = payload.get("calls_sha256") if isinstance(payload, dict) else None
    if given is None:
        if required:
            raise InvalidInputError(f"run {run_id} waits on tool calls: decide on them with `tools approve` or "
                                    f"`tools deny` (approve_tool_calls / deny_tool_calls), or answer with a payload "
                                    f"whose calls_sha256 is {digest}", run_id=run_id)
        return
    if given != digest:
        raise InvalidInputError(f"calls_sha256 mismatch: run {run_id} waits on calls {digest}, the answer names "
                                f"{given}; review the pending calls and decide again", run_id=run_id)


def decision_in_progress(checkpoint: Checkpoint) -> Optional[dict[str, Any]]:
    """The payload of a recorded decision whose calls are not all performed yet (a crash cut the
    approval short), or ``None``."""
    pending = checkpoint.pending
    if pending is None or checkpoint.run.status is not RunStatus.WAITING:
        return None
    payload = (pending.effect or {}).get("payload")
    return payload if isinstance(payload, dict) and payload.get("decision") in (APPROVED, DENIED) else None


@dataclass
class Decision:
    """A decision on the calls of one wait, as recorded (or found recorded)."""

    decision: str
    digest: str
    calls: list[dict[str, Any]]
    approved: list[str]
    reason: Optional[str]
    by: Optional[str]
    wait: WaitState
    plan: StepPlan
    effect_id: int
    key: str
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def denied(self) -> list[str]:
        """The calls refused."""
        return [c["call_id"] for c in self.calls if c["call_id"] not in self.approved]

    def record(self) -> dict[str, Any]:
        """The ``approval`` record the results carry (and the decision record's result)."""
        return {"decision": self.decision, "calls_sha256": self.digest, "approved": list(self.approved),
                "denied": self.denied, "reason": self.reason, "by": self.by}


def decide(session: RunSession, *, decision: str, only: Optional[Iterable[str]], reason: Optional[str],
           expected_sha256: Optional[str], by: Optional[str], wait_id: Optional[str]) -> Decision:
    """Check the decision against the wait (raises before writing) and record it, or take up the
    decision already recorded for these calls (an approval a crash cut short)."""
    run, ckpt = session.run, session.checkpoint
    if wait_id is not None:
        refuse_other_wait(run, ckpt.effects, wait_id, lambda: session.ports.ledger.list(session.run_id))
    calls, digest = pending_calls(run)
    if expected_sha256 is not None and expected_sha256.strip().lower() != digest:
        raise InvalidInputError(f"calls_sha256 mismatch: run {run.run_id} waits on calls {digest}, not "
                                f"{expected_sha256.strip()}; review them (tools list) and decide again")
    ids = [str(c.get("call_id")) for c in calls]
    chosen = ids if only is None else [str(i) for i in only]
    unknown = [i for i in chosen if i not in ids]
    if unknown:
        raise InvalidInputError(f"no pending call {unknown[0]!r} (pending: {', '.join(ids)})")
    approved = [i for i in ids if i in chosen] if decision == APPROVED else []
    wait = run.waiting
    assert wait is not None
    effect_id = ckpt.effects  # a waiting run waits on its latest effect
    key = positional_key(session.run_id, effect_id)
    plan = StepPlan(node_id=run.current_node, effect=Effect(EffectType.TOOL_CALLS, {}, wait.result_key),
                    next_node=wait.resume_to_node or run.current_node)
    found = decision_in_progress(ckpt)
    if found is not None:
        previous = found.get("approval") or {}
        if found.get("decision") != decision or previous.get("approved") != approved:
            raise InvalidInputError(
                f"run {run.run_id}: a decision on these calls is already recorded ({found.get('decision')}: "
                f"{', '.join(previous.get('approved') or []) or 'none'} approved, by {previous.get('by')}) and was cut "
                "short; finish it with the same decision (it performs only the calls without a result)",
                run_id=run.run_id)
        pending = ckpt.pending
        assert pending is not None
        return Decision(decision, digest, calls, approved, previous.get("reason"), previous.get("by"), wait, plan,
                        effect_id, key, dict(pending.parts))
    made = Decision(decision, digest, calls, approved, reason, by, wait, plan, effect_id, key)
    to_run = [c for c in calls if c["call_id"] in approved]
    payload = {"tool_calls": to_run, "calls_sha256": digest, "decision": decision, "approval": made.record()}
    ckpt.pending = Pending(effect_id=effect_id, node_id=run.current_node,
                           effect={"type": EffectType.TOOL_CALLS.value, "payload": payload,
                                   "result_key": wait.result_key},
                           next_node=plan.next_node, idempotency_key=key)
    rec = new_record(run, RecordKind.DECISION)
    rec.finish_success({**made.record(), "wait_id": wait.wait_id})
    session.record(rec)
    return made


@dataclass
class ToolCall(Request):
    """Run one approved call with the executor, the effect's identity in context; the call's result."""

    executor: Any
    call: dict[str, Any]
    identity: EffectIdentity

    def _call(self) -> dict[str, Any]:
        token = CURRENT_EFFECT.set(self.identity)
        try:
            try:
                ran = self.executor.execute(tool_calls=[self.call])
                results = ran.get("results") if isinstance(ran, dict) and ran.get("mode") == "executed" else None
                found = [r for r in results or [] if isinstance(r, dict) and r.get("call_id") == self.call["call_id"]]
                if not found:
                    return _failed(self.call, "the executor did not run the call (an executor that runs "
                                              "tools is needed to approve them)")
                return found[0]
            except Exception as exc:  # a tool's failure is that call's failed result
                return _failed(self.call, f"Tool '{self.call.get('name')}' raised {type(exc).__name__}: {exc}")
        finally:
            CURRENT_EFFECT.reset(token)

    def run_sync(self) -> dict[str, Any]:
        return self._call()

    async def run_async(self) -> dict[str, Any]:
        result: dict[str, Any] = await settle_in_thread(self, self._call)
        return result


def _failed(call: dict[str, Any], error: str) -> dict[str, Any]:
    return {"call_id": call.get("call_id"), "name": call.get("name"), "success": False, "output": None,
            "error": error}


def decision_steps(rt: "StepHost", session: RunSession, workflow: "WorkflowSpec", made: Decision, executor: Any,
                   max_steps: int) -> Step:
    """After :func:`decide`: make the decision durable, perform the approved calls (each result
    durable before the next), answer the wait with every result, then advance the run (stepping
    code: :mod:`.drive`)."""
    from .stepping import advance_steps

    run = session.run
    refusal = made.reason or ("denied by operator" if made.decision == DENIED else "not approved")
    parts = dict(made.parts)
    if any(c["call_id"] in made.approved and c["call_id"] not in parts for c in made.calls):
        yield Io(session.flush)  # the decision — the intent of the calls — is durable before any runs
        recorder = _part_recorder(session, made.plan, made.effect_id, made.key, 1, parts, threading.Lock())
        for call in made.calls:
            if call["call_id"] not in made.approved or call["call_id"] in parts:
                continue
            identity = EffectIdentity(run.run_id, made.effect_id, made.key, 1, dict(parts), recorder)
            result = yield ToolCall(executor, call, identity)
            yield Io(functools.partial(recorder, call["call_id"], result))  # durable before the next call starts
    results = [parts.get(c["call_id"]) or _refused(c, refusal) for c in made.calls]
    payload = {"mode": "executed", "results": results, "calls_sha256": made.digest, "approval": made.record()}
    leave_wait(run, made.wait)
    _complete(session, made.plan, made.effect_id, made.key, payload, attempt=1)
    return (yield from advance_steps(rt, session, workflow, max_steps))


def _refused(call: dict[str, Any], reason: str) -> dict[str, Any]:
    return _failed(call, f"Tool call refused: {reason}")


__all__ = ["APPROVED", "DENIED", "Decision", "calls_digest", "check_calls_hash", "decide", "decision_in_progress",
           "decision_steps", "is_tool_wait", "pending_calls"]
