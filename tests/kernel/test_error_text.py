"""Errors that are also ``KeyError`` read as their message, not as a quoted key."""

from __future__ import annotations

from abstractruntime.core.errors import (BookmarkNotFoundError, RunNotFoundError, SnapshotNotFoundError,
                                         WorkflowNotRegisteredError)


def test_not_found_errors_are_not_quoted() -> None:
    assert str(RunNotFoundError("r1")) == "Unknown run_id: r1"
    assert str(SnapshotNotFoundError("s1")) == "Unknown snapshot: s1"
    assert str(BookmarkNotFoundError("r1", "b")) == "Run r1 has no bookmark named 'b'"
    assert str(WorkflowNotRegisteredError("w")).startswith("Workflow 'w' is not registered")
    assert isinstance(RunNotFoundError("r1"), KeyError)
