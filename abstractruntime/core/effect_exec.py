"""Performing one effect: idempotent reuse, bracketed attempts, retries with backoff.

The intent record (with the checkpoint naming the pending effect) is durable before the
handler runs; the result record is durable before the run moves on. A completed record with
the same idempotency key is reused instead of calling the handler again.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Callable, Optional

from .canonical import canonical_json, check_size
from .effects import EffectOutcome
from .errors import InvalidInputError, PayloadTooLargeError
from .models import Effect, EffectType, RunState, RunStatus, StepPlan, StepRecord
from .session import RunSession, fail_run, set_nested

if TYPE_CHECKING:
    from .runtime import Runtime

EffectHandler = Callable[..., EffectOutcome]


def run_effect(rt: "Runtime", session: RunSession, plan: StepPlan) -> None:
    run = session.run
    effect = plan.effect
    assert effect is not None
    key = rt.effect_policy.idempotency_key(run=run, node_id=plan.node_id, effect=effect)
    prior = rt.ledger_store.find_completed(run.run_id, key)
    if prior is not None:
        outcome = EffectOutcome.completed(prior.get("result"))
    else:
        outcome = _attempt(rt, session, plan, key)
    session.checkpoint.pending = None
    if outcome.status == "waiting" and outcome.wait is not None:
        run.status, run.waiting = RunStatus.WAITING, outcome.wait
        session.commit()
    elif outcome.status == "completed":
        if effect.result_key and outcome.result is not None:
            set_nested(run.vars, effect.result_key, outcome.result)
        if not plan.next_node:
            fail_run(session, plan.node_id, f"Node '{plan.node_id}' executed an effect but set no next_node")
            return
        run.current_node = plan.next_node
    else:
        run.status, run.error, run.waiting = RunStatus.FAILED, outcome.error or "unknown error", None

def _attempt(rt: "Runtime", session: RunSession, plan: StepPlan, key: str) -> EffectOutcome:
    run, effect = session.run, plan.effect
    assert effect is not None
    max_attempts = rt.effect_policy.max_attempts(effect)
    last_error = "unknown error"
    attempt = 0
    while attempt < max_attempts:
        attempt += 1
        rec = StepRecord.start(run=run, node_id=plan.node_id, effect=effect, attempt=attempt, idempotency_key=key)
        if attempt == 1:
            session.record(rec)
            session.checkpoint.pending = {"node_id": plan.node_id, "effect": effect.to_dict(),
                                          "next_node": plan.next_node, "idempotency_key": key}
            session.commit()  # the intent (and every pure step before it) is durable first
        else:
            session.append_now(rec)
        outcome = _call_handler(rt, effect, run, plan.next_node)
        if outcome.status == "completed":
            try:
                check_size(canonical_json(outcome.result), what=f"Result of {effect.type.value} effect")
            except (InvalidInputError, PayloadTooLargeError) as exc:
                outcome = EffectOutcome.failed(str(exc), retryable=False)
            else:
                session.append_now(rec.finish_success(outcome.result))
                return outcome
        if outcome.status == "waiting" and outcome.wait is not None:
            session.record(rec.finish_waiting(outcome.wait))
            return outcome
        last_error = outcome.error or "unknown error"
        session.append_now(rec.finish_failure(last_error))
        if not outcome.retryable:
            break
        if attempt < max_attempts:
            backoff = rt.effect_policy.backoff_seconds(effect=effect, attempt=attempt)
            if backoff > 0:
                time.sleep(backoff)  # looked up at call time, so tests can patch time.sleep
    plural = "attempt" if attempt == 1 else "attempts"
    return EffectOutcome.failed(f"Effect {effect.type.value} failed after {attempt} {plural}: {last_error}")

def _call_handler(rt: "Runtime", effect: Effect, run: RunState, next_node: Optional[str]) -> EffectOutcome:
    handler = rt._handlers.get(EffectType(effect.type))
    if handler is None:
        return EffectOutcome.failed(f"No effect handler registered for {EffectType(effect.type).value}",
                                    retryable=False)
    try:
        if _takes_next_node(rt, handler):
            outcome = handler(run, effect, next_node)
        else:
            outcome = handler(run, effect)
    except Exception as exc:  # a handler's exception is a failed attempt, retried per policy
        return EffectOutcome.failed(f"Effect handler raised {type(exc).__name__}: {exc}")
    if not isinstance(outcome, EffectOutcome):
        return EffectOutcome.failed(
            f"Effect handler for {effect.type.value} returned {type(outcome).__name__}, not an EffectOutcome",
            retryable=False)
    return outcome

def _takes_next_node(rt: "Runtime", handler: EffectHandler) -> bool:
    """Handlers may take ``(run, effect)`` or ``(run, effect, default_next_node)``."""
    arity = rt._arity.get(handler)
    if arity is None:
        try:
            params = list(inspect.signature(handler).parameters.values())
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
            arity = 3 if varargs or len(positional) >= 3 else 2
        except (TypeError, ValueError):
            arity = 3
        rt._arity[handler] = arity
    return arity >= 3
