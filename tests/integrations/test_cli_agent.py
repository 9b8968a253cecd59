"""The `abstractruntime` command driving the agent sample against a real loopback LLM server.

Every command runs as a subprocess of the installed script; the LLM is the scripted
OpenAI-compatible fixture on 127.0.0.1 (remote and hybrid mode), or the same server through
the real AbstractCore package (local mode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from integration_support import requires_abstractcore
from openai_fixture import OpenAIFixture, chat_completion

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "sample_runs" / "workflows" / "agent.py"
BIN = Path(sys.executable).parent / "abstractruntime"
SECRET = "sk-test-secret-4f1d9c"
QUESTION = "Weather in Paris? Email it to ana@example.com"

WEATHER = {"id": "call_w", "name": "get_weather", "arguments": {"city": "Paris"}}
EMAIL = {"id": "call_e", "name": "send_email",
         "arguments": {"to": "ana@example.com", "subject": "Paris", "body": "Sunny."}}


@dataclass
class Result:
    """Exit code and both streams of one command."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def ar(tmp_path: Path):
    """Run the installed command with a private store and home (no real credentials)."""
    store = tmp_path / "store"

    def run(*args: str, env: Optional[dict[str, str]] = None) -> Result:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
        full = {**base, "ABSTRACTRUNTIME_STORE": str(store), "ABSTRACTRUNTIME_NO_INPUT": "1",
                "ABSTRACTRUNTIME_WORKFLOWS": str(AGENT.parent),  # the operator registers the samples
                "HOME": str(tmp_path), "NO_COLOR": "1", **(env or {})}
        proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, env=full, cwd=tmp_path,
                              timeout=60)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    run.store = store  # type: ignore[attr-defined]
    return run


def hybrid(server: OpenAIFixture) -> list[str]:
    return ["--llm", "hybrid", "--server", server.base_url, "--model", "fixture-model"]


def remote(server: OpenAIFixture) -> list[str]:
    return ["--llm", "remote", "--server", server.base_url, "--model", "fixture-model"]


def tool_messages(server: OpenAIFixture, index: int) -> dict[str, str]:
    """``{tool_call_id: content}`` of the tool turns in the index-th chat request."""
    body = server.chat_requests()[index].body
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m.get("role") == "tool"}


def store_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("index.sqlite3") and p.name != ".lock"}


def test_hybrid_agent_waits_for_email_approval_then_completes(ar, openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(tool_calls=[WEATHER]), chat_completion(tool_calls=[EMAIL]),
                         chat_completion(content="Done: emailed the forecast."))
    env = {"ABSTRACTRUNTIME_API_KEY": SECRET}
    r = ar("run", str(AGENT), *hybrid(openai_server), "--run-id", "a1", "--var", f"question={QUESTION}", env=env)
    assert r.code == 5, r.err
    assert r.out.strip().split("@")[0] == "a1"  # the wait handle RUN@wN
    # get_weather ran here without asking: its result went back to the model.
    weather = json.loads(tool_messages(openai_server, 1)["call_w"])
    assert weather["city"] == "Paris" and "forecast" in weather
    # The credential went to the server as a bearer token, never into the store.
    assert openai_server.chat_requests()[0].headers["authorization"] == f"Bearer {SECRET}"

    shown = ar("runs", "show", "a1")
    assert shown.code == 0
    fields = [line.split("\t", 1) for line in shown.out.splitlines()]
    calls = [v for k, v in fields if k == "tool_call"]
    assert len(calls) == 1 and calls[0].startswith("call_e send_email ")
    assert '"to": "ana@example.com"' in calls[0]
    digest = dict(f for f in fields if len(f) == 2)["calls_sha256"]
    listed = ar("tools", "list", "a1", "--json").json()
    assert listed["calls_sha256"] == digest and [c["name"] for c in listed["tool_calls"]] == ["send_email"]

    done = ar("tools", "approve", "a1", "--json", *hybrid(openai_server), env=env)
    assert done.code == 0, done.err
    state = done.json()
    assert state["status"] == "completed" and state["output"]["answer"] == "Done: emailed the forecast."
    receipt = json.loads(tool_messages(openai_server, 2)["call_e"])
    assert receipt["sent"] is True and receipt["to"] == "ana@example.com"

    assert ar("verify", "a1").code == 0
    ledger = ar("ledger", "show", "a1", "--json").json()
    # The decision, bound to the calls' hash, is recorded before the call ran; the results after it.
    (decision,) = [rec for rec in ledger if rec["kind"] == "decision"]
    assert decision["result"]["calls_sha256"] == digest and decision["result"]["decision"] == "approved"
    assert decision["result"]["approved"] == ["call_e"] and decision["result"]["by"]
    after = ledger[ledger.index(decision) + 1:]
    assert [r["kind"] for r in after[:2]] == ["part", "effect"] and after[1]["status"] == "completed"
    assert after[1]["result"]["approval"]["calls_sha256"] == digest
    assert all(SECRET.encode() not in data for data in store_bytes(ar.store).values())


