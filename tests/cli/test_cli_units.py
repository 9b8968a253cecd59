"""Small pure pieces of the CLI: the exit code table, TSV cells, the fallback tool runner, Mermaid."""

from __future__ import annotations

from abstractruntime.cli.exit_codes import exit_code_for, exit_code_for_status
from abstractruntime.cli.output import tsv_cell
from abstractruntime.core import errors


def test_every_error_class_maps_to_its_documented_exit_code() -> None:
    expected = {
        errors.RunNotFoundError("x"): 4,
        errors.SnapshotNotFoundError("x"): 4,
        errors.BookmarkNotFoundError("r", "b"): 4,
        errors.InvalidIdError("x"): 2,
        errors.InvalidAnswerError("x"): 2,
        errors.WaitKeyMismatchError("x"): 2,
        errors.PayloadTooLargeError("x"): 2,
        errors.RunNotWaitingError("x"): 1,
        errors.CorruptRecordError("x", path="p", line=1): 1,
        errors.VerificationFailedError("x"): 3,
        errors.RunLockedError("r"): 1,
        errors.WorkflowDriftError("x"): 1,
        errors.WorkflowLoadError("x"): 1,
        errors.MissingExtraError("p", "e", "why"): 1,
    }
    for exc, code in expected.items():
        assert exit_code_for(exc) == code, type(exc).__name__


def test_a_new_subclass_falls_back_to_its_base_row() -> None:
    class NewBadInput(errors.InvalidInputError):
        code = "brand_new_code"

    class NewMissing(errors.NotFoundError):
        code = "another_new_code"

    assert exit_code_for(NewBadInput("x")) == 2
    assert exit_code_for(NewMissing("x")) == 4
    assert exit_code_for(RuntimeError("x")) == 1


def test_status_exit_codes() -> None:
    assert [exit_code_for_status(s) for s in ("completed", "waiting", "failed", "cancelled", "running")] == \
        [0, 5, 1, 1, 0]


def test_tsv_cell_escapes_separators() -> None:
    assert tsv_cell(None) == ""
    assert tsv_cell("a\tb\nc\\d") == "a\\tb\\nc\\\\d"
    assert tsv_cell({"b": 1, "a": [1, "x"]}) == '{"a":[1,"x"],"b":1}'
    assert tsv_cell("[y/n]") == "[y/n]"


def test_fallback_tool_runner() -> None:
    from abstractruntime.cli.workflows import _fallback_tool_calls_handler
    from abstractruntime.core.models import Effect, EffectType, RunState

    def add(a: int, b: int) -> int:
        return a + b

    def bad() -> None:
        raise ValueError("nope")

    handler = _fallback_tool_calls_handler([add, bad])
    run = RunState.new(workflow_id="w", entry_node="n")
    effect = Effect(EffectType.TOOL_CALLS, {"tool_calls": [
        {"name": "add", "arguments": {"a": 2, "b": 3}, "call_id": "1"},
        {"name": "bad", "arguments": {}, "call_id": "2"},
        {"name": "rm", "arguments": {}, "call_id": "3"},
    ]})
    outcome = handler(run, effect)
    assert outcome.status == "completed"
    results = outcome.result["results"]
    assert outcome.result["mode"] == "executed"
    assert [(r["call_id"], r["success"], r["output"]) for r in results] == [("1", True, 5), ("2", False, None),
                                                                           ("3", False, None)]
    assert "ValueError: nope" in results[1]["error"] and "not allowed" in results[2]["error"]
    assert handler(run, Effect(EffectType.TOOL_CALLS, {})).status == "failed"


def test_mermaid_escapes_labels() -> None:
    from abstractruntime.cli.cmd_graph import mermaid
    from abstractruntime.core.models import StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    def a(run, ctx):  # type: ignore[no-untyped-def]
        return StepPlan(node_id='say "hi"', next_node="b<1>")

    def b(run, ctx):  # type: ignore[no-untyped-def]
        return StepPlan(node_id="b<1>", complete_output={})

    text = mermaid(WorkflowSpec("w", 'say "hi"', {'say "hi"': a, "b<1>": b}))
    assert 'n0["say #quot;hi#quot;"]' in text
    assert 'n1["b#lt;1#gt;"]' in text
    assert "n0 --> n1" in text
