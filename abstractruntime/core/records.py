"""Ledger records (format 4, and format 3 read): sealing one into its line, and the expanded view ``list()`` returns.

A stored record omits every field whose value is its default (docs/file-format.md, "Fields"):
an effect's outcome names its effect by ``effect_id`` instead of repeating it, a positional
idempotency key is derived instead of written. :func:`seal` turns the fields into the record's
JCS line and hash. :func:`expand_records` gives the dicts upstream 0.0.1 code reads — every
field present, ``effect`` on every record of an effect, stored values resolved, secrets shown
redacted — from the stored records, in one pass.
"""

from __future__ import annotations

import bisect
import json
from typing import Any, Iterable, Optional

from .canonical import sha256_hex
from .errors import CorruptRecordError
from .ids import uuid5_text
from .jcs import MAX_SAFE_INTEGER, jcs
from .secret_values import shown_text
from .values import ValueTable
from .wal import implied_pending, positional_key, record_parts

RECORD_FORMAT = 4
# The formats whose records are RFC 8785 lines with default fields omitted and changes implied by
# their kind: 3, and 4 (a format-3 record whose effect outcome may leave its intent's next node
# implied, docs/file-format.md). Written as a tuple: ``x in JCS_FORMATS`` compares, never hashes,
# so a record whose ``format`` is a list or an object is simply not one of them.
JCS_FORMATS = (3, 4)

# The fields a format-3 or format-4 record may carry (anything else is `unknown_field` to verify).
RECORD_FIELDS = frozenset({
    "format", "seq", "kind", "status", "at", "prev_hash", "record_hash", "run_id", "node_id", "effect_id",
    "effect", "next_node", "attempt", "idempotency_key", "result", "error", "delta", "state", "signature", "ext",
})
HASH_EXCLUDED = ("record_hash", "signature")
_STEP_IDS = "6f1c1b5e-8a55-4b6e-9a7e-3b1f1d0c2a77"
_encode_string = json.encoder.encode_basestring


_KEYS: dict[str, bytes] = {}  # a field's name as its JCS member prefix, ``"seq":`` (few names: kept)


def _prefix(key: str) -> bytes:
    prefix = _KEYS.get(key)
    if prefix is None:
        prefix = _encode_string(key).encode("utf-8") + b":"
        if key in RECORD_FIELDS:
            _KEYS[key] = prefix
    return prefix


def _fragment(key: str, value: Any) -> bytes:
    prefix = _KEYS.get(key)
    if prefix is None:
        prefix = _prefix(key)
    # Most fields are plain scalars, written here as jcs writes them; the rest goes through jcs
    # (containers, floats, big integers, and a string that is not valid Unicode, which it refuses).
    cls = value.__class__
    if cls is str:
        try:
            return prefix + _encode_string(value).encode("utf-8")
        except UnicodeEncodeError:
            pass
    elif cls is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return prefix + str(value).encode("ascii")
    elif value is None:
        return prefix + b"null"
    return prefix + jcs(value, root=key)


def seal(fields: dict[str, Any], *, chained: bool = True) -> tuple[dict[str, Any], bytes]:
    """The stored record and its line (without newline) for ``fields`` (no ``record_hash``/``signature``).

    The hash is taken over the JCS form of ``fields``; the line is the JCS form of the record with
    its ``record_hash`` — each field is encoded once and the two are assembled from the pieces.
    """
    doc, line, _ = seal_pieces(fields, chained=chained)
    return doc, line


def seal_pieces(fields: dict[str, Any], *, chained: bool = True,
                encoded: Optional[dict[str, bytes]] = None) -> tuple[dict[str, Any], bytes, dict[str, bytes]]:
    """:func:`seal`, also returning each field's encoded member (``"name":value``), so a field
    added later (:func:`reseal`) costs its own encoding and one hash, not the whole record's.

    ``encoded`` gives the JCS bytes of some fields' values, already made (they must be exactly
    ``jcs(fields[name])``): those are not encoded again.
    """
    pieces = {key: _fragment(key, value) for key, value in fields.items()} if not encoded else \
        {key: _fragment(key, value) if key not in encoded else _prefix(key) + encoded[key]
         for key, value in fields.items()}
    doc, line = _assemble(fields, pieces, chained)
    return doc, line, pieces


def reseal(fields: dict[str, Any], pieces: dict[str, bytes], key: str, value: Any, *,
           chained: bool = True) -> tuple[dict[str, Any], dict[str, Any], bytes, dict[str, bytes]]:
    """The record ``fields`` sealed again with ``key`` set to ``value``: the new fields, record,
    line and pieces — byte for byte what :func:`seal` gives for the new fields (the other
    members are reused as they were encoded; the hash is taken again over all of them)."""
    fields = dict(fields)
    fields[key] = value
    pieces = dict(pieces)
    pieces[key] = _fragment(key, value)
    doc, line = _assemble(fields, pieces, chained)
    return fields, doc, line, pieces


