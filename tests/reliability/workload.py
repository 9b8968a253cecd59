"""The workflow every crash battery drives: many steps and every kind of effect.

One run of ``crashy`` goes through pure nodes, a counted custom effect per round
(``tool_calls``) that is performed twice with the same payload (a loop: each is its own
effect) and whose result carries a secret (redacted in the ledger, real in the run), a flaky
effect that fails its first execution and is retried (``llm_call``), ``ask_user``,
``wait_event``, ``wait_job``, a ``wait_until`` in the past, one a few milliseconds in the
future, and a sync subworkflow (``crashy_child``, which has its own counted effect). Every
handler execution appends one line to a side file with the effect's key (from
:func:`abstractruntime.current_effect`), so a test can count executions per effect.

``agent`` (at the end of this file) is an agent's loop: a model call with the whole
conversation and a tool call per turn, each appending a 1 KB message.

Nodes may write ``run.vars`` freely: every step's changes are recorded in the ledger and
no node body is entered twice for one step.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

from abstractruntime.core.clock import parse_iso, to_iso
from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan, WaitReason
from abstractruntime.core.effect_context import current_effect
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

ROUNDS = 4
PURE_PER_ROUND = 4
EFFECTS_LOG = "effects.log"
NEAR_FUTURE_S = 0.03


def _pure(node_id: str, next_node: str) -> Callable[[RunState, Any], StepPlan]:
    def node(run: RunState, ctx: Any) -> StepPlan:
        run.vars.setdefault("trail", []).append(node_id)
        return StepPlan(node_id, next_node=next_node)
    return node


def _effect(node_id: str, next_node: str, effect: Effect) -> Callable[[RunState, Any], StepPlan]:
    def node(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id, effect=effect, next_node=next_node)
    return node


def _wait_until_near(node_id: str, next_node: str) -> Callable[[RunState, Any], StepPlan]:
    def node(run: RunState, ctx: Any) -> StepPlan:
        until = to_iso(parse_iso(run.vars["t0"]) + timedelta(seconds=NEAR_FUTURE_S))
        return StepPlan(node_id, effect=Effect(EffectType.WAIT_UNTIL, {"until": until}, result_key="timers.near"),
                        next_node=next_node)
    return node


def _finish(node_id: str) -> Callable[[RunState, Any], StepPlan]:
    def node(run: RunState, ctx: Any) -> StepPlan:
        keep = ("trail", "tool", "answers", "timers", "flaky", "child")
        return StepPlan(node_id, complete_output={k: run.vars.get(k) for k in keep})
    return node


def _round_extras(r: int) -> list[tuple[str, Effect]]:
    """The effects of round ``r`` after its counted tool call."""
    if r == 0:
        return [("ask", Effect(EffectType.ASK_USER, {"prompt": "Ship it?", "choices": ["yes", "no"],
                                                     "allow_free_text": False}, result_key="answers.user"))]
    if r == 1:
        return [("flaky", Effect(EffectType.LLM_CALL, {"prompt": "p1"}, result_key="flaky.r1")),
                ("event", Effect(EffectType.WAIT_EVENT, {"wait_key": "evt:go"}, result_key="answers.event"))]
    if r == 2:
        return [("job", Effect(EffectType.WAIT_JOB, {"job_id": "job-7"}, result_key="answers.job")),
                ("sub", Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "crashy_child", "vars": {"k": 2}},
                               result_key="child"))]
    return [("past", Effect(EffectType.WAIT_UNTIL, {"until": "2000-01-01T00:00:00+00:00"},
                            result_key="timers.past")),
            ("near", None)]  # type: ignore[list-item]


def parent_spec() -> WorkflowSpec:
    """The ``crashy`` workflow (about 40 nodes)."""
    order: list[tuple[str, Optional[Effect], str]] = []  # (node_id, effect or None, kind)
    for r in range(ROUNDS):
        for i in range(PURE_PER_ROUND):
            order.append((f"r{r}p{i}", None, "pure"))
        order.append((f"r{r}tool", Effect(EffectType.TOOL_CALLS, {"round": r}, result_key=f"tool.r{r}"), "effect"))
        # The same effect again (same node kind, same payload): a loop's second call runs too.
        order.append((f"r{r}tool2", Effect(EffectType.TOOL_CALLS, {"round": r}, result_key=f"tool.r{r}again"),
                      "effect"))
        for name, effect in _round_extras(r):
            order.append((f"r{r}{name}", effect, "near" if effect is None else "effect"))
        order.append((f"r{r}end", None, "pure"))
    nodes: dict[str, Callable[[RunState, Any], StepPlan]] = {}
    for index, (node_id, effect, kind) in enumerate(order):
        nxt = order[index + 1][0] if index + 1 < len(order) else "finish"
        if kind == "pure":
            nodes[node_id] = _pure(node_id, nxt)
        elif kind == "near":
            nodes[node_id] = _wait_until_near(node_id, nxt)
        else:
            assert effect is not None
            nodes[node_id] = _effect(node_id, nxt, effect)
    nodes["finish"] = _finish("finish")
    return WorkflowSpec("crashy", order[0][0], nodes)


def child_spec() -> WorkflowSpec:
    """``crashy_child``: pure, counted effect, pure, complete."""
    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("c_done", complete_output={"trail": run.vars.get("trail"), "tool": run.vars.get("tool")})
    return WorkflowSpec("crashy_child", "c1", {
        "c1": _pure("c1", "c_tool"),
        "c_tool": _effect("c_tool", "c2", Effect(EffectType.TOOL_CALLS, {"child": True}, result_key="tool.child")),
        "c2": _pure("c2", "c_done"),
        "c_done": done,
    })


def registry() -> WorkflowRegistry:
    """Both workflows, for subworkflows and the scheduler."""
    reg = WorkflowRegistry()
    reg.register(parent_spec())
    reg.register(child_spec())
    return reg


class EffectLog:
    """Appends one line per handler execution: ``<kind> <status> <run_id> <idempotency key>``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, kind: str, status: str, run_id: str, key: str) -> None:
        """One ``O_APPEND`` write: it survives a kill -9 of this process."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{kind} {status} {run_id} {key}\n".encode())
        finally:
            os.close(fd)

    def lines(self) -> list[list[str]]:
        """Every execution so far, split into fields."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [line.split() for line in text.splitlines() if line.strip()]

    def executions(self) -> dict[str, int]:
        """Handler executions per idempotency key."""
        counts: dict[str, int] = {}
        for fields in self.lines():
            counts[fields[3]] = counts.get(fields[3], 0) + 1
        return counts


