"""Battery 1: kill -9 a real process at random moments until its run completes.

``RELIABILITY_KILLS`` sets the number of kills (CI: 200) of the ``crashy`` workload,
``RELIABILITY_AGENT_KILLS`` those of the agent's loop (CI: 60); ``python -m tests.reliability.run
--kills 1000 --agent-kills 300`` runs the long form with the same code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from . import checks, driver, killloop, workload
from abstractruntime.core.clock import to_iso, utc_now

KILLS = int(os.environ.get("RELIABILITY_KILLS", "200"))
AGENT_KILLS = int(os.environ.get("RELIABILITY_AGENT_KILLS", "60"))
SEED = int(os.environ.get("RELIABILITY_SEED", "0"))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kill9_loop_loses_nothing_and_finishes_like_an_uncrashed_run(tmp_path: Path) -> None:
    stats = killloop.kill_loop(tmp_path, kills=KILLS, seed=SEED)
    print(f"kill loop: {stats.to_dict()}")
    assert stats.failures == []
    assert stats.kills >= KILLS
    assert stats.timer_kills > 0 and stats.op_kills > 0
    assert stats.episodes == stats.completed >= 1
    assert stats.lost == 0
    assert stats.duplicate_effects == 0
    assert stats.durable_checked > 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kill9_loop_of_an_agent_loses_nothing_and_ends_with_the_uncrashed_conversation(tmp_path: Path) -> None:
    stats = killloop.kill_loop(tmp_path, kills=AGENT_KILLS, seed=SEED, kind="agent")
    print(f"kill loop (agent): {stats.to_dict()}")
    assert stats.failures == []  # the final conversation equals the uncrashed run's, among others
    assert stats.kills >= AGENT_KILLS


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kill9_loop_with_a_code_first_workload_gives_the_same_figures(tmp_path: Path) -> None:
    """The same battery, the same checks, the same expected figures, over ``crashy_flow``: one
    function whose steps and effects are identified by position (tests/reliability/workload_flow.py)."""
    stats = killloop.kill_loop(tmp_path, kills=KILLS, seed=SEED, kind="flow")
    print(f"kill loop (code-first): {stats.to_dict()}")
    assert stats.failures == []
    assert stats.kills >= KILLS
    assert stats.timer_kills > 0 and stats.op_kills > 0
    assert stats.episodes == stats.completed >= 1
    assert stats.lost == 0
    assert stats.duplicate_effects == 0
    assert stats.durable_checked > 0


def test_uncrashed_agent_run_stores_its_conversation_once(tmp_path: Path) -> None:
    import io
    import json

    out = io.StringIO()
    state = driver.drive(tmp_path / "store", "a1", to_iso(utc_now()), tmp_path / "fx.log", out, durability="none",
                         kind="agent")
    assert state.status.value == "completed"
    messages = state.vars["messages"]
    assert len(messages) == 1 + 2 * workload.AGENT_TURNS
    # Some tool outputs carry a key: real in the run, redacted in the ledger.
    keys = [m["api_key"] for m in messages if "api_key" in m]
    assert len(keys) == 8 and all(k.startswith("sk-live-") for k in keys)
    ledger_path = tmp_path / "store" / "runs" / "a1" / "ledger.jsonl"
    assert b"sk-live-" not in ledger_path.read_bytes()
    lines = workload.EffectLog(tmp_path / "fx.log").lines()
    assert sorted({f[0] for f in lines}) == ["agent_tool", "model"]
    assert len(lines) == len({f[3] for f in lines}) == 2 * workload.AGENT_TURNS  # each effect once
    conversation = len(json.dumps(messages, separators=(",", ":")))
    ledger = ledger_path.stat().st_size
    assert ledger < 2.5 * conversation, (ledger, conversation)  # stored once, not once per turn


def test_uncrashed_code_first_driver_run_exercises_every_call(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    state = driver.drive(tmp_path / "store", "one", to_iso(utc_now()), tmp_path / "fx.log", out, durability="none",
                         kind="flow")
    assert state.status.value == "completed", state.error
    records = checks.ledger_records(tmp_path / "store", "one")
    kinds = {(r.get("effect") or {}).get("type") for r in records}
    assert {"tool_calls", "llm_call", "ask_user", "wait_event", "wait_job", "wait_until",
            "start_subworkflow"} <= kinds
    assert {r["ext"]["step"]["kind"] for r in records if r["kind"] == "step"} == {"step", "now", "uuid", "random"}
    lines = workload.EffectLog(tmp_path / "fx.log").lines()
    steps = workload.ROUNDS * workload.PURE_PER_ROUND + 1  # the child's step too
    assert sum(1 for f in lines if f[0] == "step") == steps == len({f[3] for f in lines if f[0] == "step"})
    assert [f[1] for f in lines if f[0] == "flakystep"] == ["fail", "ok"] * workload.ROUNDS
    assert sum(1 for f in lines if f[0] == "tool") == 2 * workload.ROUNDS + 1
    assert state.output["answers"]["user"] == "yes" and state.output["answers"]["event"] == {"event": "evt:go"}
    assert state.output["answers"]["child"]["trail"] == [{"r": 100, "i": 2}]
    assert state.output["values"] == workload.ROUNDS and state.output["draws_in_range"] is True
    assert checks.store_problems(tmp_path / "store") == []


def test_uncrashed_driver_run_exercises_every_effect_kind(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    state = driver.drive(tmp_path / "store", "one", to_iso(utc_now()), tmp_path / "fx.log", out, durability="none")
    assert state.status.value == "completed"
    kinds = {(r.get("effect") or {}).get("type") for r in checks.ledger_records(tmp_path / "store", "one")}
    assert {"tool_calls", "llm_call", "ask_user", "wait_event", "wait_job", "wait_until",
            "start_subworkflow"} <= kinds
    lines = workload.EffectLog(tmp_path / "fx.log").lines()
    # Two calls per round (the same payload twice: two effects) + 1 in the child, each once;
    # the flaky effect failed once, then succeeded.
    assert [f[1] for f in lines if f[0] == "flaky"] == ["fail", "ok"]
    assert sum(1 for f in lines if f[0] == "tool") == 2 * workload.ROUNDS + 1
    assert len({f[3] for f in lines if f[0] == "tool"}) == 2 * workload.ROUNDS + 1
    assert state.output and state.output["answers"] == {
        "user": {"answer": "yes"}, "event": {"event": "evt:go"}, "job": {"job": "job-7", "status": "done"}}
    assert out.getvalue().count("DURABLE") >= 10


def test_the_checks_notice_a_lost_durable_step(tmp_path: Path) -> None:
    import io

    root = tmp_path / "store"
    out = io.StringIO()
    driver.drive(root, "one", to_iso(utc_now()), tmp_path / "fx.log", out, durability="none")
    acked = {int(line.split()[1]): line.split()[2] for line in out.getvalue().splitlines()
             if line.startswith("DURABLE")}
    assert checks.durable_problems(root, "one", acked) == []
    assert checks.store_problems(root) == []
    ledger = root / "runs" / "one" / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:-3]))  # drop the last three records
    assert any("lost" in p for p in checks.durable_problems(root, "one", acked))
    assert any("ledger_truncated" in p for p in checks.store_problems(root))


_MUTATING_NODE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.runtime import EffectOutcome
    from abstractruntime.core.spec import WorkflowSpec
    from abstractruntime.storage.store import FileStore

    root, log, marker = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def count(run, ctx):
        # A node that updates vars and then asks for an effect (docs/concepts.md allows both).
        run.vars["n"] = run.vars.get("n", 0) + 1
        return StepPlan("count", effect=Effect(EffectType.TOOL_CALLS, {"n": run.vars["n"]}, result_key="r"),
                        next_node="after")

    def after(run, ctx):
        if not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), 9)   # crash after the handler ran, before the next batch
        return StepPlan("after", complete_output={"n": run.vars["n"]})

    def tool(run, effect):
        with open(log, "a") as fh:
            fh.write("executed\\n")
        return EffectOutcome.completed({"ok": True})

    wf = WorkflowSpec("mut", "count", {"count": count, "after": after})
    store = FileStore(root)
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: tool})
    if store.runs.load("m1") is None:
        rt.start(workflow=wf, run_id="m1")
    print(rt.tick(workflow=wf, run_id="m1").output)
""")


