"""What verification found: a :class:`VerifyReport` of problems (fail) and notes (do not).

The problem and note types are listed, by layer, in :mod:`abstractruntime.storage.verify`.
"""

from __future__ import annotations

from dataclasses import field
from ..core.fastclass import dataclass
from typing import Any, Optional

from .base import LedgerHead
from .ledger_scan import int_or_none

MAX_FINDINGS = 200  # per list; a spliced million-record ledger must not produce a million lines


@dataclass
class Finding:
    """One problem or note: a stable ``type``, where (``seq``, 1-based file ``line``) and why."""

    type: str
    message: str
    seq: Optional[int] = None
    line: Optional[int] = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"type", "seq", "line", "message", "details"}``."""
        return {"type": self.type, "seq": self.seq, "line": self.line, "message": self.message,
                "details": self.details}


@dataclass
class VerifyReport:
    """What :func:`verify_run` found for one run; ``to_dict()`` is the CLI's ``--json`` schema."""

    run_id: str
    path: str
    count: int = 0
    lines: int = 0
    head_seq: int = 0
    head_hash: Optional[str] = None
    checkpoint_head: Optional[LedgerHead] = None
    run_status: Optional[str] = None
    expect_head: Optional[str] = None
    expect_head_seq: Optional[int] = None
    signature: str = "absent"  # absent | unchecked | valid | invalid
    signature_key_id: Optional[str] = None
    bookmarks_checked: int = 0
    # A pruned run: its tombstone (the run's files are gone; the head is the tombstone's).
    pruned: Optional[dict[str, Any]] = None
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    problems_omitted: int = 0
    notes_omitted: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (notes do not count)."""
        return not self.problems and not self.problems_omitted

    def problem(self, kind: str, message: str, *, seq: Any = None, line: Optional[int] = None,
                **details: Any) -> None:
        """Record a problem (beyond :data:`MAX_FINDINGS` only counted)."""
        if len(self.problems) >= MAX_FINDINGS:
            self.problems_omitted += 1
        else:
            self.problems.append(Finding(kind, message, int_or_none(seq), line, details))

    def note(self, kind: str, message: str, *, seq: Any = None, line: Optional[int] = None, **details: Any) -> None:
        """Record a note (informational; does not affect ``ok``)."""
        if len(self.notes) >= MAX_FINDINGS:
            self.notes_omitted += 1
        else:
            self.notes.append(Finding(kind, message, int_or_none(seq), line, details))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (documented in docs/provenance.md)."""
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "path": self.path,
            "count": self.count,
            "lines": self.lines,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoint_head": {"seq": self.checkpoint_head.seq, "head_hash": self.checkpoint_head.head_hash}
            if self.checkpoint_head else None,
            "run_status": self.run_status,
            "expect_head": self.expect_head,
            "expect_head_seq": self.expect_head_seq,
            "signature": self.signature,
            "signature_key_id": self.signature_key_id,
            "bookmarks_checked": self.bookmarks_checked,
            "pruned": self.pruned,
            "problems": [p.to_dict() for p in self.problems],
            "problems_omitted": self.problems_omitted,
            "notes": [n.to_dict() for n in self.notes],
            "notes_omitted": self.notes_omitted,
        }


__all__ = ["Finding", "VerifyReport", "MAX_FINDINGS"]