def test_deny_with_reason_resumes_with_a_refusal(ar, openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(tool_calls=[WEATHER, EMAIL]), chat_completion(content="Not sent."))
    r = ar("run", str(AGENT), *hybrid(openai_server), "--run-id", "d1")
    assert r.code == 5, r.err  # one batch names send_email: the whole batch waits, nothing ran
    assert len(openai_server.chat_requests()) == 1
    r = ar("tools", "deny", "d1", "--reason", "no emails today", *hybrid(openai_server))
    assert r.code == 0, r.err
    turns = tool_messages(openai_server, 1)
    assert set(turns) == {"call_w", "call_e"}
    assert all(t.startswith("Error: ") and "no emails today" in t for t in turns.values())
    assert ar("verify", "d1").code == 0


def test_remote_mode_passes_every_call_through_and_only_approves_a_subset(ar, openai_server: OpenAIFixture) -> None:
    rome = {"id": "call_r", "name": "get_weather", "arguments": {"city": "Rome"}}
    openai_server.script(chat_completion(tool_calls=[WEATHER, rome]), chat_completion(content="Paris only."))
    r = ar("run", str(AGENT), *remote(openai_server), "--run-id", "r1", "--json")
    assert r.code == 5
    waiting = r.json()["waiting"]
    assert [c["call_id"] for c in waiting["details"]["tool_calls"]] == ["call_w", "call_r"]
    bad = ar("tools", "approve", "r1", "--only", "call_x", *remote(openai_server))
    assert bad.code == 2 and "call_x" in bad.err
    r = ar("tools", "approve", "r1", "--only", "call_w", "--reason", "one city is enough", *remote(openai_server))
    assert r.code == 0, r.err
    turns = tool_messages(openai_server, 1)
    assert json.loads(turns["call_w"])["city"] == "Paris"
    assert turns["call_r"].startswith("Error: ") and "one city is enough" in turns["call_r"]


