"""Runs for the report tests, made with the public API into real stores under tmp_path."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_runs"
SAMPLE_STORE = SAMPLES / "store"
BIN = Path(sys.executable).parent / "abstractruntime"

# Text that must stay text: markup, entities, a bidi override, zero-width characters.
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
ENTITIES = "&amp; &lt;b&gt; &#x3C;i&#x3E; &copy;"
RTL = "\u202eevil\u202c \u200b\u200d\u2067rtl\u2069 \u05e9\u05dc\u05d5\u05dd"
BREAKOUT = "</script><script>window.__pwned=3</script><!--"
HOSTILE_NODE = '<b onmouseover="x">"node"</b> & \\n'


def copy_samples(tmp_path: Path) -> Path:
    """A private copy of the recorded sample store (tests may tamper with it)."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLE_STORE, target, ignore=shutil.ignore_patterns("index.sqlite3*", ".lock"))
    return target


def sample_run_ids() -> list[str]:
    """Every recorded sample run."""
    return sorted(p.name for p in (SAMPLE_STORE / "runs").iterdir() if p.is_dir())


def hostile_run(root: Path, run_id: str = "hostile") -> str:
    """A run whose prompt, choices, answer, node names, LLM text and tool output are hostile,
    with one LLM attempt that fails and is retried."""
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, open_store
    from abstractruntime.core.policy import RetryPolicy

    attempts = {"llm": 0}

    def llm(run: Any, effect: Any, default_next: Any = None) -> Any:
        attempts["llm"] += 1
        if attempts["llm"] == 1:
            return EffectOutcome.failed("upstream said " + HOSTILE, retryable=True)
        return EffectOutcome.completed({"content": "LLM says " + BREAKOUT + " " + RTL, "tool_calls": [],
                                        "model": "fake<model>", "finish_reason": "stop", "usage": {}})

    def tools(run: Any, effect: Any, default_next: Any = None) -> Any:
        calls = effect.payload["tool_calls"]
        return EffectOutcome.completed({"mode": "executed", "results": [
            {"call_id": c["call_id"], "name": c["name"], "success": True, "output": BREAKOUT + ENTITIES,
             "error": None} for c in calls]})

    def ask(run: Any, ctx: Any) -> Any:
        return StepPlan("ask", next_node="think", effect=Effect(
            EffectType.ASK_USER, {"prompt": "Approve " + HOSTILE + "?", "choices": [ENTITIES, RTL],
                                  "allow_free_text": True}, result_key="reply"))

    def think(run: Any, ctx: Any) -> Any:
        return StepPlan("think", next_node=HOSTILE_NODE, effect=Effect(EffectType.LLM_CALL, {
            "messages": [{"role": "system", "content": "system " + ENTITIES},
                         {"role": "user", "content": "user says " + HOSTILE}]}, result_key="llm"))

    def act(run: Any, ctx: Any) -> Any:
        return StepPlan(HOSTILE_NODE, next_node="done", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": [
            {"name": "echo" + HOSTILE, "arguments": {"text": RTL + HOSTILE}, "call_id": "c<1>"}]},
            result_key="tools"))

    def done(run: Any, ctx: Any) -> Any:
        return StepPlan("done", complete_output={"said": run.vars["reply"], "note": BREAKOUT})

    workflow = WorkflowSpec("hostile<wf>", entry_node="ask",
                            nodes={"ask": ask, "think": think, HOSTILE_NODE: act, "done": done})
    store = open_store(root)
    runtime = store.runtime(effect_handlers={EffectType.LLM_CALL: llm, EffectType.TOOL_CALLS: tools},
                            effect_policy=RetryPolicy(backoff_base=0.0, backoff_max=0.0))
    runtime.start(workflow=workflow, run_id=run_id, actor_id="ops" + HOSTILE)
    state = runtime.tick(workflow=workflow, run_id=run_id)
    state = runtime.resume(workflow=workflow, run_id=run_id, wait_key=state.waiting.wait_key,
                           payload={"answer": RTL + " " + HOSTILE + " " + ENTITIES})
    assert state.status.value == "completed", state
    store.close()
    return run_id


def big_run(root: Path, steps: int = 10_000, run_id: str = "big") -> str:
    """A run of ``steps`` ledger records: a loop of plain steps with an LLM call every 500."""
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, open_store

    def llm(run: Any, effect: Any, default_next: Any = None) -> Any:
        return EffectOutcome.completed({"content": f"answer {run.vars.get('i')}", "tool_calls": [], "model": "m"})

    def step(run: Any, ctx: Any) -> Any:
        i = run.vars.get("i", 0) + 1
        run.vars["i"] = i
        if i >= steps:
            return StepPlan("step", complete_output={"steps": i})
        if i % 500 == 0:
            return StepPlan("step", next_node="check", effect=Effect(
                EffectType.LLM_CALL, {"messages": [{"role": "user", "content": f"step {i}?"}]}, result_key="llm"))
        return StepPlan("step", next_node="step" if i % 2 else "other")

    def other(run: Any, ctx: Any) -> Any:
        run.vars["i"] = run.vars.get("i", 0) + 1
        return StepPlan("other", next_node="step")

    def check(run: Any, ctx: Any) -> Any:
        return StepPlan("check", next_node="step")

    workflow = WorkflowSpec("big", entry_node="step", nodes={"step": step, "other": other, "check": check})
    store = open_store(root, durability="none")
    runtime = store.runtime(effect_handlers={EffectType.LLM_CALL: llm})
    rid = runtime.start(workflow=workflow, run_id=run_id)
    state = runtime.tick(workflow=workflow, run_id=rid, max_steps=steps * 2)
    assert state.status.value == "completed", state
    store.close()
    return rid
