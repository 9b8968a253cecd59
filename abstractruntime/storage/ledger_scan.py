"""One tolerant, streaming, read-only pass over a ledger file, for :mod:`.verify`.

Unlike the writer's parser (:mod:`.ledger_parse`), which stops at the first bad line, this
scan reports every problem it meets (with its seq and 1-based line) into a
:class:`~abstractruntime.storage.verify.VerifyReport` and carries on: after a line that is not
a record it re-synchronises on the next record instead of reporting a cascade. It keeps only
what the caller asked for (hashes at some seqs, the seq of some hashes), so memory does not
grow with the ledger, and it collects the evidence for a rolled-back checkpoint.

:func:`scan_runs_dir` lists what ``verify --all`` must check: the runs, and the entries of
``runs/`` that are not runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..core.canonical import record_hash
from ..core.errors import InvalidInputError, StorageError
from ..core.jcs import is_jcs_line
from ..core.records import JCS_FORMATS, RECORD_FORMAT
from .record_rules import FIELDS_BY_FORMAT, SignatureTrail, signature_problem, unknown_fields
from .fsio import brief_error, loads_strict, validate_id
from .ledger_parse import looks_torn
from .verify_lines import canonical_record
from .segments import SEGMENT_KIND, Parts
from .verify_state import StateReplay

if TYPE_CHECKING:
    from .verify_report import VerifyReport

_FINISHED = ("completed", "failed", "waiting")


def int_or_none(value: Any) -> Optional[int]:
    """``value`` if it is an int (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class LedgerScan:
    """One streaming pass over ``ledger.jsonl``: chain checks plus the lookups the caller needs."""

    def __init__(self, report: VerifyReport, *, want_seqs: set[int], want_hashes: set[str],
                 committed_seq: Optional[int]) -> None:
        self.report = report
        self.want_seqs, self.want_hashes = want_seqs, want_hashes
        self.committed_seq = committed_seq
        self.at_seq: dict[int, tuple[Optional[str], int]] = {}
        self.hash_at: dict[str, tuple[Optional[int], int]] = {}
        # True while every record read is a start record (a start retried after crashes).
        self.only_starts = True
        self.exists = False
        # Effect intents after the checkpoint, and the first proof that one was checkpointed.
        self.intents: dict[str, int] = {}
        self.witness: Optional[tuple[int, int, int]] = None
        self.replayable = False
        self.workflow: Any = None
        self.workflow_in_chain = False
        self.workflow_set = False  # a record's delta named the workflow (``workflow`` may be None)
        self.signatures = SignatureTrail()
        self.replay = StateReplay(report.run_id)
        # seq -> the "state" digest its record carries (for the seqs the caller wants).
        self.state_at: dict[int, Optional[str]] = {}
        self._prev_hash: Optional[str] = None
        self._prev_seq, self._resync = 0, False
        self._sealed = False
        self._last_doc: Optional[dict[str, Any]] = None
        self._file_segments: list[dict[str, Any]] = []

    def run_parts(self, parts: Parts) -> None:
        """Scan a ledger stored as sealed segments then ``ledger.jsonl``, as one chain, checking
        that each segment is numbered in order, whole, and closed by its ``segment`` record."""
        report = self.report
        for name in parts.strays:
            report.problem("segment_stray", f"segments/{name} is not a segment file name (renamed?)", file=name)
        for index, part in enumerate(parts.sealed, start=1):
            if part.number != index:
                report.problem("segment_missing", f"segment {index} is missing: the next file is "
                               f"segments/{part.path.name} (deleted or renamed?)", segment=index)
            count, start_hash = report.count, self._prev_hash
            self._file_segments = []
            self.run(part.path, sealed=True)
            closing = self._file_segments[-1] if self._file_segments else None
            result = closing.get("result") if closing is not None else None
            if closing is None or closing is not self._last_doc or not isinstance(result, dict):
                report.problem("segment_unsealed", f"segments/{part.path.name} does not end with the segment "
                               "record that closes it (truncated or edited?)", segment=part.number)
            elif (result.get("segment"), result.get("count"), result.get("head_hash")) != (
                    part.number, report.count - count, start_hash):
                report.problem("segment_mismatch", f"segments/{part.path.name} holds {report.count - count} records "
                               f"after {start_hash!r}, its segment record says segment {result.get('segment')!r}, "
                               f"{result.get('count')!r} records after {result.get('head_hash')!r} (renamed, "
                               "reordered or cut?)", segment=part.number)
            for doc in self._file_segments[:-1]:
                report.problem("segment_misplaced", "a segment record in the middle of a segment",
                               seq=doc.get("seq"))
        if parts.tail is not None:
            self._file_segments = []
            self.run(parts.tail.path)
            for doc in self._file_segments:
                if doc is self._last_doc:
                    report.note("segment_pending", "ledger.jsonl ends with a segment record not yet renamed "
                                "into segments/ (the next writer does it)", seq=doc.get("seq"))
                else:
                    report.problem("segment_misplaced", "a segment record in the middle of ledger.jsonl",
                                   seq=doc.get("seq"))

    def run(self, path: Path, *, sealed: bool = False) -> None:
        """Scan the file at ``path`` (a missing file is an empty ledger; ``exists`` tells which);
        ``sealed``: a sealed segment, where a torn last line is damage, not an interrupted append."""
        report = self.report
        self._sealed = sealed
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        except OSError as exc:
            report.problem("unreadable_ledger", f"cannot read {path}: {exc.strerror or exc}")
            return
        self.exists = True
        try:
            with os.fdopen(fd, "rb") as handle:
                pending: Optional[tuple[int, bytes]] = None
                for line_no, raw in enumerate(handle, start=report.lines + 1):
                    if pending is not None:
                        if pending[1].endswith(b"\n"):
                            self._body(pending[0], pending[1][:-1])
                        else:
                            self._line(*pending, last=False)
                    pending = (line_no, raw)
                if pending is not None:
                    self._line(*pending, last=True)
        except OSError as exc:
            report.problem("unreadable_ledger", f"error while reading {path}: {exc.strerror or exc}")

    def _body(self, line_no: int, body: bytes) -> None:
        """One whole line (``body``: without its newline) that is not the file's last."""
        fast = canonical_record(body)
        if fast is None:
            self._line(line_no, body + b"\n", last=False)
        else:
            self.report.lines = line_no
            self._record(fast[0], line_no, computed=fast[1], markers=b'"$' in body)

    def _line(self, line_no: int, raw: bytes, *, last: bool) -> None:
        report = self.report
        if not raw.endswith(b"\n") and self._sealed:
            report.problem("segment_truncated", "a sealed segment ends without a newline (truncated?)", line=line_no)
            return
        if not raw.endswith(b"\n"):
            report.note("torn_tail", f"the file ends in {len(raw)} bytes without a newline (an interrupted "
                        "append; the next writer truncates it)", line=line_no, bytes=len(raw))
            return
        report.lines = line_no
        body = raw[:-1]
        fast = canonical_record(body)
        if fast is not None:  # the common case, decided with one parse (verify_lines.py says why it is exact)
            self._record(fast[0], line_no, computed=fast[1], markers=b'"$' in body)
            return
        try:
            doc = loads_strict(body)
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            if last and looks_torn(body):
                report.note("torn_tail", f"the last line is not JSON text ({len(raw)} bytes; an interrupted "
                            "append; the next writer truncates it)", line=line_no, bytes=len(raw))
                return
            report.problem("invalid_json", f"line {line_no} is not valid JSON ({brief_error(exc, 100)})", line=line_no)
            self._resync = self.replay.stopped = True
            return
        if not isinstance(doc, dict):
            report.problem("invalid_json", f"line {line_no} is not a JSON object", line=line_no)
            self._resync = self.replay.stopped = True
            return
        fmt: Any = doc.get("format")
        if int_or_none(fmt) is None or fmt < 1:
            report.problem("invalid_record", "record has no valid integer 'format'", seq=doc.get("seq"),
                           line=line_no)
        elif fmt > RECORD_FORMAT:
            report.problem("unsupported_format", f"record format {fmt} is newer than this abstractruntime "
                           f"understands ({RECORD_FORMAT}); upgrade abstractruntime",
                           seq=doc.get("seq"), line=line_no)
            self._resync = self.replay.stopped = True
            return
        if fmt in JCS_FORMATS and not is_jcs_line(body, doc):
            report.problem("not_canonical", f"a format-{fmt} line is not the RFC 8785 form of its own content "
                           "(rewritten by another program?)", seq=doc.get("seq"), line=line_no)
        self._record(doc, line_no)

    def _record(self, doc: dict[str, Any], line_no: int, *, computed: Optional[str] = None,
                markers: bool = True) -> None:
        """Check one parsed record; ``computed``: its content hash when already known, ``markers``:
        False when its line holds no ``"$`` (so no stored-value or secret marker)."""
        report = self.report
        problems_before = len(report.problems) + report.problems_omitted
        raw_seq = doc.get("seq")
        seq = raw_seq if raw_seq.__class__ is int else int_or_none(raw_seq)
        kind = doc.get("kind")
        expected = self._prev_seq + 1
        if not self._resync:  # after an unreadable line the link cannot be judged; it is already reported
            if seq != expected:
                hint = (" (records missing or out of order?)" if seq is not None and seq > expected
                        else " (records repeated or out of order?)" if seq is not None else "")
                report.problem("seq_mismatch", f"seq {doc.get('seq')!r} where {expected} was expected{hint}",
                               seq=doc.get("seq"), line=line_no, expected_seq=expected)
            if doc.get("prev_hash") != self._prev_hash:
                message = ("the first record's prev_hash must be null (genesis)" if self._prev_seq == 0
                           and self._prev_hash is None else
                           "prev_hash does not match the previous record's record_hash "
                           "(records removed, inserted, reordered or re-hashed?)")
                report.problem("prev_hash_mismatch", message, seq=seq, line=line_no,
                               expected=self._prev_hash, actual=doc.get("prev_hash"))
        implied_run = report.run_id if doc.get("format") in JCS_FORMATS and seq != 1 else None
        if doc.get("run_id", implied_run) != report.run_id:
            report.problem("wrong_run", f"record belongs to run {doc.get('run_id')!r}", seq=seq, line=line_no)
        stored: Optional[str] = doc.get("record_hash")
        if computed is None:
            try:
                computed = record_hash(doc)
            except InvalidInputError:
                computed = None
        if not isinstance(stored, str) or not stored:
            report.problem("missing_record_hash", "record has no record_hash", seq=seq, line=line_no)
            stored = None
        elif computed != stored:
            report.problem("record_hash_mismatch", "record content does not match its record_hash (edited?)",
                           seq=seq, line=line_no, stored=stored, computed=computed)
        self._resync = False
        self._prev_seq, self._prev_hash = (seq if seq is not None else expected), stored
        self._last_doc = doc
        if kind == SEGMENT_KIND:
            self._file_segments.append(doc)
        report.count += 1
        report.head_seq, report.head_hash = self._prev_seq, stored
        if kind != "start":
            self.only_starts = False
        if seq in self.want_seqs and seq not in self.at_seq:
            self.at_seq[seq] = (stored, line_no)
            self.state_at[seq] = doc.get("state")
        if len(report.problems) + report.problems_omitted > problems_before:
            # The chain is broken here: what follows is not the run's history, so its states are not
            # judged (each would be a cascade of the problem already reported).
            self.replay.stopped = True
        found = self.replay.see(doc, seq if seq is not None else expected, markers=markers)
        if found is not None:
            report.problem(found[0], found[1], seq=seq, line=line_no)
        if stored in self.want_hashes and stored not in self.hash_at:
            self.hash_at[stored] = (seq, line_no)
        delta = doc.get("delta")
        if isinstance(delta, dict):
            self.replayable = True  # format 2: the ledger alone rebuilds the run
            if seq == 1:
                self.workflow_in_chain = True  # the first record names the run's workflow
            if "workflow" in delta:
                self.workflow = delta["workflow"]  # the workflow record as the chain has it
                self.workflow_set = True
        fields = FIELDS_BY_FORMAT.get(doc.get("format"))  # type: ignore[arg-type]
        extra = unknown_fields(doc) if fields is not None and not doc.keys() <= fields else None
        if extra:
            report.problem("unknown_field", f"record has fields its format never has: {', '.join(extra)}",
                           seq=seq, line=line_no, fields=extra)
        bad_signature = signature_problem(doc) if "signature" in doc else None
        if bad_signature is not None:
            report.problem("signature_malformed", bad_signature, seq=seq, line=line_no)
        else:
            self.signatures.see(doc, seq)
        self._track_commit_witness(doc, seq, line_no)

    def _track_commit_witness(self, doc: dict[str, Any], seq: Optional[int], line_no: int) -> None:
        # The runtime calls an effect handler only after checkpointing the effect's first intent
        # (Runtime._attempt: record, commit, then call). A result for an intent that lies after
        # the checkpoint therefore proves a newer checkpoint existed: this one was rolled back.
        if self.committed_seq is None or seq is None or seq <= self.committed_seq or self.witness:
            return
        step_id, status = doc.get("step_id"), doc.get("status")
        if not isinstance(step_id, str):
            return
        if doc.get("kind") == "effect" and status == "started" and doc.get("attempt") == 1:
            self.intents.setdefault(step_id, seq)
        elif status in _FINISHED and step_id in self.intents:
            self.witness = (self.intents[step_id], seq, line_no)


def scan_runs_dir(runs_dir: Path, *run_files: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The runs under ``runs_dir``, and ``(name, problem type, message)`` for every entry that is not one.

    A run is a real directory with a valid run id holding one of ``run_files``. The store only
    ever creates such directories under ``runs/``, and the runtime refuses to open anything
    else, so a symlink, a badly named entry or a stray file there was put by someone else:
    passing over it silently would let ``verify --all`` say "all ok" about a store it did not
    fully check. A valid directory holding none of ``run_files`` is the trace of a start
    interrupted before its first write, and is neither.
    """
    try:
        entries = sorted(os.scandir(runs_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise StorageError(f"Cannot list {runs_dir}: {exc.strerror or exc}", path=str(runs_dir)) from exc
    found: list[str] = []
    strays: list[tuple[str, str, str]] = []
    for entry in entries:
        problem = _stray_problem(entry)
        if problem is not None:
            strays.append((entry.name, *problem))
        elif any(os.path.exists(os.path.join(entry.path, name)) for name in run_files):
            found.append(entry.name)
    return found, strays


def _stray_problem(entry: os.DirEntry[str]) -> Optional[tuple[str, str]]:
    """``(type, message)`` when a ``runs/`` entry is not a run directory the store could have made."""
    shown = repr(entry.name)
    if entry.is_symlink():
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        return ("symlinked_run_dir", f"runs/{shown} is a symlink (to {target!r}); run directories are never "
                "symlinks, so it was not verified (the runtime refuses to open it)")
    try:
        validate_id(entry.name, "run id")
    except InvalidInputError:
        return ("invalid_run_dir_name", f"runs/{shown} is not a valid run id, so it was not verified (the "
                "runtime cannot open it)")
    if not entry.is_dir(follow_symlinks=False):
        return ("not_a_run_dir", f"runs/{shown} is not a directory, so it holds no run and was not verified")
    return None