def test_environment_variables_configure_the_llm(ar, openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="Hello."))
    env = {"ABSTRACTRUNTIME_LLM": "remote", "ABSTRACTRUNTIME_SERVER": openai_server.base_url,
           "ABSTRACTRUNTIME_MODEL": "env-model", "ABSTRACTRUNTIME_PROVIDER": "openai"}
    r = ar("run", str(AGENT), "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["output"]["answer"] == "Hello."
    assert openai_server.chat_requests()[0].body["model"] == "openai/env-model"


def test_approval_cannot_be_replayed_onto_other_calls(ar, openai_server: OpenAIFixture) -> None:
    other = {"id": "call_e2", "name": "send_email",
             "arguments": {"to": "eve@example.com", "subject": "Paris", "body": "Sunny."}}
    openai_server.script(chat_completion(tool_calls=[EMAIL]), chat_completion(tool_calls=[other]))
    assert ar("run", str(AGENT), *hybrid(openai_server), "--run-id", "p1").code == 5
    first = ar("tools", "list", "p1", "--json").json()
    assert ar("tools", "approve", "p1", "--calls-sha256", first["calls_sha256"], *hybrid(openai_server)).code == 5
    second = ar("tools", "list", "p1", "--json").json()
    assert second["calls_sha256"] != first["calls_sha256"]
    before = store_bytes(ar.store)

    # The hash reviewed for the first calls does not approve the second ones.
    r = ar("tools", "approve", "p1", "--calls-sha256", first["calls_sha256"], *hybrid(openai_server))
    assert r.code == 2 and "calls_sha256 mismatch" in r.err
    # Nor does the first approval's recorded payload, replayed through `resume`.
    (approval,) = [rec for rec in ar("ledger", "show", "p1", "--json").json()
                   if rec["kind"] == "effect" and rec["status"] == "completed" and "approval" in (rec["result"] or {})]
    assert approval["result"]["calls_sha256"] == first["calls_sha256"]
    replay = json.dumps(approval["result"])
    r = ar("resume", "p1", "--current", "--payload", replay, *hybrid(openai_server))
    assert r.code == 2 and "calls_sha256" in r.err
    # A hand-made payload without the hash is refused too.
    r = ar("resume", "p1", "--current", "--payload", '{"mode": "executed", "results": []}', *hybrid(openai_server))
    assert r.code == 2 and "tools approve" in r.err
    assert store_bytes(ar.store) == before  # nothing ran, nothing was recorded
    assert len(openai_server.chat_requests()) == 2


def test_edited_pending_calls_are_not_believed(ar, openai_server: OpenAIFixture) -> None:
    """The checkpoint is a cache: calls edited in run.json are never what gets approved or run."""
    openai_server.script(chat_completion(tool_calls=[EMAIL]), chat_completion(content="Done."))
    assert ar("run", str(AGENT), *hybrid(openai_server), "--run-id", "e1").code == 5
    run_file = ar.store / "runs" / "e1" / "run.json"
    text = run_file.read_text(encoding="utf-8")
    assert text.count("ana@example.com") >= 1
    run_file.write_text(text.replace("ana@example.com", "eve@example.com"), encoding="utf-8")
    assert ar("verify", "e1").code == 3  # checkpoint_state_mismatch: the edit is visible
    listed = ar("tools", "list", "e1", "--json").json()
    assert "eve@example.com" not in json.dumps(listed)
    r = ar("tools", "approve", "e1", "--calls-sha256", listed["calls_sha256"], *hybrid(openai_server))
    assert r.code == 0, r.err
    receipt = json.loads(tool_messages(openai_server, 1)["call_e"])
    assert receipt["to"] == "ana@example.com"  # the ledger's call, not the edited one
    assert "eve@example.com" not in "".join(json.dumps(q.body) for q in openai_server.chat_requests())
    assert ar("verify", "e1").code == 0  # the checkpoint was rebuilt from the ledger


def test_pending_calls_with_a_rewritten_hash_are_not_believed(ar, openai_server: OpenAIFixture) -> None:
    """An edit that also rewrites calls_sha256 in the checkpoint still does not prove against the ledger."""
    from abstractruntime.integrations.abstractcore._support import canonical_sha256

    openai_server.script(chat_completion(tool_calls=[EMAIL]), chat_completion(content="Done."))
    assert ar("run", str(AGENT), *hybrid(openai_server), "--run-id", "e2").code == 5
    run_file = ar.store / "runs" / "e2" / "run.json"
    doc = json.loads(run_file.read_text(encoding="utf-8"))
    details = doc["state"]["run"]["waiting"]["details"]
    details["tool_calls"][0]["arguments"]["to"] = "eve@example.com"
    details["calls_sha256"] = canonical_sha256(details["tool_calls"])
    run_file.write_text(json.dumps(doc), encoding="utf-8")
    r = ar("tools", "approve", "e2", "--calls-sha256", details["calls_sha256"], *hybrid(openai_server))
    assert r.code == 2 and "calls_sha256 mismatch" in r.err  # the ledger's calls have another hash
    assert len(openai_server.chat_requests()) == 1  # the run never went on
    r = ar("tools", "approve", "e2", *hybrid(openai_server))
    assert r.code == 0, r.err
    assert json.loads(tool_messages(openai_server, 1)["call_e"])["to"] == "ana@example.com"


def test_not_waiting_on_tools_and_unknown_runs(ar, openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="Hi."))
    assert ar("run", str(AGENT), *hybrid(openai_server), "--run-id", "c1").code == 0
    r = ar("tools", "approve", "c1", *hybrid(openai_server))
    assert r.code == 1 and "not waiting on tool calls" in r.err
    r = ar("tools", "deny", "c1", "--reason", "x")
    assert r.code == 1 and "not waiting on tool calls" in r.err
    assert ar("tools", "approve", "nope").code == 4
    assert ar("tools", "list", "nope", "--json").code == 4


