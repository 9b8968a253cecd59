"""Lists a report has shown already are not shown again: an agent's conversation, once.

A ledger stores an agent's conversation once, each turn adding its new messages; the records
``list()`` returns show it whole in every model call and every delta that sets it. Drawn as
they are, the page of an n-turn run would hold n conversations (about 60 MB at 200 turns).
:func:`abbreviate` rewrites, for the page only, every list of at least :data:`MIN_ITEMS`
items that equals or extends a list an earlier row (or an earlier field of the same row)
showed: its known part becomes one line naming that row, followed by the new items. The ledger
and ``abstractruntime ledger show`` keep every record whole.
"""

from __future__ import annotations

import re
from typing import Any, Optional

# Shorter lists are shown whole: repeating them costs little and reads better.
MIN_ITEMS = 8
# How many of the lists shown last are compared with a new one (longest first).
CANDIDATES = 4
# Record fields that never hold a list worth comparing.
_SKIP = frozenset({"seq", "format", "prev_hash", "record_hash", "signature", "started_at", "ended_at", "attempt",
                   "status", "kind", "step_id", "idempotency_key", "run_id", "node_id", "actor_id", "at"})


_PLACEHOLDER = re.compile(r"… (\d+) items? as shown at seq \S+ …")


def placeholder(count: int, seq: Any) -> str:
    """The line standing for ``count`` items a row showed at ``seq``."""
    return f"… {count} item{'s' if count != 1 else ''} as shown at seq {seq} …"


def items_in(value: list[Any]) -> int:
    """How many items an abbreviated list stands for (its placeholder counts its items)."""
    first = value[0] if value else None
    found = _PLACEHOLDER.fullmatch(first) if isinstance(first, str) else None
    return len(value) - 1 + int(found.group(1)) if found else len(value)


class _Shown:
    """The long lists shown so far (the last few), with the seq of the row that showed each."""

    def __init__(self) -> None:
        self.lists: list[tuple[list[Any], Any]] = []

    def match(self, value: list[Any]) -> Optional[tuple[int, Any]]:
        """The longest shown list ``value`` starts with: (its length, its seq)."""
        size = len(value)
        for shown, seq in sorted(self.lists, key=lambda entry: -len(entry[0])):
            n = len(shown)
            # The last item first: a different conversation is refused without comparing it all.
            if n <= size and shown[n - 1] == value[n - 1] and shown == value[:n]:
                return n, seq
        return None

    def add(self, value: list[Any], seq: Any) -> None:
        self.lists = [entry for entry in self.lists if entry[0] is not value][-(CANDIDATES - 1):]
        self.lists.append((value, seq))


def abbreviate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with every long list an earlier row showed reduced to a line and its new items.

    Records are not changed in place (``list()`` may share objects between them); a record
    whose effect is the effect an earlier row showed (an outcome of its intent) gets the same
    abbreviated effect, so the page still shows it once.
    """
    shown = _Shown()
    effects: dict[Any, tuple[Any, Any]] = {}  # effect_id -> (the effect as listed, as abbreviated)
    out: list[dict[str, Any]] = []
    for rec in records:
        seq = rec.get("seq")
        new: Optional[dict[str, Any]] = None
        for key, value in rec.items():
            if key in _SKIP or not isinstance(value, (dict, list)):
                continue
            if key == "effect" and rec.get("effect_id") is not None:
                known = effects.get(rec.get("effect_id"))
                if known is not None and (known[0] is value or known[0] == value):
                    short = known[1]
                else:
                    short = _walk(value, shown, seq)
                    effects[rec.get("effect_id")] = (value, short)
            else:
                short = _walk(value, shown, seq)
            if short is not value:
                if new is None:
                    new = dict(rec)
                new[key] = short
        out.append(new if new is not None else rec)
    return out


def _walk(value: Any, shown: _Shown, seq: Any) -> Any:
    if isinstance(value, dict):
        changed = {}
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                short = _walk(item, shown, seq)
                if short is not item:
                    changed[key] = short
        return {**value, **changed} if changed else value
    if not isinstance(value, list):
        return value
    known = shown.match(value) if len(value) >= MIN_ITEMS else None
    start = known[0] if known is not None else 0
    tail = [_walk(item, shown, seq) if isinstance(item, (dict, list)) else item for item in value[start:]]
    if len(value) >= MIN_ITEMS:
        shown.add(value, seq)
    if known is not None:
        return [placeholder(known[0], known[1]), *tail]
    return tail if any(a is not b for a, b in zip(tail, value)) else value


__all__ = ["CANDIDATES", "MIN_ITEMS", "abbreviate", "items_in", "placeholder"]
