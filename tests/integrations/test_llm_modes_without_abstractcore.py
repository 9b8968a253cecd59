"""Remote and hybrid modes need only httpx: a workflow without tools runs with AbstractCore absent.

The command runs in a child interpreter where ``import abstractcore`` fails (as if the extra
were not installed), against the scripted OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from openai_fixture import OpenAIFixture, chat_completion
from test_abstractcore_import import BLOCK_ABSTRACTCORE

ASK_ONCE = textwrap.dedent(
    """
    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    def ask(run, ctx):
        return StepPlan("ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "Say hi"}, result_key="reply"),
                        next_node="done")

    def done(run, ctx):
        return StepPlan("done", complete_output={"text": run.vars["reply"]["content"]})

    workflow = WorkflowSpec("ask-once", "ask", {"ask": ask, "done": done})
    """
)


def _cli_without_abstractcore(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = BLOCK_ABSTRACTCORE + "import runpy\nsys.argv = ['abstractruntime'] + " + repr(args) + "\n" \
        + "runpy.run_module('abstractruntime', run_name='__main__')\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
    env.update({"ABSTRACTRUNTIME_STORE": str(cwd / "store"), "NO_COLOR": "1", "HOME": str(cwd)})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60)


@pytest.mark.parametrize("mode", ["hybrid", "remote"])
def test_a_workflow_without_tools_runs_without_abstractcore(mode: str, tmp_path: Path,
                                                            openai_server: OpenAIFixture) -> None:
    (tmp_path / "ask_once.py").write_text(ASK_ONCE)
    openai_server.script(chat_completion(content="hi there"))
    proc = _cli_without_abstractcore(["run", "ask_once.py", "--llm", mode, "--server", openai_server.base_url,
                                      "--model", "fixture-model", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == {"text": "hi there"}
    assert len(openai_server.chat_requests()) == 1


def test_hybrid_tool_calls_without_tools_name_the_missing_extra(tmp_path: Path) -> None:
    (tmp_path / "call_tools.py").write_text(textwrap.dedent(
        """
        from abstractruntime.core.models import Effect, EffectType, StepPlan
        from abstractruntime.core.spec import WorkflowSpec

        def call(run, ctx):
            calls = [{"name": "lookup", "arguments": {}, "call_id": "c1"}]
            return StepPlan("call", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, result_key="r"),
                            next_node="done")

        def done(run, ctx):
            return StepPlan("done", complete_output=run.vars["r"])

        workflow = WorkflowSpec("call-tools", "call", {"call": call, "done": done})
        """))
    proc = _cli_without_abstractcore(["run", "call_tools.py", "--llm", "hybrid", "--server", "http://127.0.0.1:9",
                                      "--model", "m"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "needs the 'abstractcore' package" in proc.stderr and "Traceback" not in proc.stderr
