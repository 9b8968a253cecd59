"""Timer: wait until a moment in the future, then finish.

    abstractruntime run sample_runs/workflows/timer.py --var delay_seconds=2   # exits 5: waiting
    sleep 2; abstractruntime tick --due                                       # completes it
"""

from datetime import datetime, timedelta, timezone

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec


def schedule(run, ctx):
    # The deadline is computed once and kept in vars: a re-run of this node reuses it.
    if "until" not in run.vars:
        now = datetime.fromisoformat(ctx.now_iso())
        run.vars["until"] = (now + timedelta(seconds=float(run.vars.get("delay_seconds", 2)))).isoformat()
    return StepPlan(node_id="schedule", next_node="sleep")


def sleep(run, ctx):
    return StepPlan(
        node_id="sleep",
        effect=Effect(type=EffectType.WAIT_UNTIL, payload={"until": run.vars["until"]}, result_key="timer"),
        next_node="done",
    )


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"woke_at_or_after": run.vars["until"]})


workflow = WorkflowSpec(workflow_id="timer", entry_node="schedule",
                        nodes={"schedule": schedule, "sleep": sleep, "done": done})
