"""Replaying a run's format-3 and format-4 records while verifying: stored values, markers and state digests.

:class:`StateReplay` rebuilds the state document record by record, the way the runtime does,
from the ledger alone (no secret is needed: digests cover the redacted state and its
commitments). It reports a reference to a value the run never defined (``value_undefined``),
a list extension of a value that is not a list (``value_not_a_list``), a malformed marker
(``bad_marker``), a record that cannot be replayed (``unreplayable``) and a
record whose ``state`` digest is not the digest of the state it ends
(``state_digest_mismatch``). After the first record it cannot replay it stops: the state is
unknown from there, and every later digest would be a cascade of the same problem.
"""

from __future__ import annotations

from typing import Any, Optional

from ..core.markers import EXT, ITEMS, LIT, REF, VAL, marker_kind
from ..core.records import JCS_FORMATS
from ..core.state import StateImage
from ..core.values import UndefinedValueError, ValueTable
from ..core.wal import DELTA_RUN_FIELDS, apply_record, carries_whole_state, record_parts


class StateReplay:
    """The state document of one run, rebuilt from its records as a verifier reads them."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.table = ValueTable()
        self.image: Optional[StateImage] = None
        self.stopped = False
        self.older = False  # a format-1 or format-2 record was seen
        # seq -> the digest of the state right after that record, for records that carry one.
        self.digests: dict[int, str] = {}

    def see(self, doc: dict[str, Any], seq: int, *, markers: bool = True) -> Optional[tuple[str, str]]:
        """Replay one stored record; ``(problem type, message)`` when something is wrong.

        ``markers=False``: the record's line holds no ``"$``, so it defines and names no stored
        value (every marker key begins with ``$``) and there is nothing to file or check.
        """
        if self.stopped:
            return None
        if doc.get("format") not in JCS_FORMATS:
            if self.image is not None:
                # Formats never go down in a ledger: the opener refuses such a record where it stands.
                self.stopped = True
                return "unreplayable", f"a format-{doc.get('format')} record after format-3 or format-4 records"
            self.older = True
            return None  # an older record: the next format-3/4 record carries the whole state
        if self.image is None:
            if self.older and not carries_whole_state(doc):
                # Replayed on a blank state it would prove nothing, and the opener refuses it.
                self.stopped = True
                return "unreplayable", "the first format-3 or format-4 record after older ones does not carry the whole state"
            self.image = StateImage.blank(self.run_id)
        if markers:
            found = self._markers(doc, seq)
            if found is not None:
                self.stopped = True
                return found
        try:
            if markers or not _apply_simple(self.image, doc):
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

    def _markers(self, doc: dict[str, Any], seq: int) -> Optional[tuple[str, str]]:
        """File the record's stored-value definitions and check the ids it names."""
        try:
            for part in record_parts(doc):
                self.table.collect(part, seq)
        except ValueError as exc:
            return "bad_marker", f"record holds a malformed marker ({exc})"
        # Only the ids this record names: every definition filed earlier had its own checked when
        # its record was seen, so checking the whole closure again would cost the conversation
        # at every record.
        for vid, extended in _references(record_parts(doc)):
            if vid not in self.table:
                return "value_undefined", f"record refers to stored value {vid[:16]}…, which the run never defined"
            if extended and not _is_list(self.table, vid):
                return "value_not_a_list", f"record extends stored value {vid[:16]}…, which is not a list"
        return None


_SCALARS = frozenset({str, int, float, bool, type(None)})
def _apply_simple(image: StateImage, doc: dict[str, Any]) -> bool:
    """Apply ``doc`` the quick way when it is the commonest shape of record — a kind that implies no
    change, a delta that only sets top-level variables and run fields to scalars, no marker — and
    say whether it was (``False``: nothing was changed; :func:`~abstractruntime.core.wal.apply_record`
    applies it). What it does is what ``apply_record`` does for such a record (the pending effect
    and the effect count stay as they are, each set lands where it says, ``updated_at`` becomes
    ``at``), without copying the pending effect again."""
    if doc.get("kind") in ("effect", "part"):  # the kinds that imply a change (docs/file-format.md)
        return False
    delta = doc.get("delta")
    if delta is None:
        delta = {}
    elif delta.__class__ is not dict:
        return False
    for key, value in delta.items():
        if key == "vars":
            if value.__class__ is not list:
                return False
            for op in value:
                if op.__class__ is not list or len(op) != 3 or op[0] != "s" or op[1].__class__ is not list \
                        or len(op[1]) != 1 or op[1][0].__class__ is not str or op[2].__class__ not in _SCALARS:
                    return False
        elif key not in DELTA_RUN_FIELDS or value.__class__ not in _SCALARS:
            return False
    variables = image.vars
    for key, value in delta.items():
        if key == "vars":
            for op in value:
                variables[op[1][0]] = op[2]
            image.touched([op[1][0] for op in value])
        else:
            image.run[key] = value
    stamp = doc.get("at")
    if isinstance(stamp, str):
        image.run["updated_at"] = stamp
    return True


def _is_list(table: ValueTable, vid: str) -> bool:
    """The stored value ``vid`` is a list (an ``$ext``, or a ``$val`` of a list, perhaps through references)."""
    seen: set[str] = set()
    while vid not in seen:
        seen.add(vid)
        node = table.node(vid)
        if node[0] == "ext" or isinstance(node[1], list):
            return True
        inner = node[1]
        if not (isinstance(inner, dict) and marker_kind(inner) == "ref" and inner[REF] in table):
            return False
        vid = inner[REF]
    return False


def _references(parts: list[Any]) -> list[tuple[str, bool]]:
    """The stored-value ids ``parts`` name (``{"$v": id}``, and the list a ``$ext`` extends, with
    ``True``), without following them into other records' definitions."""
    found: list[tuple[str, bool]] = []
    stack: list[Any] = list(parts)
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        kind = marker_kind(item)
        if kind == "ref":
            found.append((item[REF], False))
        elif kind == "ext":
            found.append((item[EXT], True))
            stack.append(item[ITEMS])
        elif kind == "val":
            stack.append(item[VAL])
        elif kind == "lit":
            stack.extend(item[LIT].values())
        elif kind is None:
            stack.extend(item.values())
    return found


__all__ = ["StateReplay"]
