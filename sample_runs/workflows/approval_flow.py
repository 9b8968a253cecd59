"""Approval flow written as one function: the code-first twin of approval.py.

    abstractruntime run sample_runs/workflows/approval_flow.py --var service=billing

`ctx.ask` makes the run wait (exit 5 and a wait handle without a terminal) until
`abstractruntime resume RUN@w1 --answer yes`; the function then runs again from the top and
the question returns its recorded answer.
"""

from abstractruntime import workflow


@workflow("approval_flow")
def approval(ctx, service="web"):
    answer = ctx.ask(f"Deploy {service} to production? [y/n]", choices=["yes", "no"])
    return {"deployed": answer == "yes", "service": service}
