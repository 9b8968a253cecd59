"""Replaying a run's format-3 records while verifying: stored values, markers and state digests.

:class:`StateReplay` rebuilds the state document record by record, the way the runtime does,
from the ledger alone (no secret is needed: digests cover the redacted state and its
commitments). It reports a reference to a value the run never defined (``value_undefined``),
a malformed marker (``bad_marker``), a record that cannot be replayed (``unreplayable``) and a
record whose ``state`` digest is not the digest of the state it ends
(``state_digest_mismatch``). After the first record it cannot replay it stops: the state is
unknown from there, and every later digest would be a cascade of the same problem.
"""

from __future__ import annotations

from typing import Any, Optional

from ..core.records import RECORD_FORMAT
from ..core.state import StateImage
from ..core.values import UndefinedValueError, ValueTable
from ..core.wal import apply_record, record_parts


class StateReplay:
    """The state document of one run, rebuilt from its records as a verifier reads them."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.table = ValueTable()
        self.image: Optional[StateImage] = None
        self.stopped = False
        # seq -> the digest of the state right after that record, for records that carry one.
        self.digests: dict[int, str] = {}

    def see(self, doc: dict[str, Any], seq: int) -> Optional[tuple[str, str]]:
        """Replay one stored record; ``(problem type, message)`` when something is wrong."""
        if self.stopped:
            return None
        if doc.get("format") != RECORD_FORMAT:
            self.image = None  # an older record: the next format-3 record carries the whole state
            return None
        if self.image is None:
            self.image = StateImage.blank(self.run_id)
        try:
            for part in record_parts(doc):
                self.table.collect(part, seq)
        except ValueError as exc:
            self.stopped = True
            return "bad_marker", f"record holds a malformed marker ({exc})"
        missing = [vid for part in record_parts(doc) for vid in self.table.closure(part) if vid not in self.table]
        if missing:
            self.stopped = True
            return "value_undefined", f"record refers to stored value {missing[0][:16]}…, which the run never defined"
        try:
            apply_record(self.image, doc, self.table, self.run_id)
        except (ValueError, TypeError, KeyError, UndefinedValueError) as exc:
            self.stopped = True
            return "unreplayable", f"record cannot be replayed ({exc})"
        claimed = doc.get("state")
        if claimed is not None:
            actual = self.image.digest()
            self.digests[seq] = actual
            if claimed != actual:
                return ("state_digest_mismatch", "the record's state digest is not the digest of the state the "
                        "ledger rebuilds there (a digest written by someone else?)")
        return None


__all__ = ["StateReplay"]
