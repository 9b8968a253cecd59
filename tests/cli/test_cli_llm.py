"""LLM options and tool approval through the in-process runner (no LLM server needed)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cli_support import WORKFLOWS

AGENT = str(WORKFLOWS / "agent.py")

GATED = textwrap.dedent('''
    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    def double(n: int) -> int:
        """Double a number."""
        return 2 * n

    def launch(target: str) -> str:
        """Launch something (needs approval)."""
        return "launched " + target

    tools = [double, launch]
    require_approval = ["launch"]

    def go(run, ctx):
        calls = [{"name": "double", "arguments": {"n": 21}, "call_id": "c1"}]
        if run.vars.get("launch"):
            calls.append({"name": "launch", "arguments": {"target": run.vars["launch"]}, "call_id": "c2"})
        return StepPlan(node_id="go", effect=Effect(type=EffectType.TOOL_CALLS, payload={"tool_calls": calls},
                                                    result_key="res"), next_node="done")

    def done(run, ctx):
        return StepPlan(node_id="done", complete_output={r["call_id"]: [r["success"], r["output"], r["error"]]
                                                         for r in run.vars["res"]["results"]})

    workflow = WorkflowSpec(workflow_id="gated", entry_node="go", nodes={"go": go, "done": done})
''')


@pytest.fixture
def gated(tmp_path: Path) -> str:
    path = tmp_path / "gated.py"
    path.write_text(GATED, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("args, needle", [
    (["--llm", "bogus"], "--llm must be one of: local, remote, hybrid"),
    (["--llm", "remote"], "needs --model"),
    (["--llm", "local", "--model", "m"], "needs --provider"),
    (["--llm", "hybrid", "--model", "m"], "needs --server"),
    (["--llm", "remote", "--model", "m", "--base-url", "http://x"], "needs --server"),
    (["--llm", "remote", "--model", "m", "--server", "ftp://x"], "--server must be an http(s) URL"),
    (["--llm", "local", "--provider", "ollama", "--model", "m", "--base-url", "x"], "--base-url must be"),
])
def test_bad_llm_options_are_usage_errors(cli, args: list[str], needle: str) -> None:
    r = cli("run", AGENT, *args)
    assert r.exit_code == 2
    assert needle in r.stderr and r.stdout == ""


def test_llm_options_come_from_the_environment(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABSTRACTRUNTIME_LLM", "hybrid")
    r = cli("run", AGENT)
    assert r.exit_code == 2 and "--llm hybrid needs --model" in r.stderr
    monkeypatch.setenv("ABSTRACTRUNTIME_MODEL", "m")
    monkeypatch.setenv("ABSTRACTRUNTIME_SERVER", "not a url")
    r = cli("tick", "some-run")
    assert r.exit_code == 2 and "--server must be an http(s) URL" in r.stderr
    # The command line wins over the environment.
    r = cli("resume", "missing-run", "--current", "--answer", "x", "--llm", "remote", "--server", "http://127.0.0.1:9")
    assert r.exit_code == 4


def test_api_keys_are_not_command_line_options(cli) -> None:
    for option in ("--api-key", "--provider-api-key"):
        r = cli("run", AGENT, option, "sk-x")
        assert r.exit_code == 2 and "No such option" in r.stderr


def test_without_llm_an_llm_call_waits_for_a_handler(cli) -> None:
    r = cli("--no-input", "run", AGENT, "--json")
    assert r.exit_code == 5
    state = json.loads(r.stdout)
    assert state["status"] == "waiting" and state["waiting"]["details"] == {"needs_handler": "llm_call"}


def test_llm_config_and_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    from abstractruntime.cli.llm import mode_handlers
    from abstractruntime.llm_config import llm_config

    assert llm_config(None, provider="p", model="m", server=None, base_url=None) is None
    assert llm_config("  ", provider=None, model=None, server=None, base_url=None) is None
    cfg = llm_config("Remote", provider="openai", model="gpt", server="http://h:1/", base_url=None)
    assert (cfg.mode, cfg.model, cfg.provider, cfg.server) == ("remote", "gpt", "openai", "http://h:1")
    monkeypatch.setenv("ABSTRACTRUNTIME_API_KEY", "sk-never-shown")
    assert "sk-never-shown" not in repr(cfg) + cfg.describe()
    handlers = mode_handlers(cfg, None)
    assert set(handlers) == {"llm_call", "tool_calls"}


def test_tools_gated_by_require_approval_without_llm(cli, gated: str) -> None:
    r = cli("--no-input", "run", gated, "--run-id", "g0")
    assert r.exit_code == 0  # a batch without a gated tool runs at once
    r = cli("--no-input", "run", gated, "--run-id", "g1", "--var", "launch=rocket", "--json")
    assert r.exit_code == 5
    details = json.loads(r.stdout)["waiting"]["details"]
    assert [c["name"] for c in details["tool_calls"]] == ["double", "launch"]
    shown = cli("runs", "show", "g1").stdout
    assert "tool_call\tc2 launch" in shown and details["calls_sha256"] in shown

    r = cli("tools", "approve", "g1", "--only", "c1", "--reason", "not now", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)["output"]
    assert out["c1"] == [True, 42, None]
    assert out["c2"][0] is False and "not now" in out["c2"][2]


def test_tools_deny_and_exit_codes(cli, gated: str) -> None:
    assert cli("--no-input", "run", gated, "--run-id", "g2", "--var", "launch=moon").exit_code == 5
    listed = json.loads(cli("tools", "list", "g2", "--json").stdout)
    r = cli("tools", "approve", "g2", "--calls-sha256", "0" * 64)
    assert r.exit_code == 2 and "calls_sha256 mismatch" in r.stderr
    r = cli("resume", "g2", "--current", "--payload", json.dumps({"mode": "executed", "results": []}))
    assert r.exit_code == 2 and "tools approve" in r.stderr
    forged = {"mode": "executed", "results": [], "calls_sha256": "f" * 64}
    r = cli("emit", json.loads(cli("tools", "list", "g2", "--json").stdout)["wait_key"], "--payload",
            json.dumps(forged))
    assert r.exit_code == 1 and "calls_sha256 mismatch" in r.stderr
    assert json.loads(cli("runs", "show", "g2", "--json").stdout)["run"]["status"] == "waiting"
    r = cli("tools", "deny", "g2", "--reason", "too risky", "--calls-sha256", listed["calls_sha256"], "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)["output"]
    assert all(v[0] is False and "too risky" in v[2] for v in out.values())
    r = cli("tools", "deny", "g2")
    assert r.exit_code == 1 and "not waiting on tool calls" in r.stderr
    assert cli("tools", "approve", "ghost").exit_code == 4
    assert cli("tools", "approve", "../bad").exit_code == 2


def test_require_approval_must_list_names(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(GATED.replace('require_approval = ["launch"]', 'require_approval = "launch"'), encoding="utf-8")
    r = cli("run", str(path))
    assert r.exit_code == 1 and "require_approval must be a list of tool names" in r.stderr
