"""How a run advances, step by step — written once as stepping code (see :mod:`.drive`).

:func:`advance_steps` is what ``tick`` does after opening a run: resume a due timer (or an
effect whose handler is now registered), then run node after node until the run waits, ends,
or ``max_steps`` nodes ran, then make everything durable. A node either completes the run,
moves to its next node, or asks for an effect (:func:`~.effect_exec.effect_steps`). Every
state change is recorded before the next node runs; nothing here touches a store directly
except through the session.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Callable, Optional

from .usage_totals import settle, stamp
from .canonical import canonical_json, check_size
from .drive import Io, NodeCall, Step
from .effect_exec import effect_steps
from .errors import InvalidInputError, PayloadTooLargeError
from .models import Effect, RecordKind, RunStatus, StepPlan, WaitReason
from .ports import Pending
from .session import RunSession, fail_run, fire_timer, new_record
from .spec import WorkflowSpec
from .timers import is_due

if TYPE_CHECKING:
    from .effect_exec import RegisteredHandler
    from .host import StepHost


def advance_steps(rt: "StepHost", session: RunSession, workflow: WorkflowSpec, max_steps: int) -> Step:
    """Advance the run until it waits, completes, fails or ``max_steps`` nodes ran; returns its state."""
    run = session.run
    if run.status is RunStatus.WAITING:
        _resume_due_timer(session, rt.now)
        _resume_for_handler(session, rt.handler_for)
    steps = 0
    while run.status is RunStatus.RUNNING and steps < max_steps:
        steps += 1
        yield from _step(rt, session, workflow)
        if session.tail_is_long():
            # Every CHECKPOINT_EVERY records, also inside a long tick (the usage totals settled first).
            yield Io(session.save_checkpoint)
    settle(session)  # what the tick's LLM calls spent, into the run's state (core/usage_totals.py)
    # One store hop for the last batch, the checkpoint and the warm copy (its stats and its copy
    # of the state are store work too: under the async driver none of it runs on the loop).
    yield Io(_finish_warm, (rt, session))
    return run


def _finish_warm(rt: "StepHost", session: RunSession) -> None:
    session.finish()
    rt.keep_warm(session)


def retry_steps(rt: "StepHost", session: RunSession, workflow: WorkflowSpec, plan: StepPlan,
                pending: Pending, max_steps: int) -> Step:
    """Attempt a failed run's pending effect again with a fresh budget, then advance it."""
    assert plan.effect is not None
    yield from effect_steps(rt, session, plan, pending=pending,
                            extra_attempts=rt.effect_policy.max_attempts(plan.effect))
    return (yield from advance_steps(rt, session, workflow, max_steps))


def _resume_due_timer(session: RunSession, clock: Callable[[], datetime]) -> None:
    run, wait = session.run, session.run.waiting
    if wait is None or WaitReason(wait.reason) is not WaitReason.UNTIL or not wait.until:
        return
    try:
        due = is_due(wait, clock())
    except ValueError:
        fail_run(session, run.current_node, f"wait_until: {wait.until!r} is not an ISO-8601 timestamp")
        return
    if not due:
        return
    fire_timer(session, wait)


def _resume_for_handler(session: RunSession,
                        handler_for: Callable[[str], Optional["RegisteredHandler"]]) -> None:
    run, wait, pending = session.run, session.run.waiting, session.checkpoint.pending
    needed = (wait.details or {}).get("needs_handler") if wait is not None else None
    if not needed or pending is None or handler_for(needed) is None:
        return
    run.status, run.waiting = RunStatus.RUNNING, None
    rec = new_record(run, RecordKind.RESUME)
    rec.finish_success({"reason": "handler", "wait_id": wait.wait_id if wait else None, "effect_type": needed})
    session.record(rec)


def _step(rt: "StepHost", session: RunSession, workflow: WorkflowSpec) -> Step:
    run = session.run
    session.uncommitted_nodes.append(run.current_node)
    pending = session.checkpoint.pending
    if pending is not None and pending.node_id == run.current_node:
        # The effect's intent is durable and its outcome is not: perform it again without
        # re-entering the node body, whose changes are already recorded.
        plan = StepPlan(node_id=pending.node_id, effect=Effect.from_dict(pending.effect), next_node=pending.next_node)
        yield from effect_steps(rt, session, plan, pending=pending)
        return
    flow = getattr(workflow, "flow_steps", None)
    if flow is not None:  # a code-first workflow: its function runs from the top (abstractruntime.flow)
        yield from flow(rt, session)
        return
    node_id = run.current_node
    handler = workflow.nodes.get(node_id)
    if handler is None:
        fail_run(session, node_id, f"Unknown node_id '{node_id}' in workflow '{workflow.workflow_id}'")
        return
    ok, plan = yield NodeCall(handler, run, rt.context)
    if not ok:  # a node's bug (or sys.exit) fails the run, on the record
        fail_run(session, node_id, f"Node '{node_id}' raised {type(plan).__name__}: {plan}",
                 exception_type=type(plan).__name__)
        return
    if not isinstance(plan, StepPlan):
        fail_run(session, node_id, f"Node '{node_id}' returned {type(plan).__name__}, not a StepPlan")
        return
    if plan.complete_output is not None:
        _complete(session, plan)
    elif plan.effect is None:
        if not plan.next_node:
            fail_run(session, plan.node_id, f"Node '{plan.node_id}' returned no effect and no next_node")
            return
        run.current_node = plan.next_node
        rec = new_record(run, RecordKind.NODE, plan.node_id)
        session.record(rec.finish_success({"next_node": plan.next_node}))
    else:
        yield from effect_steps(rt, session, plan)


def _complete(session: RunSession, plan: StepPlan) -> None:
    run = session.run
    try:
        check_size(canonical_json(plan.complete_output), what=f"Output of node {plan.node_id!r}")
    except (InvalidInputError, PayloadTooLargeError) as exc:
        fail_run(session, plan.node_id, str(exc))
        return
    run.status, run.output, run.waiting = RunStatus.COMPLETED, plan.complete_output, None
    stamp(session)  # the run's last record carries its usage totals
    rec = new_record(run, RecordKind.COMPLETE, plan.node_id)
    session.record(rec.finish_success({"completed": True}))


__all__ = ["advance_steps", "retry_steps"]
