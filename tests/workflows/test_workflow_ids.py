"""A workflow id is free text (as in upstream 0.0.1) but never holds control characters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from abstractruntime.core.errors import InvalidIdError
from abstractruntime.core.ids import validate_workflow_id
from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore


def _done(run: object, ctx: object) -> StepPlan:
    return StepPlan("a", complete_output={})


@pytest.mark.parametrize("bad", ["a\x00b", "line\nbreak", "tab\there", "bell\x07", "del\x7f", "c1\x85",
                                 "sep\u2028", "", None, 7])
def test_control_characters_and_non_strings_are_refused(bad: object) -> None:
    with pytest.raises(InvalidIdError) as caught:
        WorkflowSpec(bad, "a", {"a": _done})  # type: ignore[arg-type]
    assert caught.value.code == "invalid_id" and "\n" not in str(caught.value)
    assert "workflow id" in str(caught.value)


@pytest.mark.parametrize("good", ["approval", "support agent v2", "team/agent:1", "é-ü", "x" * 300])
def test_the_ids_upstream_code_used_stay_valid(good: str) -> None:
    from abstractruntime.core.runtime import Runtime

    assert validate_workflow_id(good) == good
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    wf = WorkflowSpec(good, "a", {"a": _done})
    assert rt.tick(workflow=wf, run_id=rt.start(workflow=wf)).workflow_id == good


def test_a_workflow_file_with_such_an_id_is_a_one_line_load_error(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(
        "from abstractruntime.core.models import StepPlan\n"
        "from abstractruntime.core.spec import WorkflowSpec\n"
        "workflow = WorkflowSpec('pay\\x00ments', 'a', {'a': lambda run, ctx: StepPlan('a', complete_output={})})\n")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "abstractruntime"), "run", "wf.py"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Invalid workflow id 'pay\\x00ments'" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "store" / "runs").exists()
