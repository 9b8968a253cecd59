"""Stepping, effects and approvals read the runtime through two small Protocols, not the class."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from abstractruntime.core.effects import make_wait_until
from abstractruntime.core.models import Effect, EffectType, RunState

CORE = Path(__file__).resolve().parents[2] / "abstractruntime" / "core"


@pytest.mark.parametrize("module", ["stepping.py", "effect_exec.py", "approvals.py"])
def test_no_function_takes_the_runtime_class(module: str) -> None:
    tree = ast.parse((CORE / module).read_text(encoding="utf-8"))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert "Runtime" not in names and "Runtime" not in strings, module  # annotations name StepHost / EffectHost


def test_a_timer_is_due_by_the_clock_it_was_given() -> None:
    moment = datetime(2030, 1, 1, tzinfo=timezone.utc)
    run = RunState.new(workflow_id="w", entry_node="a")
    effect = Effect(EffectType.WAIT_UNTIL, {"until": moment.isoformat()}, result_key="t")
    early = make_wait_until(lambda: moment - timedelta(seconds=1))(run, effect, "b")
    assert early.status == "waiting" and early.wait is not None and early.wait.resume_to_node == "b"
    assert make_wait_until(lambda: moment)(run, effect, "b").status == "completed"
