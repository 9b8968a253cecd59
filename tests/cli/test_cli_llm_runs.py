"""LLM runs that survive a blip: recorded configuration, retries, a missing handler, `retry`.

A real OpenAI-compatible HTTP server (tests/integrations/openai_fixture.py) answers the
installed command's `--llm remote` calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import pytest

from cli_support import REPO, store_files

sys.path.insert(0, str(REPO / "tests" / "integrations"))

from openai_fixture import OpenAIFixture, Reply, chat_completion  # noqa: E402

ASK_THEN_LLM = '''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def ask(run, ctx):
    return StepPlan("ask", next_node="think", effect=Effect(
        EffectType.ASK_USER, {"prompt": "Go?", "choices": ["yes", "no"], "allow_free_text": False},
        result_key="go"))

def think(run, ctx):
    return StepPlan("think", next_node="done", effect=Effect(
        EffectType.LLM_CALL, {"prompt": "Say hello"}, result_key="reply"))

def done(run, ctx):
    return StepPlan("done", complete_output={"reply": run.vars["reply"]})

workflow = WorkflowSpec("ask_llm", entry_node="ask", nodes={"ask": ask, "think": think, "done": done})
'''

LLM_ONLY = ASK_THEN_LLM.replace('entry_node="ask"', 'entry_node="think"')
KEY = "sk-never-stored-1234"


@pytest.fixture
def server() -> Iterator[OpenAIFixture]:
    with OpenAIFixture() as fixture:
        yield fixture


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def llm_args(server: OpenAIFixture, model: str = "m1") -> list[str]:
    return ["--llm", "remote", "--model", model, "--server", server.base_url]


def metadata(sh, run_id: str) -> dict:
    doc = json.loads(sh("runs", "show", run_id, "--json").stdout)
    return doc.get("metadata") or {}


def test_the_run_records_its_llm_configuration_and_later_commands_reuse_it(sh, store: Path, tmp_path: Path,
                                                                           server: OpenAIFixture) -> None:
    wf = write(tmp_path, "ask_llm.py", ASK_THEN_LLM)
    env = {"ABSTRACTRUNTIME_API_KEY": KEY}
    r = sh("run", wf, "--run-id", "L1", "--no-input", *llm_args(server), env=env)
    assert r.exit_code == 5, r.stderr
    assert metadata(sh, "L1")["llm"] == {"mode": "remote", "model": "m1", "server": server.base_url,
                                         "provider": None, "base_url": None}
    server.script(chat_completion(content="hello"))
    # No --llm given again; the key goes to the server the operator configured for it, which
    # must be the one the run recorded (docs/security.md).
    env["ABSTRACTRUNTIME_SERVER"] = server.base_url
    r = sh("resume", r.stdout.strip(), "--answer", "yes", "--json", env=env)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["output"]["reply"]["content"] == "hello"
    assert [req.body["model"] for req in server.chat_requests()] == ["m1"]
    assert all(KEY.encode() not in data for data in store_files(store).values())


def test_an_override_is_used_and_recorded(sh, tmp_path: Path, server: OpenAIFixture) -> None:
    wf = write(tmp_path, "ask_llm.py", ASK_THEN_LLM)
    handle = sh("run", wf, "--run-id", "L2", "--no-input", *llm_args(server)).stdout.strip()
    server.script(chat_completion(content="hi"))
    r = sh("resume", handle, "--answer", "yes", "--model", "m2")
    assert r.exit_code == 0, r.stderr
    assert "recorded the new LLM configuration" in r.stderr
    assert [req.body["model"] for req in server.chat_requests()] == ["m2"]
    assert metadata(sh, "L2")["llm"]["model"] == "m2"
    kinds = [json.loads(line)["kind"] for line in sh("ledger", "show", "L2", "--jsonl").stdout.splitlines()]
    assert "metadata" in kinds


def test_without_llm_the_run_waits_for_a_handler_then_tick_performs_it(sh, tmp_path: Path,
                                                                     server: OpenAIFixture) -> None:
    wf = write(tmp_path, "llm_only.py", LLM_ONLY)
    r = sh("run", wf, "--run-id", "L3")
    assert r.exit_code == 5
    assert "needs --llm" in r.stderr
    doc = json.loads(sh("runs", "show", "L3", "--json").stdout)
    assert doc["run"]["status"] == "waiting"
    assert doc["run"]["waiting"]["details"] == {"needs_handler": "llm_call"}
    server.script(chat_completion(content="late but fine"))
    r = sh("tick", "L3", *llm_args(server), "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["output"]["reply"]["content"] == "late but fine"
    assert metadata(sh, "L3")["llm"]["model"] == "m1"


def test_a_blip_is_retried_like_the_library_factories_do(sh, tmp_path: Path, server: OpenAIFixture) -> None:
    wf = write(tmp_path, "llm_only.py", LLM_ONLY)
    server.script(Reply(status=503, body={"error": {"message": "busy"}}), chat_completion(content="third time"))
    r = sh("run", wf, "--run-id", "L4", *llm_args(server), "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["output"]["reply"]["content"] == "third time"
    assert len(server.chat_requests()) == 2


def test_retry_continues_a_run_that_failed_on_a_retryable_error(sh, store: Path, tmp_path: Path,
                                                               server: OpenAIFixture) -> None:
    wf = write(tmp_path, "llm_only.py", LLM_ONLY)
    busy = Reply(status=503, body={"error": {"message": "busy"}})
    server.script(busy, busy, busy)
    r = sh("run", wf, "--run-id", "L5", *llm_args(server))
    assert r.exit_code == 1
    assert json.loads(sh("runs", "show", "L5", "--json").stdout)["run"]["status"] == "failed"
    server.script(chat_completion(content="back"))
    r = sh("retry", "L5", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["output"]["reply"]["content"] == "back"
    records = [json.loads(line) for line in sh("ledger", "show", "L5", "--jsonl").stdout.splitlines()]
    kinds = [rec["kind"] for rec in records]
    assert "retry" in kinds and kinds.index("retry") > kinds.index("fail")  # the old failure is kept
    before = store_files(store)
    r = sh("retry", "L5")
    assert r.exit_code == 1 and "cannot be retried" in r.stderr
    assert store_files(store) == before


def test_a_retryable_failure_says_how_to_continue_and_others_do_not(sh, tmp_path: Path,
                                                                    server: OpenAIFixture) -> None:
    wf = write(tmp_path, "llm_only.py", LLM_ONLY)
    busy = Reply(status=503, body={"error": {"message": "busy"}})
    server.script(busy, busy, busy)
    r = sh("run", wf, "--run-id", "L6", *llm_args(server))
    assert r.exit_code == 1
    assert r.stdout.strip() == "L6"  # the hint is a message: stderr only
    assert "continue with: abstractruntime retry L6" in r.stderr
    # A client error is not retryable: no such hint (retry would refuse it).
    server.script(Reply(status=400, body={"error": {"message": "bad request"}}))
    r = sh("run", wf, "--run-id", "L7", *llm_args(server))
    assert r.exit_code == 1 and "failed" in r.stderr
    assert "abstractruntime retry" not in r.stderr
    broken = write(tmp_path, "broken.py", LLM_ONLY.replace('return StepPlan("think"', 'raise RuntimeError("boom")\n'
                                                                                    '    return StepPlan("think"'))
    r = sh("run", broken, "--run-id", "L8")
    assert r.exit_code == 1 and "boom" in r.stderr and "abstractruntime retry" not in r.stderr
