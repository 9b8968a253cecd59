"""How every snapshot store filters and orders a listing, so the backends agree on it."""

from __future__ import annotations

from typing import Iterable, Optional

from ..core.clock import parse_iso
from ..core.errors import InvalidInputError
from ..core.snapshot import Snapshot


def select_snapshots(snapshots: Iterable[Snapshot], *, run_id: Optional[str] = None, tag: Optional[str] = None,
                     query: Optional[str] = None, limit: Optional[int] = 100) -> list[Snapshot]:
    """Filter and order snapshots with the :class:`SnapshotStore` ``list`` semantics.

    Empty ``run_id``/``tag``/``query`` mean "no filter". Timestamps are compared as
    datetimes, not text, so mixed offsets order correctly.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise InvalidInputError(f"limit must be a non-negative integer or None, not {limit!r}")
    wanted_tag = tag.casefold() if tag else None
    needle = query.casefold() if query else None
    matches = []
    for snap in snapshots:
        if run_id and snap.run_id != run_id:
            continue
        if wanted_tag is not None and all(t.casefold() != wanted_tag for t in snap.tags):
            continue
        if needle is not None and needle not in snap.name.casefold() \
                and needle not in (snap.description or "").casefold():
            continue
        matches.append(snap)
    matches.sort(key=lambda s: s.snapshot_id)
    matches.sort(key=lambda s: parse_iso(s.created_at), reverse=True)  # stable: ties keep id order
    return matches if limit is None else matches[:limit]


__all__ = ["select_snapshots"]