def test_node_var_updates_before_an_effect_are_not_applied_twice_after_a_kill(tmp_path: Path) -> None:
    script = tmp_path / "mutating.py"
    script.write_text(_MUTATING_NODE)
    args = [sys.executable, str(script), str(tmp_path / "store"), str(tmp_path / "fx.log"), str(tmp_path / "m")]
    first = subprocess.run(args, capture_output=True, text=True)
    assert first.returncode == -9
    second = subprocess.run(args, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    # The node's update is recorded with the effect's intent: never applied twice.
    assert second.stdout.strip() == "{'n': 1}"
    # The kill fell inside the effect's window (its result shares the next batch's fsync, see
    # docs/durability.md), so the effect ran once more — at least once, as documented.
    assert (tmp_path / "fx.log").read_text().count("executed") == 2


def test_a_start_interrupted_before_its_checkpoint_is_a_run(tmp_path: Path) -> None:
    """The kill loop found this state: a start killed before its first checkpoint."""
    from abstractruntime.core.errors import RunExistsError
    from abstractruntime.core.models import StepPlan
    from abstractruntime.core.spec import WorkflowSpec
    from abstractruntime.storage.store import FileStore
    from abstractruntime.storage.verify import verify_run

    class Crash(BaseException):
        """Stands for a kill -9 between the start record's append and the checkpoint."""

    store = FileStore(tmp_path / "s", durability="none")
    rt = store.runtime()
    wf = WorkflowSpec("w", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={})})

    def crash(checkpoint: object) -> None:
        raise Crash()

    store.runs.save_checkpoint = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        rt.start(workflow=wf, run_id="r1")
    assert len(checks.ledger_records(store.root, "r1")) == 1  # the start record is the run
    assert verify_run(store.root, "r1").problems == []
    store.runs.save_checkpoint = type(store.runs).save_checkpoint.__get__(store.runs)  # type: ignore[method-assign]
    with pytest.raises(RunExistsError):
        rt.start(workflow=wf, run_id="r1")  # creating a run is exclusive, also after a crash
    assert rt.tick(workflow=wf, run_id="r1").status.value == "completed"  # rebuilt from the ledger
    assert verify_run(store.root, "r1").ok
