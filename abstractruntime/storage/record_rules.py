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

from dataclasses import field
from ..core.fastclass import dataclass
from typing import Any, Optional

from ..core.records import RECORD_FIELDS

COMMON_FIELDS = frozenset({
    "format", "run_id", "step_id", "node_id", "status", "kind", "effect", "result", "error", "started_at",
    "ended_at", "actor_id", "attempt", "idempotency_key", "seq", "prev_hash", "record_hash", "signature",
})
FIELDS_BY_FORMAT = {1: COMMON_FIELDS, 2: COMMON_FIELDS | {"effect_id", "delta", "next_node", "at"},
                    3: RECORD_FIELDS, 4: RECORD_FIELDS}
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
class SigningEvent:
    """A change of the key a run is signed with, as the ledger records it.

    ``kind``: ``rotate`` (``from_key`` hands over to ``key_id``, whose PEM is ``public_key``),
    ``adopt`` (``key_id`` takes over, vouching for records from ``from_seq`` it never signed), or
    ``implicit`` (a batch signed while no key was in force and nothing adopted it: a run begun
    without a key and signed by an earlier release, which adopted such runs silently).
    ``batch_seq``/``signature``: the signed record that closes the event's batch.
    """

    seq: int
    kind: str
    key_id: Optional[str]
    from_key: Optional[str] = None
    public_key: Optional[str] = None
    from_seq: Optional[int] = None
    batch_seq: Optional[int] = None
    signature: Optional[dict[str, Any]] = None


def signing_event(doc: dict[str, Any], seq: int) -> tuple[Optional[SigningEvent], Optional[str]]:
    """The event a ``signing`` record stands for, or why it is malformed."""
    result = doc.get("result")
    if not isinstance(result, dict) or len(result) != 1:
        return None, "a signing record's result is one of {\"rotate\": ...} or {\"adopt\": ...}"
    rotate, adopt = result.get("rotate"), result.get("adopt")
    if isinstance(rotate, dict) and all(isinstance(rotate.get(k), str) for k in ("from", "to", "public_key")):
        return SigningEvent(seq, "rotate", rotate["to"], from_key=rotate["from"], public_key=rotate["public_key"]), None
    from_seq = adopt.get("from_seq") if isinstance(adopt, dict) else None
    if isinstance(adopt, dict) and isinstance(adopt.get("key_id"), str) and isinstance(from_seq, int) \
            and not isinstance(from_seq, bool) and 1 <= from_seq <= seq:
        return SigningEvent(seq, "adopt", adopt["key_id"], from_seq=from_seq), None
    return None, "a rotation names {from, to, public_key}; an adoption {key_id, from_seq} (a seq up to its own)"


@dataclass
class SignatureTrail:
    """The signed records of a ledger as it is scanned, oldest first, and the key in force.

    The key in force starts as the one the run's first record declares (hashed, so a forger who
    strips every signature cannot strip it). Each signed record closes a batch: the batch must
    be signed by the key in force, except that an adoption in it is signed by the adopting key
    and a rotation by the key it hands over from; after the batch the rotation's new key, or the
    adopting key, is in force. What breaks these rules is listed in ``problems`` whatever key the
    auditor holds; whether the signatures are genuine is checked with keys, by ``verify``.
    """

    last: Optional[dict[str, Any]] = None
    last_seq: Optional[int] = None
    after_last: int = 0
    signed: int = 0
    first_unsigned_after: Optional[int] = None
    keys: set[str] = field(default_factory=set)
    declared: Optional[str] = None
    in_force: Optional[str] = None
    # The first key the ledger puts in force (declared, adopted, or signing implicitly).
    first_key: Optional[str] = None
    events: list[SigningEvent] = field(default_factory=list)
    # Signing records whose batch is not closed by a signature (yet).
    pending: list[SigningEvent] = field(default_factory=list)
    problems: list[tuple[str, str, Optional[int]]] = field(default_factory=list)
    # A record of format 2 or later was seen (format 1 kept its signature in run.json).
    modern: bool = False

    def see(self, doc: dict[str, Any], seq: Optional[int]) -> None:
        """Account for one record (its signature already found well formed or absent)."""
        if doc.get("format") != 1:
            self.modern = True
        result = doc.get("result")
        if doc.get("kind") == "start" and isinstance(result, dict) and isinstance(result.get("signing"), str) \
                and not self.signed and not self.events:
            self.declared = self.in_force = result["signing"]
            self.first_key = self.first_key or self.declared
        if doc.get("kind") == "signing" and seq is not None:
            event, problem = signing_event(doc, seq)
            if event is None:
                self.problems.append(("signing_record_malformed", f"seq {seq}: {problem}", seq))
            else:
                self.pending.append(event)
        signature = doc.get("signature")
        if isinstance(signature, dict):
            self._close(signature, seq)
            self.last, self.last_seq, self.after_last = signature, seq, 0
            self.first_unsigned_after = None
            self.signed += 1
            if isinstance(signature.get("key_id"), str):
                self.keys.add(signature["key_id"])
        elif self.last is not None:
            self.after_last += 1
            if self.first_unsigned_after is None:
                self.first_unsigned_after = seq

    def _close(self, signature: dict[str, Any], seq: Optional[int]) -> None:
        """A signed record ends a batch: check who signed it, then apply the batch's key changes."""
        signed_by = signature.get("key_id")
        key, required = self.in_force, None
        for event in self.pending:
            event.batch_seq, event.signature = seq, signature
            if event.kind == "adopt":
                if required is not None and required != event.key_id:
                    self.problems.append(("signature_not_in_force", f"seq {event.seq}: an adoption by key "
                                          f"{event.key_id} in a batch that key {required} must sign", event.seq))
                key = required = event.key_id
                continue
            if event.from_key != key:
                self.problems.append(("rotation_not_in_force", f"seq {event.seq}: a rotation from key "
                                      f"{event.from_key} to {event.key_id}, but the key in force there is {key}",
                                      event.seq))
            if required is not None and required != event.from_key:
                self.problems.append(("signature_not_in_force", f"seq {event.seq}: a rotation from key "
                                      f"{event.from_key} in a batch that key {required} must sign", event.seq))
            required, key = event.from_key, event.key_id
        if required is None and key is None:
            # Signed while no key was in force and nothing adopted the run: an earlier release's way.
            implicit = SigningEvent(seq or 0, "implicit", signed_by if isinstance(signed_by, str) else None,
                                    batch_seq=seq, signature=signature)
            self.pending.append(implicit)
            key = required = implicit.key_id
        elif required is None:
            required = key
        if signed_by != required:
            self.problems.append(("signature_not_in_force", f"the batch ending at seq {seq} is signed by key "
                                  f"{signed_by}, but the key in force there is {required} (no rotation signed by "
                                  "it hands the run over)", seq))
        self.first_key = self.first_key or required
        self.in_force = key
        self.events.extend(self.pending)
        self.pending = []
