"""Event: wait for an external event (a payment), delivered with `abstractruntime emit`.

    abstractruntime run sample_runs/workflows/event.py --var order_id=o-42        # exits 5
    abstractruntime emit payment:o-42 --payload '{"amount": 19.99}'
"""

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec


def wait_payment(run, ctx):
    order = run.vars.get("order_id", "o-1")
    return StepPlan(
        node_id="wait_payment",
        effect=Effect(type=EffectType.WAIT_EVENT, payload={"wait_key": f"payment:{order}"}, result_key="payment"),
        next_node="ship",
    )


def ship(run, ctx):
    return StepPlan(node_id="ship", complete_output={"order_id": run.vars.get("order_id", "o-1"),
                                                     "paid": run.vars["payment"]})


workflow = WorkflowSpec(workflow_id="event", entry_node="wait_payment",
                        nodes={"wait_payment": wait_payment, "ship": ship})