def _assemble(fields: dict[str, Any], pieces: dict[str, bytes], chained: bool) -> tuple[dict[str, Any], bytes]:
    order = sorted(pieces)  # every field name is ASCII: code-point order is JCS's order
    members = [pieces[k] for k in order]
    body = b"{" + b",".join(members) + b"}"
    digest = sha256_hex(body) if chained else None
    members.insert(bisect.bisect(order, "record_hash"), _fragment("record_hash", digest))
    line = b"{" + b",".join(members) + b"}"
    doc = dict(fields)
    doc["record_hash"] = digest
    return doc, line


def with_signature(doc: dict[str, Any], signature: dict[str, Any]) -> bytes:
    """The line of ``doc`` (already sealed) carrying ``signature`` (outside the hash)."""
    doc["signature"] = signature
    return jcs(doc)


def hashed_body(doc: dict[str, Any]) -> dict[str, Any]:
    """What a format-3 or format-4 record's hash covers: the record without ``record_hash`` and ``signature``."""
    return {k: v for k, v in doc.items() if k not in HASH_EXCLUDED}


def record_hash3(doc: dict[str, Any]) -> str:
    """The hash a format-3 or format-4 record must carry."""
    return sha256_hex(jcs(hashed_body(doc)))


def step_id(run_id: str, seq: int) -> str:
    """The stable ``step_id`` the expanded view gives record ``seq`` of a run."""
    return uuid5_text(_STEP_IDS, f"{run_id}/{seq}")


class Expander:
    """Expands one run's stored records in order (the view :func:`expand_records` returns)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._table = ValueTable()
        self._cache: dict[str, Any] = {}
        self._pending: Optional[dict[str, Any]] = None
        self._actor: Optional[str] = None
        self._count = 0

    def push(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The expanded form of the run's next stored record (older formats as they are).

        :class:`CorruptRecordError` for a record whose stored values or markers are malformed.
        """
        self._count += 1
        if doc.get("format") not in JCS_FORMATS:
            delta = doc.get("delta")
            if isinstance(delta, dict) and "pending" in delta:
                self._pending = _pending_of(delta)
            return doc
        try:
            return self._expand(doc)
        except ValueError as exc:  # a marker in no valid shape, a value id that is not one
            raise CorruptRecordError(f"run {self.run_id}: record {self._count} of the ledger cannot be read: {exc}") from None

    def _expand(self, doc: dict[str, Any]) -> dict[str, Any]:
        run_id, table, pending = self.run_id, self._table, self._pending
        stated = doc.get("seq")
        seq = stated if isinstance(stated, int) and not isinstance(stated, bool) and stated > 0 else self._count
        for part in record_parts(doc):
            table.collect(part, seq)
        delta = doc.get("delta") or {}
        if isinstance(delta, dict) and "actor_id" in delta:
            self._actor = delta["actor_id"]
        effect_id = doc.get("effect_id")
        same = pending is not None and effect_id is not None and pending.get("effect_id") == effect_id
        base = pending if same and pending is not None else {}
        effect = doc.get("effect", base.get("effect"))
        key = doc.get("idempotency_key") or base.get("idempotency_key")
        if key is None and isinstance(effect_id, int) and effect is not None:
            key = positional_key(run_id, effect_id)
        at = doc.get("at")
        started = doc.get("kind") == "effect" and doc.get("status") == "started"

        def shown(value: Any) -> Any:
            return table.resolve(value, shown_text, self._cache) if value is not None else None

        expanded = {
            "format": doc.get("format"), "run_id": doc.get("run_id", run_id), "step_id": step_id(run_id, seq),
            "node_id": doc.get("node_id", base.get("node_id")), "status": doc.get("status"), "kind": doc.get("kind"),
            "effect": shown(effect), "result": shown(doc.get("result")), "error": doc.get("error"),
            "started_at": at, "ended_at": None if started else at, "actor_id": self._actor,
            "attempt": doc.get("attempt", 1 if started or not same else base.get("attempt", 1)),
            "idempotency_key": key, "seq": seq, "effect_id": effect_id, "delta": shown(doc.get("delta")),
            "prev_hash": doc.get("prev_hash"), "record_hash": doc.get("record_hash"),
            "signature": doc.get("signature"), "at": at, "stored": doc,
        }
        for extra in ("next_node", "state", "ext"):
            if extra in doc:
                expanded[extra] = doc[extra]
        try:
            self._pending = implied_pending(pending, doc, run_id)
        except ValueError:
            self._pending = None
        if isinstance(delta, dict) and "pending" in delta:
            self._pending = _pending_of(delta)
        return expanded


def _pending_of(delta: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The pending effect a delta sets (one that is no object is none: the view shows, ``verify`` judges)."""
    pending = delta["pending"]
    return pending if isinstance(pending, dict) else None


def expand_records(docs: Iterable[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """Every record as upstream 0.0.1 code reads it (older formats are passed through as stored).

    Each carries the record as stored under ``"stored"`` (what the hash covers). Resolved values
    are shared between the dicts returned (this is a view): copy before changing one.
    """
    expander = Expander(run_id)
    return [expander.push(doc) for doc in docs]


__all__ = ["Expander", "HASH_EXCLUDED", "JCS_FORMATS", "RECORD_FIELDS", "RECORD_FORMAT", "expand_records", "hashed_body",
           "record_hash3", "reseal", "seal", "seal_pieces", "step_id", "with_signature"]