@requires_abstractcore
@pytest.mark.abstractcore
def test_local_mode_through_abstractcore(ar, openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(tool_calls=[WEATHER]), chat_completion(tool_calls=[EMAIL]),
                         chat_completion(content="Emailed."))
    local = ["--llm", "local", "--provider", "openai-compatible", "--base-url", openai_server.v1_url,
             "--model", "fixture-model"]
    r = ar("run", str(AGENT), *local, "--run-id", "l1", "--var", f"question={QUESTION}")
    assert r.code == 5, r.err
    assert "send_email" in ar("runs", "show", "l1").out
    r = ar("tools", "approve", "l1", "--json", *local)
    assert r.code == 0, r.err
    assert r.json()["output"]["answer"] == "Emailed."
    assert json.loads(tool_messages(openai_server, 2)["call_e"])["sent"] is True
    assert ar("verify", "l1").code == 0


AGENT_FLOW = REPO / "sample_runs" / "workflows" / "agent_flow.py"


@pytest.mark.parametrize("sample", [AGENT, AGENT_FLOW], ids=["graph", "code-first"])
def test_both_styles_of_the_agent_send_the_same_requests_and_wait_alike(ar, openai_server: OpenAIFixture,
                                                                         sample: Path) -> None:
    """ctx.llm and ctx.tools are the kernel's llm_call and tool_calls effects: the --llm modes, the
    approval gate and the wait handles serve a function as they serve a graph."""
    openai_server.script(chat_completion(tool_calls=[WEATHER]), chat_completion(tool_calls=[EMAIL]),
                         chat_completion(content="Done: emailed the forecast."))
    env = {"ABSTRACTRUNTIME_API_KEY": SECRET}
    r = ar("run", str(sample), *hybrid(openai_server), "--run-id", "h1", "--var", f"question={QUESTION}", env=env)
    assert r.code == 5, r.err  # get_weather ran here; send_email waits for an operator
    listed = ar("tools", "list", "h1", "--json").json()
    assert [c["name"] for c in listed["tool_calls"]] == ["send_email"]
    done = ar("tools", "approve", "h1", "--json", *hybrid(openai_server), env=env)  # another process
    assert done.code == 0, done.err
    assert done.json()["output"] == {"answer": "Done: emailed the forecast.", "turns": 3}
    bodies = [req.body for req in openai_server.chat_requests()]
    assert len(bodies) == 3 and bodies[0]["messages"][-1] == {"role": "user", "content": QUESTION}
    assert json.loads(tool_messages(openai_server, 1)["call_w"])["city"] == "Paris"
    assert json.loads(tool_messages(openai_server, 2)["call_e"])["sent"] is True
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == ["get_weather", "send_email"]
    assert ar("verify", "h1").code == 0
    assert all(SECRET.encode() not in data for data in store_bytes(ar.store).values())

    # Remote: every call goes through the operator, and a subset is approved.
    rome = {"id": "call_r", "name": "get_weather", "arguments": {"city": "Rome"}}
    openai_server.script(chat_completion(tool_calls=[WEATHER, rome]), chat_completion(content="Paris only."))
    r = ar("run", str(sample), *remote(openai_server), "--run-id", "r1", "--json")
    assert r.code == 5 and [c["call_id"] for c in r.json()["waiting"]["details"]["tool_calls"]] == ["call_w", "call_r"]
    r = ar("tools", "approve", "r1", "--only", "call_w", "--reason", "one city is enough", *remote(openai_server))
    assert r.code == 0, r.err
    turns = tool_messages(openai_server, 4)
    assert json.loads(turns["call_w"])["city"] == "Paris" and "one city is enough" in turns["call_r"]
