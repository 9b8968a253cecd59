"""Code-first workflows from the command line, each command its own process: run to a wait,
resume across processes, replay checks that write nothing, upgrades, blocked runs and workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent / "abstractruntime"

# The example of docs/workflows.md: every kind of call, an LLM served by the file's own handler.
EXAMPLE = textwrap.dedent('''
    import os
    from abstractruntime import EffectOutcome, workflow

    def run_build(service):
        with open(os.environ["BUILD_LOG"], "a") as log:   # a side effect: counted by the test
            log.write(service + "\\n")
        return {"image": service + ":1.0"}

    def summarise(run, effect):
        return EffectOutcome.completed({"content": "shipped " + effect.payload["prompt"], "model": "stand-in"})

    effect_handlers = {"llm_call": summarise}

    @workflow("deploy")
    def deploy(ctx, service: str):
        build = ctx.step(run_build, service)
        if ctx.ask(f"Deploy {service}?", choices=["yes", "no"]) != "yes":
            return {"deployed": False}
        ctx.sleep(600)
        paid = ctx.wait_event(f"payment:{service}")
        reply = ctx.llm(prompt="Summarise", model="stand-in")
        return {"deployed": True, "build": build, "paid": paid, "summary": reply["content"]}
''')


def ar(*args: str, store: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One ``abstractruntime`` process."""
    full = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", **(env or {})}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=120,
                          stdin=subprocess.DEVNULL)


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, index and locks included."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def example(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    code = tmp_path / "flows" / "deploy.py"
    code.parent.mkdir()
    code.write_text(EXAMPLE)
    return code, tmp_path / "store", {"BUILD_LOG": str(tmp_path / "builds.log")}


def test_the_example_runs_to_a_wait_and_resumes_across_processes(example: Any, tmp_path: Path) -> None:
    code, store, env = example
    started = ar("run", str(code), "--var", "service=web", "--run-id", "d1", store=store, env=env)
    assert started.returncode == 5, started.stderr
    assert started.stdout.strip() == "d1@w2"  # the wait handle of ctx.ask (position 2)
    assert "Deploy web?" in started.stderr
    answered = ar("resume", "d1@w2", "--answer", "yes", store=store, env=env)
    assert answered.returncode == 5 and answered.stdout.strip() == "d1@w3", answered.stderr  # now the timer
    again = ar("resume", "d1@w2", "--answer", "yes", store=store, env=env)
    assert again.returncode == 1 and "already answered" in again.stderr  # a retried answer is refused
    fired = ar("resume", "d1@w3", "--fire-timer", store=store, env=env)
    assert fired.returncode == 5 and fired.stdout.strip() == "d1@w4", fired.stderr
    paid = ar("emit", "payment:web", "--payload", '{"amount": 19.99}', store=store, env=env)
    assert paid.returncode == 0, paid.stderr
    shown = json.loads(ar("runs", "show", "d1", "--json", store=store).stdout)
    assert shown["run"]["status"] == "completed"
    assert shown["run"]["output"] == {"deployed": True, "build": {"image": "web:1.0"}, "paid": {"amount": 19.99},
                                      "summary": "shipped Summarise"}
    # Four processes ran the function from the top; the build step ran in the first only.
    assert (tmp_path / "builds.log").read_text() == "web\n"
    assert ar("verify", "d1", store=store).returncode == 0
    report = ar("report", "d1", "-o", str(tmp_path / "d1.html"), store=store)
    assert report.returncode == 0 and (tmp_path / "d1.html").exists(), report.stderr
    page = (tmp_path / "d1.html").read_text()
    assert "step run_build started" in page and "ctx.ask" not in page  # steps named on the timeline
    ledger = ar("ledger", "show", "d1", store=store).stdout
    assert "step run_build @1" in ledger


