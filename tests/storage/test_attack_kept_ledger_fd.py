"""The ledger descriptor kept between appends, against a forked child that reuses descriptor
numbers: a daemon closes every inherited descriptor and opens its own files, which take the
lowest free numbers — the inherited ledger descriptor's number among them. The child's first
append must not close what now holds that number (its log, its socket): closing it would also
let the child's own ledger open take the number, and the child's next write to its log land in
the run's ledger.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

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


def _append_after_chmod(base: Path, keep: int) -> int:
    """In a forked child running as uid 65534: a run ticked, its ledger made read-only
    (``chmod 0400``: an operator freezing it), ticked again. Exit 0: refused with a StorageError
    and nothing written; 3: appended; other: something else went wrong."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from abstractruntime.core.errors import StorageError
            from abstractruntime.storage import ledger_files

            ledger_files.KEPT_DESCRIPTORS = keep
            os.setgid(65534)
            os.setuid(65534)
            store = FileStore(base / f"store-{keep}", durability="none")
            rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({})})
            rt.start(workflow=_flow(), run_id="r1")
            rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
            ledger = base / f"store-{keep}" / "runs" / "r1" / "ledger.jsonl"
            before = ledger.read_bytes()
            ledger.chmod(0o400)
            try:
                rt.tick(workflow=_flow(), run_id="r1", max_steps=2)
                code = 3
            except StorageError as exc:
                code = 0 if "Permission denied" in str(exc) and ledger.read_bytes() == before else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "setuid") or os.geteuid() != 0,
                    reason="needs root to drop to uid 65534 (root's writes ignore permission bits)")
def test_a_ledger_made_read_only_is_refused_as_when_it_is_opened_afresh() -> None:
    base = Path(tempfile.mkdtemp(prefix="kept-perm-"))
    try:
        base.chmod(0o777)
        assert _append_after_chmod(base, keep=0) == 0  # every append opens the file: refused
        assert _append_after_chmod(base, keep=32) == 0  # the kept descriptor must not write past it
    finally:
        shutil.rmtree(base, ignore_errors=True)
