"""Reading ``ledger.jsonl``: parsing, chain checks and torn-tail detection — pure functions.

A ledger file is one canonical-JSON record per line, each newline-terminated. When a crash
interrupts an append, the file may end in a partial line (no newline) or, after power loss,
in a line of garbage; that *torn tail* held nothing durable (the write had not been fsynced
and the checkpoint never referred to it), so a writer truncates it and a reader ignores it,
both with a warning. Anything wrong before the tail is corruption: an error naming the file
and the line.
"""

from __future__ import annotations

from dataclasses import field
from ..core.fastclass import dataclass
from typing import Any, Optional

from ..core.canonical import record_hash
from ..core.errors import CorruptRecordError
from ..core.models import StepStatus
from ..core.records import JCS_FORMATS, RECORD_FORMAT
from .base import LedgerHead
from .fsio import brief_error, check_format, loads_strict


@dataclass
class ParsedLedger:
    """What :func:`parse_ledger` found in a byte range of a ledger file."""

    records: list[dict[str, Any]] = field(default_factory=list)
    head: LedgerHead = field(default_factory=LedgerHead)
    # Byte offset just past the last good line (where the next append belongs).
    valid_end: int = 0
    # Bytes after valid_end that form a torn tail (0 when the file ends cleanly).
    torn_bytes: int = 0
    # idempotency_key -> byte offset of the first COMPLETED record with that key.
    completed_offsets: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    # effect_id -> the key an intent named (format 3 outcomes take their key from their intent).
    intent_keys: dict[int, str] = field(default_factory=dict)


def parse_ledger(
    data: bytes,
    *,
    path: str,
    start_offset: int = 0,
    start_line: int = 0,
    head: LedgerHead = LedgerHead(),
    verify_chain: bool = True,
    keep_records: bool = True,
    run_id: Optional[str] = None,
    until_seq: Optional[int] = None,
    intent_keys: Optional[dict[int, str]] = None,
) -> ParsedLedger:
    """Parse ``data`` (the file's bytes from ``start_offset``) continuing after ``head``.

    With ``verify_chain`` every record's hash, ``seq`` and ``prev_hash`` are checked (the
    writer's view: it refuses to extend a broken chain); without it only the JSON is
    checked (readers that must still show a tampered ledger). ``until_seq`` stops after that
    record (point-in-time reads). Raises
    :class:`CorruptRecordError` with the 1-based line number on any bad line before the tail.
    """
    result = ParsedLedger(head=head, valid_end=start_offset, lines=start_line,
                          intent_keys=dict(intent_keys) if intent_keys else {})
    pos = 0
    size = len(data)
    while pos < size:
        if until_seq is not None and result.head.seq >= until_seq:
            break  # the caller wants the records up to until_seq only
        newline = data.find(b"\n", pos)
        line_no = result.lines + 1
        if newline == -1:
            result.torn_bytes = size - pos
            break
        raw = data[pos:newline]
        try:
            doc = _parse_line(raw, path=path, line_no=line_no)
            if verify_chain:
                _check_link(doc, result.head, path=path, line_no=line_no, run_id=run_id)
        except CorruptRecordError:
            if data.find(b"\n", newline + 1) == -1 and not data[newline + 1:].strip() and looks_torn(raw):
                # The last line is unparsable garbage (e.g. zero-filled blocks after power
                # loss): a torn tail, not tampering.
                result.torn_bytes = size - pos
                break
            raise
        offset = start_offset + pos
        seq = doc.get("seq")
        if seq is not None and (type(seq) is not int or seq < 1):
            # Readers take a record's position from it: anything but a positive integer is damage.
            raise CorruptRecordError("seq is not a positive integer", path=path, line=line_no)
        result.head = LedgerHead(seq=seq if isinstance(seq, int) else result.head.seq + 1,
                                 head_hash=doc.get("record_hash"))
        key = doc.get("idempotency_key")
        if key is not None and not isinstance(key, str):
            raise CorruptRecordError("idempotency_key is not a string", path=path, line=line_no)
        effect_id = doc.get("effect_id")
        if doc.get("format") in JCS_FORMATS and isinstance(effect_id, int):
            if key and doc.get("status") == StepStatus.STARTED.value:
                result.intent_keys[effect_id] = key
            elif key is None and doc.get("kind") == "effect":
                key = result.intent_keys.get(effect_id)
        if key and doc.get("status") == StepStatus.COMPLETED.value and key not in result.completed_offsets:
            result.completed_offsets[key] = offset
        if keep_records:
            result.records.append(doc)
        result.lines = line_no
        pos = newline + 1
        result.valid_end = start_offset + pos
    return result


def looks_torn(raw: bytes) -> bool:
    """A line that is not even JSON text (NUL bytes, invalid UTF-8, an unterminated object):
    an interrupted write, not an edit. The writer's parser and ``verify``'s scan both ask this."""
    if b"\x00" in raw:
        return True
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    stripped = text.strip()
    return not (stripped.startswith("{") and stripped.endswith("}"))


def _parse_line(raw: bytes, *, path: str, line_no: int) -> dict[str, Any]:
    try:
        doc = loads_strict(raw)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"ledger line is not valid JSON ({brief_error(exc, 100)})", path=path, line=line_no) from exc
    if not isinstance(doc, dict):
        raise CorruptRecordError("ledger line is not a JSON object", path=path, line=line_no)
    check_format(doc.get("format"), RECORD_FORMAT, path=f"{path}:{line_no}", kind="ledger record")
    return doc


def _check_link(doc: dict[str, Any], head: LedgerHead, *, path: str, line_no: int, run_id: Optional[str]) -> None:
    if doc.get("seq") != head.seq + 1:
        raise CorruptRecordError(f"seq {doc.get('seq')!r} where {head.seq + 1} was expected", path=path, line=line_no)
    if doc.get("prev_hash") != head.head_hash:
        raise CorruptRecordError("prev_hash does not match the previous record", path=path, line=line_no)
    if run_id is not None and doc.get("run_id", run_id if doc.get("format") in JCS_FORMATS else None) != run_id:
        raise CorruptRecordError(f"record belongs to run {doc.get('run_id')!r}", path=path, line=line_no)
    try:
        digest = record_hash(doc)
    except ValueError as exc:
        raise CorruptRecordError(f"record cannot be hashed ({brief_error(exc, 100)})", path=path, line=line_no) from exc
    if digest != doc.get("record_hash"):
        raise CorruptRecordError("record does not match its record_hash", path=path, line=line_no)
