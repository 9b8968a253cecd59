"""Battery 4: random start/tick/resume/cancel/snapshot/restore/bookmark sequences against a model.

Every step is applied to a real file store (``durability="none"``: the logic is the same,
fsync only costs time) and to a small in-memory model; after every step the stored runs
match the model, every run verifies, and every effect ran exactly as often as the model says:
once per time the run reached it. Effects are identified by position, so restoring a snapshot
taken before an effect and ticking again runs it again (a new position in the ledger).
``RELIABILITY_STATEFUL_EXAMPLES`` sets the number of examples (CI: 300).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from abstractruntime.core.errors import (
    BookmarkNotFoundError,
    InvalidInputError,
    RunNotWaitingError,
    WaitKeyMismatchError,
)
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.restore import restore_snapshot, take_snapshot
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

from . import checks

EXAMPLES = int(os.environ.get("RELIABILITY_STATEFUL_EXAMPLES", "300"))
NODES = ("p0", "fx", "ask", "p1", "done")


def _workflow() -> WorkflowSpec:
    def p0(run: Any, ctx: Any) -> StepPlan:
        run.vars.setdefault("trail", []).append("p0")
        return StepPlan("p0", next_node="fx")

    def p1(run: Any, ctx: Any) -> StepPlan:
        run.vars.setdefault("trail", []).append("p1")
        return StepPlan("p1", next_node="done")

    return WorkflowSpec("sm", "p0", {
        "p0": p0,
        "fx": lambda run, ctx: StepPlan("fx", effect=Effect(EffectType.TOOL_CALLS, {"x": 1}, result_key="tool"),
                                        next_node="ask"),
        "ask": lambda run, ctx: StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"},
                                                              result_key="ans"), next_node="p1"),
        "p1": p1,
        "done": lambda run, ctx: StepPlan("done", complete_output={"ans": run.vars.get("ans")}),
    })


WORKFLOW = _workflow()


def _fresh(node: str = "p0") -> dict[str, Any]:
    return {"status": "running", "node": node, "trail": [], "ans": None, "tool": False}


class RunMachine(RuleBasedStateMachine):
    """The file store and the model, side by side."""

    runs = Bundle("runs")
    snaps = Bundle("snaps")

    def __init__(self) -> None:
        super().__init__()
        # tmpfs when there is one: the index's SQLite fsyncs would otherwise dominate the run time.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="rel-sm-", dir=shm))
        self.store = FileStore(self.dir / "store", durability="none")
        self.executions: dict[str, int] = {}

        def tool(run: Any, effect: Effect) -> EffectOutcome:
            self.executions[run.run_id] = self.executions.get(run.run_id, 0) + 1
            return EffectOutcome.completed({"done": True})

        self.rt = self.store.runtime(effect_handlers={EffectType.TOOL_CALLS: tool})
        self.model: dict[str, dict[str, Any]] = {}
        self.tool_runs: dict[str, int] = {}
        self.marks: dict[str, set[str]] = {}
        self.snap_models: dict[str, tuple[str, dict[str, Any]]] = {}
        self.count = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model's semantics -----------------------------------------------------------

    def _advance(self, run_id: str, max_steps: int) -> None:
        m = self.model[run_id]
        steps = 0
        while m["status"] == "running" and steps < max_steps:
            steps += 1
            node = m["node"]
            if node in ("p0", "p1"):
                m["trail"].append(node)
                m["node"] = "fx" if node == "p0" else "done"
            elif node == "fx":
                m["tool"] = True
                self.tool_runs[run_id] = self.tool_runs.get(run_id, 0) + 1
                m["node"] = "ask"
            elif node == "ask":
                m["status"] = "waiting"
            else:
                m["status"] = "completed"

    # -- rules -----------------------------------------------------------------------------

    @rule(target=runs)
    def start(self) -> str:
        self.count += 1
        run_id = f"r{self.count}"
        assert self.rt.start(workflow=WORKFLOW, run_id=run_id) == run_id
        self.model[run_id] = _fresh()
        self.marks[run_id] = set()
        return run_id

    @rule(run_id=runs, max_steps=st.integers(1, 4))
    def tick(self, run_id: str, max_steps: int) -> None:
        self.rt.tick(workflow=WORKFLOW, run_id=run_id, max_steps=max_steps)
        if self.model[run_id]["status"] == "running":
            self._advance(run_id, max_steps)

    @rule(run_id=runs, answer=st.text(max_size=8), right_key=st.booleans())
    def resume(self, run_id: str, answer: str, right_key: bool) -> None:
        m = self.model[run_id]
        state = self.rt.get_state(run_id)
        key = state.waiting.wait_key if state.waiting else "nothing"
        if m["status"] != "waiting":
            with pytest.raises(RunNotWaitingError):
                self.rt.resume(workflow=WORKFLOW, run_id=run_id, wait_key=key, payload={"answer": answer})
            return
        if not right_key:
            with pytest.raises(WaitKeyMismatchError):
                self.rt.resume(workflow=WORKFLOW, run_id=run_id, wait_key=key + "x", payload={"answer": answer})
            return
        self.rt.resume(workflow=WORKFLOW, run_id=run_id, wait_key=key, payload={"answer": answer})
        m.update(status="running", node="p1", ans={"answer": answer})
        self._advance(run_id, 100)

    @rule(run_id=runs)
    def cancel(self, run_id: str) -> None:
        self.rt.cancel_run(run_id, reason="test")
        m = self.model[run_id]
        if m["status"] in ("running", "waiting"):
            m["status"] = "cancelled"

    @rule(target=snaps, run_id=runs)
    def snapshot(self, run_id: str) -> str:
        snap = take_snapshot(self.rt, run_id, name=f"s{len(self.snap_models)}")
        self.store.snapshots.save(snap)
        self.snap_models[snap.snapshot_id] = (run_id, copy.deepcopy(self.model[run_id]))
        return snap.snapshot_id

    @rule(snapshot_id=snaps)
    def restore(self, snapshot_id: str) -> None:
        snap = self.store.snapshots.load(snapshot_id)
        run_id, saved = self.snap_models[snapshot_id]
        restore_snapshot(self.rt, snap, workflow=WORKFLOW)
        self.model[run_id] = copy.deepcopy(saved)

    @rule(run_id=runs, name=st.sampled_from(["audited", "sent", "x"]))
    def bookmark(self, run_id: str, name: str) -> None:
        if name in self.marks[run_id]:
            with pytest.raises(InvalidInputError):
                self.store.bookmarks.add(run_id, name)
            return
        mark = self.store.bookmarks.add(run_id, name, note="n")
        assert mark.seq == self.store.ledger.head(run_id).seq
        self.marks[run_id].add(name)

    @rule(run_id=runs, name=st.sampled_from(["audited", "sent", "x"]))
    def unbookmark(self, run_id: str, name: str) -> None:
        if name not in self.marks[run_id]:
            with pytest.raises(BookmarkNotFoundError):
                self.store.bookmarks.remove(run_id, name)
            return
        self.store.bookmarks.remove(run_id, name)
        self.marks[run_id].discard(name)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        for run_id, m in self.model.items():
            state = self.rt.get_state(run_id)
            assert state.status.value == m["status"], (run_id, state.status, m)
            if m["status"] in ("running", "waiting"):
                assert state.current_node == m["node"], (run_id, state.current_node, m)
            assert state.vars.get("trail", []) == m["trail"]
            assert state.vars.get("ans") == m["ans"]
            assert ("tool" in state.vars) == m["tool"]
            if m["status"] == "completed":
                assert state.output == {"ans": m["ans"]}
            assert (state.waiting is not None) == (m["status"] == "waiting")
            assert {b.name for b in self.store.bookmarks.list(run_id)} == self.marks[run_id]

    @invariant()
    def every_run_verifies_and_each_effect_ran_once_per_visit(self) -> None:
        for run_id in self.model:
            report = verify_run(self.store.root, run_id)
            assert report.ok, [p.to_dict() for p in report.problems]
            assert self.executions.get(run_id, 0) == self.tool_runs.get(run_id, 0)
        assert checks.run_ids(self.store.root) == sorted(self.model)


RunMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRunMachine = pytest.mark.slow(RunMachine.TestCase)
