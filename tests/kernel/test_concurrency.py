"""Real processes contending for one store: the run lock, duplicate resumes, a shared index."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.models import RunStatus
from abstractruntime.core.runtime import Runtime
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.ledger_chain import verify_ledger_chain

WORKER = r'''
import json, os, sys, time
from pathlib import Path
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome, Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore

root, work, mode, run_id, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def slow(run, effect):
    with open(work / "calls.txt", "a") as handle:
        handle.write(name + "\n")
    time.sleep(float(effect.payload["seconds"]))
    return EffectOutcome.completed({"by": name})

workflow = WorkflowSpec("contended", "ask", {
    "ask": lambda run, ctx: StepPlan(node_id="ask", effect=Effect(type=EffectType.ASK_USER,
                                     payload={"prompt": "go?", "wait_key": "go"}, result_key="answer"),
                                     next_node="work"),
    "work": lambda run, ctx: StepPlan(node_id="work", effect=Effect(type=EffectType.LLM_CALL,
                                      payload={"seconds": 1.0}, result_key="result"), next_node="done"),
    "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"result": run.vars["result"]}),
})
quick = WorkflowSpec("quick", "a", {
    "a": lambda run, ctx: StepPlan(node_id="a", next_node="b"),
    "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"n": run.vars["n"]}),
})
runtime = Runtime(run_store=JsonFileRunStore(root, durability="none"),
                  ledger_store=JsonlLedgerStore(root, durability="none"),
                  effect_handlers={EffectType.LLM_CALL: slow})

(work / f"ready-{name}").touch()
deadline = time.monotonic() + 30
while not (work / "go").exists():
    if time.monotonic() > deadline:
        sys.exit("never told to go")
    time.sleep(0.002)

try:
    if mode == "tick":
        state = runtime.tick(workflow=workflow, run_id=run_id)
    elif mode.startswith("resume"):
        wait = float(mode.split(":")[1])
        state = runtime.resume(workflow=workflow, run_id=run_id, wait_key="go", payload={"by": name},
                               lock_wait=wait)
    elif mode == "many":
        for i in range(int(run_id)):
            rid = runtime.start(workflow=quick, vars={"n": i}, run_id=f"{name}-{i}")
            state = runtime.tick(workflow=quick, run_id=rid)
    print(json.dumps({"ok": state.status.value}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
'''


def _race(tmp_path: Path, root: Path, mode: str, arg: str, names: list[str]) -> list[dict[str, Any]]:
    """Start one worker per name, release them together, return their JSON results."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    script = work / "worker.py"
    script.write_text(WORKER)
    procs = {name: subprocess.Popen([sys.executable, str(script), str(root), str(work), mode, arg, name],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in names}
    deadline = time.monotonic() + 60
    while not all((work / f"ready-{n}").exists() for n in names):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs.values()), [p.communicate() for p in procs.values()]
        time.sleep(0.01)
    (work / "go").touch()
    results = []
    for _name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "work" / "calls.txt"
    return path.read_text().split() if path.exists() else []


def _waiting_run(root: Path) -> tuple[Runtime, str]:
    """A run of the worker's workflow, waiting on 'go' (built here with the same node ids)."""
    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    ask = WorkflowSpec("contended", "ask", {
        "ask": lambda run, ctx: StepPlan(node_id="ask", effect=Effect(
            type=EffectType.ASK_USER, payload={"prompt": "go?", "wait_key": "go"}, result_key="answer"),
            next_node="work")})
    rt = Runtime(run_store=JsonFileRunStore(root, durability="none"),
                 ledger_store=JsonlLedgerStore(root, durability="none"))
    run_id = rt.start(workflow=ask)
    assert rt.tick(workflow=ask, run_id=run_id).status is RunStatus.WAITING
    return rt, run_id


def test_two_processes_ticking_one_run(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rt, run_id = _waiting_run(root)
    # Move the run past its question so a tick has slow work to do.
    run = rt.run_store.load(run_id)
    run.status, run.waiting, run.current_node = RunStatus.RUNNING, None, "work"
    run.vars["answer"] = {"by": "test"}
    rt.run_store.save(run)

    results = _race(tmp_path, root, "tick", run_id, ["p1", "p2"])
    winners = [r for r in results if r.get("ok")]
    losers = [r for r in results if r.get("error")]
    assert winners == [{"ok": "completed"}] and len(losers) == 1, results
    assert losers[0]["error"] == "RunLockedError" and run_id in losers[0]["message"]
    assert len(_calls(tmp_path)) == 1
    ledger = rt.get_ledger(run_id)
    assert verify_ledger_chain(ledger)["ok"] is True
    assert rt.get_state(run_id).status is RunStatus.COMPLETED
    assert rt.get_checkpoint(run_id).ledger.seq == len(ledger)


@pytest.mark.parametrize("lock_wait", ["0", "20"], ids=["fail-fast", "wait-for-lock"])
def test_two_processes_resuming_one_wait(tmp_path: Path, lock_wait: str) -> None:
    root = tmp_path / "store"
    rt, run_id = _waiting_run(root)
    results = _race(tmp_path, root, f"resume:{lock_wait}", run_id, ["p1", "p2"])

    winners = [r for r in results if r.get("ok")]
    losers = [r for r in results if r.get("error")]
    assert len(winners) == 1 and len(losers) == 1, results
    assert winners[0]["ok"] == "completed"
    if lock_wait == "0":
        assert losers[0]["error"] in {"RunLockedError", "RunNotWaitingError"}
    else:
        # It waited for the winner, then saw the wait was already answered.
        assert losers[0]["error"] == "RunNotWaitingError" and "not waiting" in losers[0]["message"]
    ledger = rt.get_ledger(run_id)
    resumes = [r for r in ledger if r["kind"] == "resume"]
    assert len(resumes) == 1
    state = rt.get_state(run_id)
    assert state.vars["answer"] == resumes[0]["result"]["payload"]
    assert state.output == {"result": {"by": resumes[0]["result"]["payload"]["by"]}}
    assert len(_calls(tmp_path)) == 1
    assert verify_ledger_chain(ledger)["ok"] is True


def test_processes_sharing_a_store_and_its_index(tmp_path: Path) -> None:
    root = tmp_path / "store"
    JsonFileRunStore(root, durability="none").list_runs()  # the index exists before they start
    names = ["a", "b", "c"]
    results = _race(tmp_path, root, "many", "15", names)
    assert results == [{"ok": "completed"}] * 3
    store = JsonFileRunStore(root, durability="none")
    done = store.list_runs(status=RunStatus.COMPLETED, limit=1000)
    assert sorted(r.run_id for r in done) == sorted(f"{n}-{i}" for n in names for i in range(15))
    ledger = JsonlLedgerStore(root, durability="none")
    for run in done:
        assert verify_ledger_chain(ledger.list(run.run_id))["ok"] is True
    store.close()
