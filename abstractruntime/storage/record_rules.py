"""What a ledger record may contain, and its batch signature — pure checks used by ``verify``.

A record's hashed body has a fixed set of fields per format; anything else in it was not
written by abstractruntime. ``signature`` sits outside the hash (so a batch can be signed in
the same write that appends it) and so is checked on its own: it is ``null`` or exactly the
signature document the format defines, naming the record it sits on —
``{"alg", "key_id", "seq", "head_hash", "sig"}`` with ``seq``/``head_hash`` equal to the
record's. Every durable batch of a signing writer ends with such a record, and a crash
cannot produce complete records after it: records after the last signed one are an append by
someone without the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..core.records import RECORD_FIELDS

COMMON_FIELDS = frozenset({
    "format", "run_id", "step_id", "node_id", "status", "kind", "effect", "result", "error", "started_at",
    "ended_at", "actor_id", "attempt", "idempotency_key", "seq", "prev_hash", "record_hash", "signature",
})
FIELDS_BY_FORMAT = {1: COMMON_FIELDS, 2: COMMON_FIELDS | {"effect_id", "delta", "next_node", "at"},
                    3: RECORD_FIELDS}
SIGNATURE_FIELDS = frozenset({"alg", "key_id", "seq", "head_hash", "sig"})


def unknown_fields(doc: dict[str, Any]) -> list[str]:
    """Fields a record of its format never has (sorted; empty for an unknown format)."""
    allowed = FIELDS_BY_FORMAT.get(doc.get("format"))  # type: ignore[arg-type]
    return sorted(k for k in doc if k not in allowed) if allowed is not None else []


def signature_problem(doc: dict[str, Any]) -> Optional[str]:
    """Why the record's ``signature`` is not one the format defines (``None`` when it is fine)."""
    signature = doc.get("signature")
    if signature is None:
        return None
    if not isinstance(signature, dict):
        return f"signature is a {type(signature).__name__}, not a signature document"
    if set(signature) != SIGNATURE_FIELDS:
        extra = sorted(set(signature) - SIGNATURE_FIELDS)
        missing = sorted(SIGNATURE_FIELDS - set(signature))
        return f"signature document has fields {extra} and lacks {missing}"
    if signature.get("seq") != doc.get("seq") or signature.get("head_hash") != doc.get("record_hash"):
        return (f"signature names seq {signature.get('seq')!r} / hash {signature.get('head_hash')!r}, "
                "not the record it sits on")
    return None


@dataclass
class SignatureTrail:
    """The signed records of a ledger as it is scanned, oldest first."""

    last: Optional[dict[str, Any]] = None
    last_seq: Optional[int] = None
    after_last: int = 0
    signed: int = 0
    first_unsigned_after: Optional[int] = None
    keys: set[str] = field(default_factory=set)
    # The key id the run's first record declares its batches are signed with (hashed, so a
    # forger who strips every signature cannot strip this).
    declared: Optional[str] = None

    def see(self, doc: dict[str, Any], seq: Optional[int]) -> None:
        """Account for one record (its signature already found well formed or absent)."""
        result = doc.get("result")
        if doc.get("kind") == "start" and isinstance(result, dict) and isinstance(result.get("signing"), str):
            self.declared = result["signing"]
        signature = doc.get("signature")
        if isinstance(signature, dict):
            self.last, self.last_seq, self.after_last = signature, seq, 0
            self.first_unsigned_after = None
            self.signed += 1
            if isinstance(signature.get("key_id"), str):
                self.keys.add(signature["key_id"])
        elif self.last is not None:
            self.after_last += 1
            if self.first_unsigned_after is None:
                self.first_unsigned_after = seq
