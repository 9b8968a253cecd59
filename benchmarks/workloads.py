"""The benchmark workflows, built against any API with upstream 0.0.1's names.

Our package and upstream AbstractRuntime 0.0.1 share ``StepPlan``, ``Effect``,
``EffectType`` and ``WorkflowSpec``, so the same builder makes the same workflow for both:
pass the module namespace (``api``) that provides them. Standard library only, because the
baseline scripts import this file from the bench venv.
"""

from __future__ import annotations

import json
import time
from typing import Any


def linear(api: Any, steps: int) -> Any:
    """``steps`` trivial pure nodes n0 → n1 → … that count in ``vars["i"]``; the last completes."""
    StepPlan, WorkflowSpec = api.StepPlan, api.WorkflowSpec

    def make(k: int) -> Any:
        node_id, next_id = f"n{k}", f"n{k + 1}"
        if k == steps - 1:
            return lambda run, ctx: StepPlan(node_id=node_id, complete_output={"i": run.vars["i"]})

        def node(run: Any, ctx: Any) -> Any:
            run.vars["i"] += 1
            return StepPlan(node_id=node_id, next_node=next_id)

        return node

    return WorkflowSpec(workflow_id="bench_linear", entry_node="n0",
                        nodes={f"n{k}": make(k) for k in range(steps)})


def effects(api: Any, steps: int) -> Any:
    """``steps`` nodes e0 → e1 → …, each a ``tool_calls`` effect (see :func:`make_handler`)."""
    StepPlan, WorkflowSpec, Effect, EffectType = api.StepPlan, api.WorkflowSpec, api.Effect, api.EffectType

    def make(k: int) -> Any:
        node_id, next_id = f"e{k}", f"e{k + 1}"
        if k == steps:
            return lambda run, ctx: StepPlan(node_id=node_id, complete_output={"done": True})

        def node(run: Any, ctx: Any) -> Any:
            effect = Effect(type=EffectType.TOOL_CALLS, payload={"k": k}, result_key="last")
            return StepPlan(node_id=node_id, effect=effect, next_node=next_id)

        return node

    return WorkflowSpec(workflow_id="bench_effects", entry_node="e0",
                        nodes={f"e{k}": make(k) for k in range(steps + 1)})


def make_handler(outcome_cls: Any) -> Any:
    """A trivial ``(run, effect)`` handler returning ``completed({"ok": True})``."""
    def handler(run: Any, effect: Any) -> Any:
        return outcome_cls.completed({"ok": True})

    return handler


def flat(api: Any, *, spin: int, measured: int, stamps: list[float]) -> Any:
    """``spin`` pure steps (to grow the ledger), then ``measured`` effect steps, each stamped.

    The ``eff`` node appends ``time.perf_counter()`` to ``stamps`` every time it runs, so the
    gaps between stamps are the cost of one effect step at the current ledger length.
    """
    StepPlan, WorkflowSpec, Effect, EffectType = api.StepPlan, api.WorkflowSpec, api.Effect, api.EffectType

    def spin_node(run: Any, ctx: Any) -> Any:
        run.vars["s"] = run.vars.get("s", 0) + 1
        return StepPlan(node_id="spin", next_node="spin" if run.vars["s"] < spin else "eff")

    def eff_node(run: Any, ctx: Any) -> Any:
        stamps.append(time.perf_counter())
        k = run.vars.get("k", 0)
        if k >= measured:
            return StepPlan(node_id="eff", complete_output={"k": k})
        run.vars["k"] = k + 1
        effect = Effect(type=EffectType.TOOL_CALLS, payload={"k": k}, result_key="last")
        return StepPlan(node_id="eff", effect=effect, next_node="eff")

    return WorkflowSpec(workflow_id="bench_flat", entry_node="spin" if spin > 0 else "eff",
                        nodes={"spin": spin_node, "eff": eff_node})


