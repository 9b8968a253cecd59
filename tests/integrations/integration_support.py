"""Shared pieces of the integration tests: markers, a tool round-trip workflow, a real AbstractCore server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.integrations.abstractcore import assistant_message, tool_result_messages
from openai_fixture import free_port

HAS_ABSTRACTCORE = importlib.util.find_spec("abstractcore") is not None
requires_abstractcore = pytest.mark.skipif(not HAS_ABSTRACTCORE, reason="abstractcore extra not installed")

TOOL_RUNS: list[tuple[int, int]] = []


def add(a: int, b: int) -> int:
    """Add two integers."""
    TOOL_RUNS.append((a, b))
    return a + b


ADD_SPEC = {
    "name": "add",
    "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]},
}


def tool_round_trip_workflow(*, params: Optional[dict[str, Any]] = None) -> WorkflowSpec:
    """ask (llm_call with tools) → route → tools (tool_calls) → answer (llm_call with results) → done."""
    extra = {"params": params} if params else {}

    def ask(run: RunState, ctx: Any) -> StepPlan:
        payload = {"messages": [{"role": "user", "content": run.vars["question"]}], "tools": [ADD_SPEC], **extra}
        return StepPlan(node_id="ask", effect=Effect(type=EffectType.LLM_CALL, payload=payload, result_key="llm"),
                        next_node="route")

    def route(run: RunState, ctx: Any) -> StepPlan:
        if run.vars["llm"].get("tool_calls"):
            return StepPlan(node_id="route", next_node="tools")
        return StepPlan(node_id="route", complete_output={"answer": run.vars["llm"]["content"], "tools_used": False})

    def tools(run: RunState, ctx: Any) -> StepPlan:
        payload = {"tool_calls": run.vars["llm"]["tool_calls"]}
        return StepPlan(node_id="tools", effect=Effect(type=EffectType.TOOL_CALLS, payload=payload,
                                                       result_key="tool_results"), next_node="answer")

    def answer(run: RunState, ctx: Any) -> StepPlan:
        messages = [
            {"role": "user", "content": run.vars["question"]},
            assistant_message(run.vars["llm"]),
            *tool_result_messages(run.vars["tool_results"]),
        ]
        return StepPlan(node_id="answer", effect=Effect(type=EffectType.LLM_CALL,
                                                        payload={"messages": messages, **extra}, result_key="final"),
                        next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="done", complete_output={"answer": run.vars["final"]["content"], "tools_used": True})

    return WorkflowSpec(workflow_id="calculator", entry_node="ask",
                        nodes={"ask": ask, "route": route, "tools": tools, "answer": answer, "done": done})


def single_llm_call_workflow(payload: dict[str, Any]) -> WorkflowSpec:
    """One llm_call node whose result becomes the output."""

    def call(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="call", effect=Effect(type=EffectType.LLM_CALL, payload=payload, result_key="llm"),
                        next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="done", complete_output={"content": run.vars["llm"]["content"]})

    return WorkflowSpec(workflow_id="one-call", entry_node="call", nodes={"call": call, "done": done})


class AbstractCoreServer:
    """A real ``python -m abstractcore.server`` process on a free loopback port."""

    token = "test-server-token-0123456789"

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.home = home
        self.log = home / "server.log"
        env = dict(os.environ)
        env.update(
            HOME=str(home),  # its token file, config and logs go here, not in the real home
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            XDG_CACHE_HOME=str(home / ".cache"),
            ABSTRACTCORE_AUTH_TOKEN=self.token,
        )
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "abstractcore.server", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll ``/health`` until the server answers (or fail with its log)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"abstractcore.server did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """Terminate the process (kill if it lingers)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()
