"""The ledger descriptor kept between appends, against a forked child that reuses descriptor
numbers: a daemon closes every inherited descriptor and opens its own files, which take the
lowest free numbers — the inherited ledger descriptor's number among them. The child's first
append must not close what now holds that number (its log, its socket): closing it would also
let the child's own ledger open take the number, and the child's next write to its log land in
the run's ledger.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run


def _flow() -> WorkflowSpec:
    """Effects forever: each node a ``tool_calls`` effect counted into ``n``."""
    def node(run: RunState, ctx: Any) -> StepPlan:
        run.vars["n"] = run.vars.get("n", 0) + 1
        return StepPlan("e", next_node="e", effect=Effect(EffectType.TOOL_CALLS, {"n": run.vars["n"]}, "last"))

    return WorkflowSpec("kept", "e", {"e": node})


def test_a_daemonized_child_s_own_file_on_the_inherited_number_is_left_open(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = FileStore(root, durability="none")
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({})})
    rt.start(workflow=_flow(), run_id="r1")
    assert rt.tick(workflow=_flow(), run_id="r1", max_steps=2).status == RunStatus.RUNNING
    number = store.ledger._held["r1"].fd
    log = tmp_path / "child.log"
    pid = os.fork()
    if pid == 0:  # the child daemonizes: its inherited ledger descriptor's number becomes its log
        code = 1
        try:
            os.close(number)
            mine = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if mine != number:
                os.dup2(mine, number)
                os.close(mine)
            state = rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
            os.write(number, b"child log line\n")
            code = 0 if state.vars["n"] == 4 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert log.read_bytes() == b"child log line\n"
    assert b"child log line" not in (root / "runs" / "r1" / "ledger.jsonl").read_bytes()
    assert rt.tick(workflow=_flow(), run_id="r1", max_steps=2).vars["n"] == 6  # after the child's records
    store.close()
    assert verify_run(root, "r1").ok
