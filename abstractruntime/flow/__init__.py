"""Code-first workflows: a durable workflow written as one plain (sync or async) function.

::

    from abstractruntime import workflow

    @workflow("deploy")
    def deploy(ctx, service: str):
        build = ctx.step(run_build, service)          # recorded; never run again once done
        if ctx.ask(f"Deploy {service}?", choices=["yes", "no"]) != "yes":
            return {"deployed": False}
        ctx.sleep(600)                                 # a durable timer
        return {"deployed": True, "build": build}

The function runs on the same kernel as a graph of nodes — same ledger, wait handles, stores,
verify, CLI — identified by position: on resume it runs again from the top and each ``ctx``
call returns what its position recorded. See docs/workflows.md.
"""

from __future__ import annotations

from .context import AsyncContext, Context
from .decorator import workflow
from .spec import StepOptions, Workflow, is_code_first, step

__all__ = ["AsyncContext", "Context", "StepOptions", "Workflow", "is_code_first", "step", "workflow"]
