"""No false alarms: whatever legitimate history a store has, it verifies clean.

Hypothesis generates run histories over a small scripted workflow (pure steps, effects that
complete, retry or fail, questions, events, jobs, timers, node exceptions) and interleaves
ticks, resumes, cancels, snapshots, restores, forks, bookmarks, crashes between a ledger
append and its checkpoint, and torn appends. After every operation every run must verify
with no problems; at the end every head published along the way, every bookmark and every
signature must still check out.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.clock import FixedClock, parse_iso
from abstractruntime.core.effects import EffectOutcome
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.restore import fork_snapshot, restore_snapshot, take_snapshot
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.signing import Ed25519Signer
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run, verify_store

from prov_helpers import SimulatedCrash, crashing_runtime, fake_llm, ledger_path

CODES = ["pure", "llm", "flaky", "fail", "ask", "event", "job", "until", "boom"]


def step(run: RunState, ctx: Any) -> StepPlan:
    """Interpret ``vars["plan"]``: one code per step, ``vars["i"]`` counts where we are."""
    plan, i = run.vars["plan"], run.vars.get("i", 0)
    if i >= len(plan):
        return StepPlan("step", complete_output={"steps": i})
    code = plan[i]
    run.vars["i"] = i + 1
    if code == "pure":
        return StepPlan("step", next_node="step")
    if code == "boom":
        raise RuntimeError(f"node bug at step {i}")
    if code == "llm":
        effect = Effect(EffectType.LLM_CALL, {"prompt": f"p{i}"}, result_key=f"r{i}")
    elif code in ("flaky", "fail"):
        effect = Effect(EffectType.TOOL_CALLS, {"step": i, "mode": code}, result_key=f"r{i}")
    elif code == "ask":
        effect = Effect(EffectType.ASK_USER, {"prompt": f"q{i}?"}, result_key=f"r{i}")
    elif code == "event":
        effect = Effect(EffectType.WAIT_EVENT, {"wait_key": f"evt-{run.run_id}-{i}"}, result_key=f"r{i}")
    elif code == "job":
        effect = Effect(EffectType.WAIT_JOB, {"job_id": f"job-{i}"}, result_key=f"r{i}")
    else:
        until = parse_iso(ctx.now_iso()) + timedelta(hours=1)
        effect = Effect(EffectType.WAIT_UNTIL, {"until": until.isoformat()}, result_key=f"r{i}")
    return StepPlan("step", next_node="step", effect=effect)


SCRIPT = WorkflowSpec("script", "step", {"step": step})


def make_tool() -> Any:
    failed_once: set[int] = set()

    def tool(run: RunState, effect: Effect) -> EffectOutcome:
        if effect.payload["mode"] == "fail":
            return EffectOutcome.failed("permanent failure", retryable=False)
        if effect.payload["step"] not in failed_once:  # first attempt fails, the retry succeeds
            failed_once.add(effect.payload["step"])
            return EffectOutcome.failed("transient failure")
        return EffectOutcome.completed({"ok": True})

    return tool


OPS = st.sampled_from(["start", "tick", "tick", "resume", "resume", "crash", "cancel", "snapshot", "restore",
                       "fork", "bookmark", "torn", "publish", "advance"])
HISTORY = st.lists(st.tuples(OPS, st.integers(min_value=0, max_value=1000),
                             st.lists(st.sampled_from(CODES), max_size=6)), min_size=1, max_size=22)


class World:
    """One store, one runtime, and what the history did to them."""

    def __init__(self, root: Path, signed: bool) -> None:
        self.root = root
        self.clock = FixedClock("2030-01-01T00:00:00+00:00")
        self.signer: Optional[Ed25519Signer] = Ed25519Signer.generate() if signed else None
        policy = DefaultEffectPolicy(effect_max_attempts={"tool_calls": 2}, default_backoff_base=0.0)
        self.runs_store, self.runtime = crashing_runtime(
            root, clock=self.clock, signer=self.signer, effect_policy=policy,
            effect_handlers={EffectType.LLM_CALL: fake_llm, EffectType.TOOL_CALLS: make_tool()})
        self.store = FileStore(root, durability="none")
        self.runs: list[str] = []
        self.snapshots: list[Any] = []
        self.published: list[tuple[str, str]] = []

    def pick(self, n: int) -> Optional[str]:
        return self.runs[n % len(self.runs)] if self.runs else None

    def crashable(self, call: Any) -> None:
        try:
            call()
        except SimulatedCrash:
            pass

    def apply(self, op: str, n: int, plan: list[str]) -> None:
        rt, run_id = self.runtime, self.pick(n)
        if op == "start" or run_id is None:
            self.runs.append(rt.start(workflow=SCRIPT, vars={"plan": plan}, run_id=f"run-{len(self.runs)}"))
            return
        state = rt.get_state(run_id)
        if op in ("tick", "crash", "resume"):
            self.runs_store.crash_next = op == "crash" and n % 2 == 0
            wait = state.waiting
            if op != "tick" and state.status is RunStatus.WAITING and wait is not None \
                    and WaitReason(wait.reason) is not WaitReason.UNTIL:
                self.crashable(lambda: rt.resume(workflow=SCRIPT, run_id=run_id, wait_key=wait.wait_key,
                                                 payload={"answer": f"a{n}"}))
            else:
                self.crashable(lambda: rt.tick(workflow=SCRIPT, run_id=run_id))
            self.runs_store.crash_next = False
        elif op == "cancel":
            rt.cancel_run(run_id, reason="changed my mind")
        elif op == "snapshot":
            self.snapshots.append(take_snapshot(rt, run_id, name=f"s{len(self.snapshots)}"))
        elif op == "restore" and self.snapshots:
            restore_snapshot(rt, self.snapshots[n % len(self.snapshots)], workflow=SCRIPT)
        elif op == "fork" and self.snapshots:
            self.runs.append(fork_snapshot(rt, self.snapshots[n % len(self.snapshots)], workflow=SCRIPT,
                                           run_id=f"run-{len(self.runs)}"))
        elif op == "bookmark":
            head = verify_run(self.root, run_id).head_seq
            self.store.bookmarks.add(run_id, f"b{n % 3}", seq=1 + n % head, replace=True)
        elif op == "torn":
            with ledger_path(self.root, run_id).open("ab") as handle:
                handle.write(b'{"format":1,"run_id":"' + run_id.encode() + b'","seq":')
        elif op == "publish":
            self.published.append((run_id, verify_run(self.root, run_id).head_hash))
        elif op == "advance":
            self.clock.advance(seconds=7200)
            for due in self.runs:
                self.crashable(lambda: rt.tick(workflow=SCRIPT, run_id=due))  # noqa: B023 - called at once

    def check(self, context: str) -> None:
        key = self.signer.public_key if self.signer else None
        for report in verify_store(self.root, public_key=key):
            assert report.ok, f"after {context}: {report.run_id}: {[p.to_dict() for p in report.problems]}"
            if key is not None and report.checkpoint_head is not None:
                assert report.signature == "valid"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=HISTORY, signed=st.booleans())
def test_legitimate_histories_always_verify(history: list[tuple[str, int, list[str]]], signed: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp) / "store", signed)
        try:
            for index, (op, n, plan) in enumerate(history):
                world.apply(op, n, plan)
                world.check(f"op {index} {op}")
            for run_id, head in world.published:
                report = verify_run(world.root, run_id, expect_head=head)
                assert report.ok and report.expect_head_seq is not None
            for run_id in world.runs:
                marks = world.store.bookmarks.list(run_id)
                assert verify_run(world.root, run_id).bookmarks_checked == len(marks)
        finally:
            world.runs_store.close()
            world.store.close()


def test_restore_keeps_verifying_with_bookmarks_and_signatures(tmp_path: Path) -> None:
    world = World(tmp_path / "store", signed=True)
    world.apply("start", 0, ["llm", "ask", "pure", "llm"])
    world.apply("tick", 0, [])
    world.apply("snapshot", 0, [])
    world.apply("bookmark", 0, [])
    world.apply("resume", 0, [])
    assert world.runtime.get_state("run-0").status is RunStatus.COMPLETED
    world.apply("publish", 0, [])
    world.apply("restore", 0, [])
    assert world.runtime.get_state("run-0").status is RunStatus.WAITING
    world.apply("resume", 1, [])
    world.check("restore and a second answer")
    records = verify_run(world.root, "run-0", expect_head=world.published[0][1],
                         public_key=world.signer.public_key if world.signer else None)
    assert records.ok and records.signature == "valid" and records.bookmarks_checked == 1
    assert records.expect_head_seq is not None and records.expect_head_seq < records.head_seq
    world.runs_store.close()
    world.store.close()
