"""Wait handles: an answer names the wait it answers, so a retried step cannot answer the next one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pexpect

from cli_support import BIN, store_files

TWO_QUESTIONS = '''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def first(run, ctx):
    return StepPlan("first", next_node="second", effect=Effect(
        EffectType.ASK_USER, {"prompt": "Deploy?", "choices": ["yes", "no"], "allow_free_text": False}, result_key="deploy"))

def second(run, ctx):
    return StepPlan("second", next_node="done", effect=Effect(
        EffectType.ASK_USER, {"prompt": "Also DROP the old database?", "choices": ["yes", "no"],
                              "allow_free_text": False}, result_key="drop"))

def done(run, ctx):
    return StepPlan("done", complete_output={"deploy": run.vars["deploy"]["answer"],
                                             "drop": run.vars["drop"]["answer"]})

workflow = WorkflowSpec("two", entry_node="first", nodes={"first": first, "second": second, "done": done})
'''


def two_questions(tmp_path: Path) -> Path:
    path = tmp_path / "two.py"
    path.write_text(TWO_QUESTIONS, encoding="utf-8")
    return path


def test_the_handle_run_prints_answers_that_wait(sh, tmp_path: Path) -> None:
    r = sh("run", str(two_questions(tmp_path)), "--run-id", "h1", "--no-input")
    assert r.exit_code == 5
    first = r.stdout.strip()
    assert first.startswith("h1@w") and "\n" not in first
    r = sh("resume", first, "--answer", "yes")
    assert r.exit_code == 5
    second = r.stdout.strip()
    assert second.startswith("h1@w") and second != first
    doc = json.loads(sh("runs", "show", "h1", "--json").stdout)
    assert doc["wait_handle"] == second and second.endswith("@" + doc["wait_id"])
    assert doc["run"]["waiting"]["prompt"] == "Also DROP the old database?"


def test_a_retried_answer_is_refused_and_writes_nothing(sh, store: Path, tmp_path: Path) -> None:
    first = sh("run", str(two_questions(tmp_path)), "--run-id", "h2", "--no-input").stdout.strip()
    assert sh("resume", first, "--answer", "yes").exit_code == 5
    before = store_files(store)
    r = sh("resume", first, "--answer", "yes")  # the CI step, retried
    assert r.exit_code == 1
    assert "already answered" in r.stderr and r.stdout == ""
    assert store_files(store) == before
    r = sh("resume", first, "--answer", "yes", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["code"] == "already_answered"
    doc = json.loads(sh("runs", "show", "h2", "--json").stdout)
    assert doc["run"]["status"] == "waiting" and "drop" not in doc["run"]["vars"]


def test_a_bare_run_id_is_refused_in_a_script_naming_the_handle(sh, store: Path, tmp_path: Path) -> None:
    handle = sh("run", str(two_questions(tmp_path)), "--run-id", "h3", "--no-input").stdout.strip()
    before = store_files(store)
    r = sh("resume", "h3", "--answer", "yes")
    assert r.exit_code == 2
    assert handle in r.stderr and "--current" in r.stderr
    assert store_files(store) == before
    r = sh("resume", "h3", "--current", "--answer", "yes")
    assert r.exit_code == 5


def test_a_bare_run_id_is_answered_on_a_terminal(store: Path, tmp_path: Path, sh) -> None:
    workflow = two_questions(tmp_path)
    sh("run", str(workflow), "--run-id", "h4", "--no-input")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", "TERM": "dumb"}
    child = pexpect.spawn(str(BIN), ["resume", "h4", "--answer", "no"], env=env, encoding="utf-8", timeout=30)
    child.expect_exact("Also DROP the old database?")  # the next question is asked here, on the terminal
    child.expect_exact("> ")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert json.loads(sh("runs", "show", "h4", "--json").stdout)["run"]["output"] == {"deploy": "no", "drop": "no"}


def test_json_carries_the_handle(sh, tmp_path: Path) -> None:
    r = sh("run", str(two_questions(tmp_path)), "--run-id", "h5", "--json")
    assert r.exit_code == 5
    doc = json.loads(r.stdout)
    assert doc["wait_handle"] == f"h5@{doc['wait_id']}" and doc["waiting"]["wait_id"] == doc["wait_id"]
    r = sh("resume", doc["wait_handle"], "--answer", "yes", "--json")
    again = json.loads(r.stdout)
    assert r.exit_code == 5 and again["wait_handle"] != doc["wait_handle"]


GATED = '''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def launch(target: str) -> str:
    """Launch something (needs approval)."""
    return "launched " + target

tools = [launch]
require_approval = ["launch"]

def go(run, ctx):
    n = run.vars.get("n", 0) + 1
    run.vars["n"] = n
    calls = [{"name": "launch", "arguments": {"target": f"t{n}"}, "call_id": f"c{n}"}]
    return StepPlan("go", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, result_key="res"),
                    next_node="go" if n < 2 else "done")

def done(run, ctx):
    return StepPlan("done", complete_output={"n": run.vars["n"]})

workflow = WorkflowSpec("gated2", entry_node="go", nodes={"go": go, "done": done})
'''


def test_tools_approve_takes_the_handle_and_refuses_it_once_answered(sh, store: Path, tmp_path: Path) -> None:
    path = tmp_path / "gated2.py"
    path.write_text(GATED, encoding="utf-8")
    first = sh("run", str(path), "--run-id", "t1").stdout.strip()
    assert first.startswith("t1@w")
    assert sh("tools", "list", first).exit_code == 0
    r = sh("tools", "approve", first)
    assert r.exit_code == 5, r.stderr  # the loop's second batch now waits
    second = r.stdout.strip()
    assert second != first
    before = store_files(store)
    r = sh("tools", "approve", first)  # retried: must not approve the second batch
    assert r.exit_code == 1 and "already answered" in r.stderr
    assert store_files(store) == before
    assert sh("tools", "approve", second).exit_code == 0
