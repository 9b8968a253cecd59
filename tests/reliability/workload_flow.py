"""The code-first twin of the crash batteries' workload: one function, every kind of call.

``crashy_flow`` does per round what ``crashy`` (:mod:`.workload`) does with nodes: counted
steps (each execution appends a line with its idempotency key to the side file, as the
effect handlers do), a step that fails its first attempt and is retried, the same counted
``tool_calls`` effect twice, and per round one of: ``ask``, a flaky ``llm`` + ``wait_event``,
``wait_job`` + a code-first child (with its own counted step and tool call), a timer in the
past + one a few milliseconds ahead. Recorded ``now``/``uuid``/``random`` are taken too, and
their replays must return exactly what was recorded. The counted tool results carry a secret.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from abstractruntime import current_effect, step, workflow
from abstractruntime.core.clock import parse_iso, to_iso

from .workload import NEAR_FUTURE_S, PURE_PER_ROUND, ROUNDS, EffectLog

FLOW_LOG: dict[str, EffectLog] = {}


def _log() -> EffectLog:
    return FLOW_LOG["log"]


def use_log(log: EffectLog) -> None:
    """The side file the counted steps append to (set by the driver of this process)."""
    FLOW_LOG["log"] = log


def counted(r: int, i: int) -> dict[str, Any]:
    """A step with a side effect: one line per execution, keyed by the step's position."""
    identity = current_effect()
    assert identity is not None
    _log().write("step", "ok", identity.run_id, identity.key)
    return {"r": r, "i": i}


@step(attempts=2, backoff=0)
def flaky_step(r: int) -> str:
    """Fails its first execution (per key), then succeeds: retried within the step's budget."""
    identity = current_effect()
    assert identity is not None
    failed_before = any(f[0] == "flakystep" and f[3] == identity.key for f in _log().lines())
    _log().write("flakystep", "ok" if failed_before else "fail", identity.run_id, identity.key)
    if not failed_before:
        raise RuntimeError("transient: first attempt always fails")
    return f"flaky-{r}"


@workflow("crashy_flow_child")
def crashy_flow_child(ctx: Any, k: int) -> dict[str, Any]:
    trail = [ctx.step(counted, 100, k)]
    tool = ctx.tools([{"name": "child", "arguments": {"k": k}, "call_id": "child"}])
    return {"trail": trail, "tool": tool["echo"]}


@workflow("crashy_flow")
def crashy_flow(ctx: Any, t0: str) -> dict[str, Any]:
    trail: list[Any] = []
    tools: dict[str, Any] = {}
    answers: dict[str, Any] = {}
    values: list[Any] = []
    for r in range(ROUNDS):
        for i in range(PURE_PER_ROUND):
            trail.append(ctx.step(counted, r, i))
        trail.append(ctx.step(flaky_step, r))
        call = [{"name": "round", "arguments": {"round": r}, "call_id": f"r{r}"}]
        # The same effect twice: each is its own position, and each runs.
        tools[f"r{r}"] = ctx.tools(call)["echo"]
        tools[f"r{r}again"] = ctx.tools(call)["echo"]
        stamp, uid, draw = ctx.now(), ctx.uuid(), ctx.random()
        values.append([stamp.isoformat(), str(uid), draw])
        if r == 0:
            answers["user"] = ctx.ask("Ship it?", choices=["yes", "no"])
        elif r == 1:
            answers["flaky"] = ctx.llm("p1")["text"]
            answers["event"] = ctx.wait_event("evt:go")
        elif r == 2:
            answers["job"] = ctx.wait_job("job-7")
            answers["child"] = ctx.child(crashy_flow_child, k=2)
        else:
            ctx.sleep_until("2000-01-01T00:00:00+00:00")
            ctx.sleep_until(to_iso(parse_iso(t0) + timedelta(seconds=NEAR_FUTURE_S)))
    # Recorded values are the run's own: a replay returns them, never new ones.
    return {"trail": trail, "tools": tools, "answers": answers, "values": len({v[1] for v in values}),
            "draws_in_range": all(0 <= v[2] < 1 for v in values)}


def registry() -> Any:
    """Both workflows (the child is also registered by ``ctx.child`` itself)."""
    from abstractruntime.scheduler.registry import WorkflowRegistry

    reg = WorkflowRegistry()
    reg.register(crashy_flow)
    reg.register(crashy_flow_child)
    return reg
