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