def handlers(log: EffectLog) -> dict[EffectType, Callable[..., EffectOutcome]]:
    """The custom handlers: ``tool_calls`` (counted) and ``llm_call`` (fails its first execution)."""

    def tool(run: RunState, effect: Effect) -> EffectOutcome:
        key = _key()
        log.write("tool", "ok", run.run_id, key)
        # A secret in the result: the ledger redacts it, recovery must still see it.
        return EffectOutcome.completed({"echo": effect.payload, "node": run.current_node,
                                        "access_token": f"s3cret-{run.run_id}-{run.current_node}"})

    def flaky(run: RunState, effect: Effect) -> EffectOutcome:
        key = _key()
        failed_before = any(f[0] == "flaky" and f[3] == key for f in log.lines())
        log.write("flaky", "ok" if failed_before else "fail", run.run_id, key)
        if not failed_before:
            return EffectOutcome.failed("transient: first attempt always fails")
        return EffectOutcome.completed({"text": "answer", "prompt": effect.payload.get("prompt")})

    return {EffectType.TOOL_CALLS: tool, EffectType.LLM_CALL: flaky}


def _key() -> str:
    identity = current_effect()
    assert identity is not None, "called outside an effect handler"
    return identity.key


def policy() -> DefaultEffectPolicy:
    """Retries for ``llm_call`` (3 attempts, no backoff); one attempt for everything else."""
    return DefaultEffectPolicy(default_max_attempts=1, default_backoff_base=0.0,
                               effect_max_attempts={"llm_call": 3})


