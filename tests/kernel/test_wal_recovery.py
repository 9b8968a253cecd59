"""The ledger as the write-ahead log: real kill -9, concurrent starts, fsyncs counted, old formats."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime import Effect, EffectOutcome, EffectType, RunState, StepPlan, WorkflowSpec, open_store
from abstractruntime.core.errors import CorruptRecordError
from abstractruntime.loader import load_workflow
from abstractruntime.storage.verify import verify_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "format1"

FLOW = textwrap.dedent('''
    import os, signal
    from pathlib import Path
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec

    COUNT = Path(os.environ["COUNT_FILE"])

    def login(run, effect):
        with COUNT.open("a") as f:
            f.write("login\\n")
        return EffectOutcome.completed({"token": "s3cret-" + run.run_id, "user": "ana"})

    def send(run, effect):
        if os.environ.get("KILL_IN_SEND"):
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9 inside the second effect
        return EffectOutcome.completed({"sent_with": effect.payload["auth"]})

    handlers = {EffectType.LLM_CALL: login, EffectType.TOOL_CALLS: send}

    workflow = WorkflowSpec("secret-flow", "a", {
        "a": lambda run, ctx: StepPlan("a", next_node="b", effect=Effect(EffectType.LLM_CALL, {"prompt": "login"},
                                                                       result_key="auth")),
        "b": lambda run, ctx: StepPlan("b", next_node="c", effect=Effect(
            EffectType.TOOL_CALLS, {"auth": run.vars["auth"]["token"]}, result_key="sent")),
        "c": lambda run, ctx: StepPlan("c", complete_output={"auth": run.vars["auth"], "sent": run.vars["sent"]}),
    })
''')

TICK = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    import flow
    from abstractruntime import open_store
    rt = open_store(sys.argv[2]).runtime(effect_handlers=flow.handlers)
    rt.tick(workflow=flow.workflow, run_id=sys.argv[3])
''')


def _flow(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "flow.py").write_text(FLOW)
    return code


def test_recovery_after_kill_9_sees_the_secret_the_uncrashed_run_saw(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    code = _flow(tmp_path)
    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "count.txt"))
    monkeypatch.syspath_prepend(str(code))
    import flow  # type: ignore[import-not-found]

    store = tmp_path / "store"
    rt = open_store(store).runtime(effect_handlers=flow.handlers)
    calm = rt.start(workflow=flow.workflow, run_id="calm")
    expected = rt.tick(workflow=flow.workflow, run_id=calm).output
    assert expected is not None and expected["auth"]["token"] == "s3cret-calm"

    crashed = rt.start(workflow=flow.workflow, run_id="crashed")
    env = {**os.environ, "KILL_IN_SEND": "1"}
    proc = subprocess.run([sys.executable, "-c", TICK, str(code), str(store), crashed], env=env, timeout=60)
    assert proc.returncode == -9
    ledger = (store / "runs" / crashed / "ledger.jsonl").read_bytes()
    assert b"s3cret" not in ledger and b"[REDACTED]" in ledger  # the result is durable, redacted
    assert (store / "runs" / crashed / "secrets.jsonl").stat().st_mode & 0o777 == 0o600

    fresh = open_store(store).runtime(effect_handlers=flow.handlers)
    recovered = fresh.tick(workflow=flow.workflow, run_id=crashed).output
    assert recovered == {"auth": {"token": "s3cret-crashed", "user": "ana"}, "sent": {"sent_with": "s3cret-crashed"}}
    # login's result was durable before the kill: its handler never ran again.
    assert (tmp_path / "count.txt").read_text().count("login") == 2  # once per run
    assert not (store / "runs" / crashed / "secrets.jsonl").exists()  # pruned at the checkpoint
    assert verify_run(store, crashed).ok


START = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from abstractruntime import StepPlan, WorkflowSpec, open_store
    from abstractruntime.core.errors import RunExistsError
    wf = WorkflowSpec("w", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={})})
    rt = open_store(sys.argv[1]).runtime()
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    try:
        rt.start(workflow=wf, run_id="same", vars={"who": sys.argv[3]})
    except RunExistsError:
        sys.exit(7)
''')


def test_two_processes_starting_the_same_run_id_never_break_the_chain(tmp_path: Path) -> None:
    store = tmp_path / "store"
    open_store(store).close()
    for attempt in range(5):
        go = tmp_path / f"go{attempt}"
        shutil.rmtree(store / "runs", ignore_errors=True)
        procs = [subprocess.Popen([sys.executable, "-c", START, str(store), str(go), str(i)]) for i in range(2)]
        time.sleep(0.5)
        go.touch()
        codes = sorted(p.wait(timeout=60) for p in procs)
        assert codes == [0, 7]
        report = verify_run(store, "same")
        assert report.ok and report.head_seq == 1


def test_one_fsync_per_effect_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def poll(run: RunState, ctx: Any) -> StepPlan:
        run.vars["i"] = run.vars.get("i", 0) + 1
        if run.vars["i"] > 200:
            return StepPlan("poll", complete_output={"i": run.vars["i"]})
        return StepPlan("poll", next_node="poll", effect=Effect(EffectType.LLM_CALL, {"prompt": "again"}, "r"))

    wf = WorkflowSpec("poll", "poll", {"poll": poll})
    rt = open_store(tmp_path / "store").runtime(
        effect_handlers={EffectType.LLM_CALL: lambda run, effect: EffectOutcome.completed({"ok": True})})
    run_id = rt.start(workflow=wf)
    counts = {"fsync": 0, "replace": 0}
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        counts["fsync"] += 1
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        counts["replace"] += 1
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    state = rt.tick(workflow=wf, run_id=run_id, max_steps=1000)
    assert state.output == {"i": 201}
    # 200 effects: one batch (and one fsync) each, plus the final batch; one checkpoint.
    assert counts["fsync"] <= 200 + 2, counts
    assert counts["replace"] <= 2, counts


def test_runs_written_in_format_1_list_show_verify_and_resume(tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(FIXTURES / "store", store)
    opened = open_store(store)
    names = sorted(r.run_id for r in opened.runs.list_runs(limit=100))
    assert "approval-waiting" in names and len(names) == 10
    for name in names:
        report = verify_run(store, name)
        assert report.ok is (name != "tampered"), (name, [p.type for p in report.problems])
        if name == "tampered":
            with pytest.raises(CorruptRecordError, match="record_hash"):
                opened.runtime().get_state(name)  # an edited ledger is never adopted
        else:
            assert opened.runtime().get_state(name).run_id == name
    workflow = load_workflow(FIXTURES / "workflows" / "approval.py")
    rt = opened.runtime()
    waiting = rt.get_state("approval-waiting")
    assert waiting.waiting is not None and waiting.waiting.wait_id is None  # a format-1 wait has no position
    done = rt.resume(workflow=workflow, run_id="approval-waiting", wait_key=waiting.waiting.wait_key,
                     payload={"answer": "yes"}, allow_drift=True)
    assert done.status.value == "completed"
    formats = [r["format"] for r in rt.get_ledger("approval-waiting")]
    assert formats[0] == 1 and formats[-1] == 4  # new records are the current format
    assert verify_run(store, "approval-waiting").ok