def ask(api: Any) -> Any:
    """ask_user → done: the human round trip."""
    StepPlan, WorkflowSpec, Effect, EffectType = api.StepPlan, api.WorkflowSpec, api.Effect, api.EffectType

    def ask_node(run: Any, ctx: Any) -> Any:
        effect = Effect(type=EffectType.ASK_USER, payload={"prompt": "Proceed?"}, result_key="answer")
        return StepPlan(node_id="ask", effect=effect, next_node="done")

    def done_node(run: Any, ctx: Any) -> Any:
        return StepPlan(node_id="done", complete_output={"answer": run.vars["answer"]})

    return WorkflowSpec(workflow_id="bench_ask", entry_node="ask", nodes={"ask": ask_node, "done": done_node})


def run_to_end(runtime: Any, workflow: Any, run_id: str, *, max_steps: int = 100) -> Any:
    """Tick until the run stops running (``max_steps`` per tick, the API's default is 100)."""
    while True:
        state = runtime.tick(workflow=workflow, run_id=run_id, max_steps=max_steps)
        if getattr(state.status, "value", state.status) != "running":
            return state


# -- the agent loop (benchmarks/agent_loop.py and its baselines) ---------------------------------
#
# Each turn calls the model with the whole conversation and appends its reply; the "tools"
# variant then calls one tool with the reply's tool call and appends the tool's output. Every
# message is ``size`` bytes of compact JSON. The model and the tool look only at how many
# messages they were given (a real client would also send them: the same cost for every system,
# left out so that the numbers are the runtime's).


def first_message() -> dict[str, Any]:
    """The conversation's first message."""
    return {"role": "user", "content": "Plan the migration, one step per turn."}


def _padded(message: dict[str, Any], size: int) -> dict[str, Any]:
    """``message`` with its ``content`` padded so that its compact JSON is ``size`` bytes."""
    message["content"] = message.get("content", "")
    missing = size - len(_compact(message))
    if missing > 0:
        message["content"] += " " + "x" * (missing - 1) if missing > 1 else " "
    return message


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def model_reply(count: int, size: int, *, tools: bool) -> dict[str, Any]:
    """The model's reply to a conversation of ``count`` messages (with one tool call when ``tools``)."""
    message: dict[str, Any] = {"role": "assistant", "content": f"Reply to {count} messages."}
    if tools:
        message["tool_calls"] = [{"id": f"call_{count}", "type": "function",
                                  "function": {"name": "search", "arguments": f'{{"query": "step {count}"}}'}}]
    return _padded(message, size)


def tool_output(call: dict[str, Any], size: int) -> dict[str, Any]:
    """The tool's output for ``call``, as the message appended to the conversation."""
    return _padded({"role": "tool", "tool_call_id": call["id"], "content": f"Results for {call['id']}."}, size)


def conversation_bytes(messages: list[Any]) -> int:
    """The conversation's own bytes: its compact JSON."""
    return len(_compact(messages))


def turn_costs(stamps: list[float], end: float, turns: int) -> dict[str, Any]:
    """Mean seconds of turns 11–60 and of the last 50 turns (951–1,000 of 1,000).

    ``stamps`` are the times of the model calls, one per turn: turn k lasts from call k to call
    k + 1 (the last one to ``end``).
    """
    times = list(stamps[:turns]) + [end]
    gaps = [b - a for a, b in zip(times, times[1:])]
    early = gaps[10:60] or gaps[:len(gaps) // 2] or gaps
    late = gaps[-50:] if len(gaps) >= 110 else gaps[len(gaps) // 2:] or gaps
    first = 11 if len(gaps) >= 60 else 1
    return {"early_turns": [first, first + len(early) - 1], "late_turns": [len(gaps) - len(late) + 1, len(gaps)],
            "early_seconds": sum(early) / len(early) if early else 0.0,
            "late_seconds": sum(late) / len(late) if late else 0.0}
