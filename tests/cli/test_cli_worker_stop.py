"""Stopping `worker --concurrency N` whose handlers are synchronous: the handlers in hand finish and
their results are recorded (exit 0); one that outlasts --grace ends with the worker (exit 143),
which releases nothing a handler thread may still write for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

CLI = str(Path(sys.executable).parent / "abstractruntime")

FLOW = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, current_effect

    def work(run, effect):
        log = Path(os.environ["WORK_LOG"])
        key = current_effect().key
        with log.open("a") as out:
            out.write(f"B {key} {os.getpid()} {time.monotonic()}\\n")
        time.sleep(float(os.environ.get("WORK_SECONDS", "0.5")))
        current_effect().record_part("half", True)
        time.sleep(float(os.environ.get("WORK_SECONDS", "0.5")))
        with log.open("a") as out:
            out.write(f"E {key} {os.getpid()} {time.monotonic()}\\n")
        return EffectOutcome.completed({"done": True})

    effect_handlers = {EffectType.TOOL_CALLS: work}

    workflow = WorkflowSpec("sync-work", "work", {
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })
''')


def _store(tmp_path: Path, runs: int) -> tuple[str, dict[str, str]]:
    (tmp_path / "flow.py").write_text(FLOW)
    store = str(tmp_path / "store")
    env = {**os.environ, "WORK_LOG": str(tmp_path / "work.log")}
    for i in range(runs):
        started = subprocess.run([CLI, "--store", store, "start", str(tmp_path / "flow.py"), "--run-id", f"s{i}"],
                                 capture_output=True, text=True, env=env, timeout=120)
        assert started.returncode == 0, started.stderr
    return store, env


def _log(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "work.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for_begins(tmp_path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for f in _log(tmp_path) if f[0] == "B") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"the handlers did not begin: {_log(tmp_path)}")


def _ledger(store: str, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(store) / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines()]


def _verified(store: str, run_id: str) -> bool:
    return subprocess.run([CLI, "--store", store, "verify", run_id], capture_output=True, timeout=60).returncode == 0


def test_sigterm_lets_synchronous_handlers_finish_and_records_their_results(tmp_path: Path) -> None:
    store, env = _store(tmp_path, 3)
    worker = subprocess.Popen([CLI, "--store", store, "worker", "--concurrency", "3", "--interval", "0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_begins(tmp_path, 3)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    log = _log(tmp_path)
    assert sorted(f[0] for f in log) == ["B"] * 3 + ["E"] * 3  # each ran once, to its end
    for i in range(3):
        records = _ledger(store, f"s{i}")
        assert not any("cancelled" in (r.get("error") or "") for r in records), records
        effect = [r for r in records if r["kind"] == "effect" and r["status"] == "completed"]
        assert len(effect) == 1  # the result is recorded: no later worker performs it again
        assert _verified(store, f"s{i}")
    again = subprocess.run([CLI, "--store", store, "worker", "--once", "--concurrency", "3"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert len(_log(tmp_path)) == 6  # nothing performed twice
    for i in range(3):
        assert _ledger(store, f"s{i}")[-1]["kind"] in ("complete", "checkpoint")


def test_a_handler_outlasting_the_grace_ends_with_the_worker_and_is_never_run_beside_it(tmp_path: Path) -> None:
    store, env = _store(tmp_path, 2)
    slow = {**env, "WORK_SECONDS": "4"}
    worker = subprocess.Popen([CLI, "--store", store, "worker", "--concurrency", "3", "--grace", "0.5",
                               "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slow)
    _wait_for_begins(tmp_path, 2)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    died = time.monotonic()
    assert worker.returncode == 143, err
    assert died - signalled < 3.5, err  # it did not wait for the handlers
    assert "still in a handler" in err and "--grace 0.5 s" in err
    for i in range(2):
        assert _verified(store, f"s{i}")
        assert not any("cancelled" in (r.get("error") or "") for r in _ledger(store, f"s{i}"))
    # Another worker performs the effects again (the documented window: they never ended), never
    # while the first worker's threads could still run them.
    again = subprocess.run([CLI, "--store", store, "worker", "--once", "--concurrency", "3"], capture_output=True,
                           text=True, env={**env, "WORK_SECONDS": "0.05"}, timeout=120)
    assert again.returncode == 0, again.stderr
    begins = [f for f in _log(tmp_path) if f[0] == "B"]
    first_pid = begins[0][2]
    assert all(float(f[3]) >= died - 0.05 for f in begins if f[2] != first_pid), begins
    for i in range(2):
        assert _ledger(store, f"s{i}")[-1]["kind"] in ("complete", "checkpoint")
        assert _verified(store, f"s{i}")