def answer_for(run: RunState) -> dict[str, Any]:
    """The deterministic answer a driver gives to the run's current wait."""
    wait = run.waiting
    assert wait is not None
    reason = WaitReason(wait.reason)
    if reason is WaitReason.USER:
        return {"answer": "yes"}
    if reason is WaitReason.EVENT:
        return {"event": wait.wait_key}
    if reason is WaitReason.JOB:
        return {"job": (wait.details or {}).get("job_id"), "status": "done"}
    raise AssertionError(f"no answer for a {reason.value} wait")


# -- the agent loop ---------------------------------------------------------------------------------
#
# ``agent``: each turn appends the last tool output to the conversation and calls the model with
# all of it (``llm_call``), then appends the model's reply and calls the tool it asks for
# (``tool_calls``). Messages are 1 KB; every fifth tool output carries an API key (redacted in
# the ledger, real in the conversation). The conversation is stored once: each record adds one
# message, and extends the stored conversation by its tail (docs/file-format.md).

AGENT_TURNS = 40
AGENT_MESSAGE_BYTES = 1024


def _sized(message: dict[str, Any]) -> dict[str, Any]:
    missing = AGENT_MESSAGE_BYTES - len(json.dumps(message, separators=(",", ":")))
    message["content"] += " " + "x" * max(missing - 1, 0)
    return message


def agent_spec() -> WorkflowSpec:
    """The ``agent`` workflow: ``AGENT_TURNS`` turns of model call + tool call."""

    def agent(run: RunState, ctx: Any) -> StepPlan:
        messages = run.vars["messages"]
        if "tool" in run.vars:
            messages.append(run.vars["tool"])
        if (len(messages) - 1) // 2 >= AGENT_TURNS:
            return StepPlan("agent", complete_output={"messages": len(messages)})
        return StepPlan("agent", effect=Effect(EffectType.LLM_CALL, {"messages": messages}, result_key="reply"),
                        next_node="act")

    def act(run: RunState, ctx: Any) -> StepPlan:
        reply = run.vars["reply"]
        run.vars["messages"].append(reply)
        return StepPlan("act", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": reply["tool_calls"]},
                                             result_key="tool"), next_node="agent")

    return WorkflowSpec("agent", "agent", {"agent": agent, "act": act})


def agent_vars() -> dict[str, Any]:
    """The run's first variables: the user's message."""
    return {"messages": [{"role": "user", "content": "Plan the migration, one step per turn."}]}


def agent_handlers(log: EffectLog) -> dict[EffectType, Callable[..., EffectOutcome]]:
    """The model (its reply depends only on the conversation's length) and the tool, both counted."""

    def model(run: RunState, effect: Effect) -> EffectOutcome:
        count = len(effect.payload["messages"])
        log.write("model", "ok", run.run_id, _key())
        return EffectOutcome.completed(_sized({
            "role": "assistant", "content": f"Reply to {count} messages.",
            "tool_calls": [{"id": f"call_{count}", "type": "function",
                            "function": {"name": "search", "arguments": f'{{"query": "step {count}"}}'}}]}))

    def tool(run: RunState, effect: Effect) -> EffectOutcome:
        call = effect.payload["tool_calls"][0]
        log.write("agent_tool", "ok", run.run_id, _key())
        output: dict[str, Any] = {"role": "tool", "tool_call_id": call["id"], "content": f"Results for {call['id']}."}
        if int(call["id"].split("_")[1]) % 5 == 0:
            output["api_key"] = f"sk-live-{run.run_id}-{call['id']}"
        return EffectOutcome.completed(_sized(output))

    return {EffectType.LLM_CALL: model, EffectType.TOOL_CALLS: tool}
