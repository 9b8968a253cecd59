"""The hash chain: sealing records and verifying a sequence of them — pure functions.

Each record carries ``seq`` (1, 2, ...), ``prev_hash`` (the previous record's
``record_hash``; ``None`` — JSON ``null`` — for the first record) and ``record_hash`` =
SHA-256 of the canonical JSON of the record without ``record_hash`` and ``signature``
(:func:`abstractruntime.core.canonical.record_hash`). Editing, removing, inserting or
reordering any record breaks the chain from that point; what a bare chain cannot see (a
removed tail, a complete rewrite) is caught by the checkpoint, bookmarks, an expected head
or a signature — see :mod:`abstractruntime.storage.verify` and docs/provenance.md.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .canonical import canonical_json, check_size, record_hash, sha256_hex
from .models import StepRecord
from .ports import LedgerHead

GENESIS_PREV_HASH: Optional[str] = None
_NULL_SIGNATURE_TAIL = b',"signature":null}'


def seal_record(record: StepRecord, *, head: LedgerHead) -> dict[str, Any]:
    """The stored form of ``record`` appended after ``head``: format, seq and hashes filled in.

    Also writes ``seq``/``prev_hash``/``record_hash`` back onto ``record`` (as upstream did).
    """
    doc, _line = seal_record_line(record, head=head)
    return doc


def seal_record_line(record: StepRecord, *, head: LedgerHead, chained: bool = True) -> tuple[dict[str, Any], bytes]:
    """Like :func:`seal_record`, also returning the stored line (without its newline).

    The line is the canonical JSON of the hashed body with ``record_hash`` and ``signature``
    appended at the end, so the body is serialised once; readers re-derive the hash from the
    parsed object, so the key order of the line itself does not matter. ``chained=False``
    (a ledger without a chain, as upstream's in-memory store) fills ``seq`` only.
    """
    record.seq = head.seq + 1
    record.prev_hash = head.head_hash if chained else None
    record.record_hash, record.signature = None, None
    doc = record.to_dict()
    del doc["record_hash"], doc["signature"]
    if record.format >= 3:  # hashed as format 3 is: RFC 8785
        from .jcs import jcs

        body = jcs(doc)
    else:
        body = canonical_json(doc)
    if chained:
        digest: Optional[str] = sha256_hex(body)
        line = body[:-1] + b',"record_hash":"' + str(digest).encode("ascii") + b'"' + _NULL_SIGNATURE_TAIL
    else:
        digest = None
        line = body[:-1] + b',"record_hash":null' + _NULL_SIGNATURE_TAIL
    doc["record_hash"], doc["signature"] = digest, None
    record.record_hash = digest
    return doc, line


def seal_batch(records: Sequence[StepRecord], *, head: LedgerHead) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Seal ``records`` one after another from ``head``: their stored forms and lines.

    Each line is checked against the record size limit (:class:`PayloadTooLargeError` before
    anything is returned, so a store writes all of the batch or none of it).
    """
    docs: list[dict[str, Any]] = []
    lines: list[bytes] = []
    for record in records:
        doc, line = seal_record_line(record, head=head)
        check_size(line, what=f"Ledger record for node {record.node_id!r}")
        head = LedgerHead(doc["seq"], doc["record_hash"])
        docs.append(doc)
        lines.append(line)
    return docs, lines


def attach_signature(doc: dict[str, Any], line: bytes, signature: dict[str, Any]) -> bytes:
    """Put ``signature`` on a sealed record (it is outside the hash) and return its new line."""
    if not line.endswith(_NULL_SIGNATURE_TAIL):
        raise ValueError("record line was not produced by seal_record_line")
    doc["signature"] = signature
    return line[: -len(b"null}")] + canonical_json(signature) + b"}"


def verify_ledger_chain(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Check the hash chain of ``records`` (oldest first).

    Returns ``{"ok", "count", "errors", "first_bad_index", "head_hash",
    "computed_head_hash"}``. Each error is ``{"index", "seq", "type", "message", ...}`` with
    ``type`` one of ``missing_record_hash``, ``record_hash_mismatch``,
    ``prev_hash_mismatch``, ``seq_mismatch``, ``not_an_object``. ``head_hash`` is the stored
    hash of the last record; ``computed_head_hash`` the hash recomputed for it.
    """
    errors: list[dict[str, Any]] = []
    prev_stored: Optional[str] = GENESIS_PREV_HASH
    computed: Optional[str] = None
    expander: Optional[Any] = None
    for index, rec in enumerate(records):
        if not isinstance(rec, dict):
            errors.append(_error(index, None, "not_an_object", "record is not a JSON object"))
            prev_stored = None
            continue
        stored = rec.get("stored")
        if isinstance(stored, dict) and stored.get("format") in (3, 4):
            # An expanded format-3 or format-4 record (LedgerStore.list): the hash covers the stored record,
            # and the expanded view must be exactly what the stored records expand to.
            from .records import Expander

            expander = expander or Expander(str(rec.get("run_id")))
            view = {k: v for k, v in rec.items() if k != "stored"}
            again = expander.push(stored)
            if view != {k: v for k, v in again.items() if k != "stored"}:
                errors.append(_error(index, rec.get("seq"), "record_hash_mismatch",
                                     "record content does not match its stored form and record_hash (edited?)"))
            rec = stored
        seq = rec.get("seq")
        if seq is not None and seq != index + 1:
            errors.append(_error(index, seq, "seq_mismatch", f"seq {seq} where {index + 1} was expected",
                                 expected_seq=index + 1))
        if rec.get("prev_hash") != prev_stored:
            errors.append(_error(index, seq, "prev_hash_mismatch",
                                 "prev_hash does not match the previous record's hash",
                                 expected_prev_hash=prev_stored, actual_prev_hash=rec.get("prev_hash")))
        stored = rec.get("record_hash")
        try:
            computed = record_hash(rec)
        except ValueError:
            computed = None
        if not stored:
            errors.append(_error(index, seq, "missing_record_hash", "record has no record_hash"))
        elif computed != stored:
            errors.append(_error(index, seq, "record_hash_mismatch",
                                 "record content does not match its record_hash (edited?)",
                                 stored=stored, computed=computed))
        prev_stored = stored
    return {
        "ok": not errors,
        "count": len(records),
        "errors": errors,
        "first_bad_index": errors[0]["index"] if errors else None,
        "head_hash": records[-1].get("record_hash") if records and isinstance(records[-1], dict) else None,
        "computed_head_hash": computed if records else None,
    }


def _error(index: int, seq: Any, kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"index": index, "seq": seq, "type": kind, "message": message, **extra}