def test_a_plain_rejection_completes_in_the_second_process(example: Any) -> None:
    code, store, env = example
    assert ar("run", str(code), "--var", "service=api", "--run-id", "d2", store=store, env=env).returncode == 5
    done = ar("resume", "d2@w2", "--answer", "no", "--json", store=store, env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["output"] == {"deployed": False}


def test_bad_inputs_are_refused_before_a_run_exists(example: Any) -> None:
    code, store, env = example
    wrong = ar("run", str(code), "--var", "colour=red", "--run-id", "bad", store=store, env=env)
    assert wrong.returncode == 2 and "takes no input 'colour'" in wrong.stderr
    missing = ar("run", str(code), "--run-id", "bad", store=store, env=env)
    assert missing.returncode == 2 and "needs the input 'service'" in missing.stderr
    assert ar("runs", "show", "bad", store=store).returncode == 4


def _edit(code: Path, new: str) -> Path:
    """A new version of the workflow, next to the operator's copy (not registered)."""
    target = code.parent.parent / "new" / code.name
    target.parent.mkdir(exist_ok=True)
    target.write_text(new)
    return target


def test_replay_passes_a_comment_edit_and_catches_a_reordered_step_writing_nothing(example: Any) -> None:
    code, store, env = example
    assert ar("run", str(code), "--var", "service=web", "--run-id", "r1", store=store, env=env).returncode == 5
    assert ar("run", str(code), "--var", "service=api", "--run-id", "r2", store=store, env=env).returncode == 5
    assert ar("resume", "r2@w2", "--answer", "no", store=store, env=env).returncode == 0
    ar("runs", "list", store=store)  # the index exists, as in any store in use
    before = files_of(store)

    commented = _edit(code, "# reviewed: nothing changed\n" + EXAMPLE)
    ok = ar("replay", "--workflow", str(commented), "--all", store=store, env=env)
    assert ok.returncode == 0, ok.stderr
    assert sorted(line.split("\t")[:2] for line in ok.stdout.splitlines()) == [["compatible", "r1"],
                                                                              ["compatible", "r2"]]

    moved = EXAMPLE.replace("    build = ctx.step(run_build, service)\n", "").replace(
        "    ctx.sleep(600)\n", "    build = ctx.step(run_build, service)\n    ctx.sleep(600)\n")
    assert moved != EXAMPLE
    reordered = _edit(code, moved)
    bad = ar("replay", "--workflow", str(reordered), "r1", "r2", "--json", store=store, env=env)
    assert bad.returncode == 6, bad.stderr
    results = {doc["run_id"]: doc for doc in json.loads(bad.stdout)}
    assert results["r1"]["compatible"] is False and results["r1"]["position"] == 1
    assert results["r1"]["recorded"] == "step 'run_build'" and results["r1"]["code"] == "ctx.ask()"
    assert results["r2"]["message"] == "diverges at position 1: recorded step 'run_build', code ctx.ask()"
    plain = ar("replay", "--workflow", str(reordered), "--status", "waiting", store=store, env=env)
    assert plain.returncode == 6
    assert plain.stdout.strip() == ("diverges\tr1\tat position 1: recorded step 'run_build', code ctx.ask()")

    assert files_of(store) == before  # not a byte written, not a file added
    assert (Path(env["BUILD_LOG"])).read_text() == "web\napi\n"  # and no step was run by a check


def test_replay_of_a_completed_run_needs_the_code_to_end_where_it_ended(example: Any) -> None:
    code, store, env = example
    ar("run", str(code), "--var", "service=api", "--run-id", "done", store=store, env=env)
    assert ar("resume", "done@w2", "--answer", "no", store=store, env=env).returncode == 0
    rollback = EXAMPLE.replace('        return {"deployed": False}\n',
                               '        ctx.step(run_build, "rollback")\n        return {"deployed": False}\n')
    assert rollback != EXAMPLE
    longer = _edit(code, rollback)
    bad = ar("replay", "--workflow", str(longer), "done", store=store, env=env)
    assert bad.returncode == 6
    assert "at position 3: recorded the run's end (completed), code step 'run_build'" in bad.stdout


def test_replay_usage_and_not_found(example: Any) -> None:
    code, store, env = example
    assert ar("replay", "--workflow", str(code), store=store).returncode == 2
    assert ar("replay", "--workflow", str(code), "x", "--all", store=store).returncode == 2
    assert ar("replay", "--workflow", str(code), "--status", "sleepy", store=store).returncode == 2
    store.mkdir()
    none = ar("replay", "--workflow", str(code), "--all", store=store, env=env)
    assert none.returncode == 4 and "no runs of deploy to check" in none.stderr


def test_an_upgrade_is_refused_before_import_unless_allowed_then_recorded(example: Any, tmp_path: Path) -> None:
    code, store, env = example
    assert ar("run", str(code), "--var", "service=web", "--run-id", "u1", store=store, env=env).returncode == 5
    marker = tmp_path / "imported"
    code.write_text(f"open({str(marker)!r}, 'w').close()  # proves an import\n" + EXAMPLE)  # the deploy
    refused = ar("resume", "u1@w2", "--answer", "yes", store=store, env=env)
    assert refused.returncode == 1 and "changed since run u1 recorded it" in refused.stderr
    assert "--upgrade" in refused.stderr and not marker.exists()  # refused before any of it ran
    upgraded = ar("--upgrade", "resume", "u1@w2", "--answer", "yes", store=store, env=env)
    assert upgraded.returncode == 5 and upgraded.stdout.strip() == "u1@w3", upgraded.stderr
    records = json.loads(ar("ledger", "show", "u1", "--json", store=store).stdout)
    upgrade = [r for r in records if r["kind"] == "upgrade"]
    assert len(upgrade) == 1 and upgrade[0]["result"]["checked"] == "replay"
    assert upgrade[0]["result"]["to"] == __import__("hashlib").sha256(code.read_bytes()).hexdigest()
    # The run now records the new file: the next command needs no permission.
    assert ar("resume", "u1@w3", "--fire-timer", store=store, env=env).returncode == 5
    assert ar("verify", "u1", store=store).returncode == 0


def test_a_reordered_deploy_blocks_the_run_workers_skip_it_and_a_fix_unblocks_it(example: Any, tmp_path: Path) -> None:
    code, store, env = example
    original = EXAMPLE.replace("ctx.sleep(600)", "ctx.sleep(0.3)")
    code.write_text(original)
    (tmp_path / "pyproject.toml").write_text('[tool.abstractruntime]\nupgrades = ["deploy"]\n')
    assert ar("run", str(code), "--var", "service=web", "--run-id", "b1", store=store, env=env).returncode == 5
    assert ar("resume", "b1@w2", "--answer", "yes", store=store, env=env).returncode == 5  # waits on the timer
    code.write_text(original.replace("ctx.sleep(0.3)", "ctx.now()\n    ctx.sleep(0.3)"))  # a real change
    time.sleep(0.4)  # the timer is due: a worker would take the run
    head = files_of(store)[os.path.join("runs", "b1", "ledger.jsonl")]
    first = ar("worker", "--once", store=store, env=env, cwd=tmp_path)
    assert "diverges from its history at position 3: recorded ctx.sleep(), code ctx.now()" in first.stderr
    listed = ar("runs", "list", store=store, cwd=tmp_path)
    assert "b1\twaiting (blocked)\tdeploy" in listed.stdout
    blocked = json.loads(ar("runs", "list", "--blocked", "--json", store=store).stdout)
    assert [d["run_id"] for d in blocked] == ["b1"] and blocked[0]["blocked"]["position"] == 3
    second = ar("worker", "--once", store=store, env=env, cwd=tmp_path)
    # skipped: no retry loop (the run is not named; a random worker id may contain "b1")
    assert second.returncode == 0 and not re.search(r"\bb1\b", second.stderr), second.stderr
    assert files_of(store)[os.path.join("runs", "b1", "ledger.jsonl")] == head  # nothing written, twice
    code.write_text("# fixed: the new call is guarded\n" + original.replace(
        "ctx.sleep(0.3)", "ctx.sleep(0.3)\n    if ctx.patched('stamp'):\n        ctx.now()"))
    fixed = ar("worker", "--once", store=store, env=env, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    state = json.loads(ar("runs", "show", "b1", "--json", store=store).stdout)
    assert state["run"]["waiting"]["wait_key"] == "payment:web" and "blocked" not in state
    assert "(blocked)" not in ar("runs", "list", store=store).stdout
    assert ar("verify", "b1", store=store).returncode == 0


def test_samples_have_code_first_twins_that_run(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "sample_runs" / "workflows" / "approval_flow.py"
    store = tmp_path / "store"
    waiting = ar("run", str(sample), "--var", "service=billing", "--run-id", "a1", store=store,
                 env={"ABSTRACTRUNTIME_WORKFLOWS": str(sample)})
    assert waiting.returncode == 5 and waiting.stdout.strip() == "a1@w1"
    done = ar("resume", "a1@w1", "--answer", "yes", "--json", store=store,
              env={"ABSTRACTRUNTIME_WORKFLOWS": str(sample)})
    assert json.loads(done.stdout)["output"] == {"deployed": True, "service": "billing"}


FAMILY = textwrap.dedent('''
    from abstractruntime import workflow

    @workflow("billing")
    def billing(ctx, amount: int):
        return {"charged": ctx.ask(f"Charge {amount}?", choices=["yes", "no"]) == "yes", "amount": amount}

    @workflow("order")
    async def order(ctx, item: str):
        bill = await ctx.child(billing, amount=len(item))
        return {"item": item, "bill": bill}
''')


def test_a_child_that_waits_is_answered_then_handed_to_its_parent_across_processes(tmp_path: Path) -> None:
    code = tmp_path / "family.py"
    code.write_text(FAMILY)
    store = tmp_path / "store"
    several = ar("run", str(code), "--var", "item=book", store=store)
    assert several.returncode == 1 and "several workflows (billing, order)" in several.stderr
    parent = ar("run", str(code), "--attr", "order", "--var", "item=book", "--run-id", "p1", "--json", store=store)
    assert parent.returncode == 5, parent.stderr
    waiting = json.loads(parent.stdout)["waiting"]
    assert waiting["reason"] == "subworkflow" and waiting["wait_id"] == "w1"
    child = waiting["details"]["sub_run_id"]
    answered = ar("resume", f"{child}@w1", "--answer", "yes", "--json", store=store)
    assert json.loads(answered.stdout)["output"] == {"charged": True, "amount": 4}
    payload = json.dumps({"sub_run_id": child, "output": {"charged": True, "amount": 4}})
    done = ar("resume", "p1@w1", "--payload", payload, "--json", store=store)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == {"item": "book", "bill": {"charged": True, "amount": 4}}
    assert ar("verify", "--all", store=store).returncode == 0


def test_a_worker_hands_a_finished_child_to_its_waiting_parent(tmp_path: Path) -> None:
    # The child waits, is answered in another process and completes; its parent, waiting on it,
    # continues at the next worker pass with the child's output — nobody resumes it by hand.
    code = tmp_path / "family.py"
    code.write_text(FAMILY)
    store, env = tmp_path / "store", {"ABSTRACTRUNTIME_WORKFLOWS": str(code)}
    parent = ar("run", str(code), "--attr", "order", "--var", "item=book", "--run-id", "p1", "--json", store=store)
    child = json.loads(parent.stdout)["waiting"]["details"]["sub_run_id"]
    idle = ar("worker", "--once", store=store, env=env)
    assert idle.returncode == 0, idle.stderr
    assert json.loads(ar("runs", "show", "p1", "--json", store=store).stdout)["run"]["status"] == "waiting"
    assert ar("resume", f"{child}@w1", "--answer", "yes", store=store).returncode == 0
    worked = ar("worker", "--once", store=store, env=env)
    assert worked.returncode == 0, worked.stderr
    run = json.loads(ar("runs", "show", "p1", "--json", store=store).stdout)["run"]
    assert run["status"] == "completed" and run["output"] == {"item": "book", "bill": {"charged": True, "amount": 4}}
    again = ar("worker", "--once", store=store, env=env)  # nothing left to hand over: nothing written
    assert again.returncode == 0 and ar("verify", "--all", store=store).returncode == 0
    resumes = [r for r in json.loads(ar("ledger", "show", "p1", "--json", store=store).stdout) if r["kind"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["result"]["wait_id"] == "w1"
