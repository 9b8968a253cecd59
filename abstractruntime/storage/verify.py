"""Verifying runs offline, from their files: chain, checkpoint head, bookmarks, published head, signature.

:func:`verify_run` reads ``runs/<run_id>/`` directly. It never imports workflow code, never
takes a lock and never writes (a torn tail is reported, not truncated), and a ledger that is
not even JSON yields problems with line numbers, not exceptions. It reads the checkpoint
first, then the bookmarks, then the ledger: writers append to the ledger *before* they
replace the checkpoint, so a run advancing during verification can only make the ledger
look longer than the checkpoint (normal), never shorter.

Problems (any one makes ``ok`` false), by layer. Ledger lines: ``invalid_json``,
``invalid_record``, ``unsupported_format``, ``unreadable_ledger``. Chain: ``seq_mismatch``,
``prev_hash_mismatch``, ``missing_record_hash``, ``record_hash_mismatch``, ``wrong_run``.
Record shape: ``unknown_field``, ``signature_malformed``.
Checkpoint: ``checkpoint_workflow_mismatch``, ``checkpoint_missing``, ``checkpoint_corrupt``, ``ledger_truncated``,
``checkpoint_head_mismatch``, ``checkpoint_rollback``. Bookmarks: ``bookmark_missing_record``,
``bookmark_mismatch``, ``bookmarks_corrupt``. Published head: ``expected_head_missing``,
``run_missing``. Signature: ``signature_missing``, ``signature_invalid``, ``signature_mismatch``,
``unsigned_tail``.
Store layout (:func:`verify_store` only, one report per entry of ``runs/`` that is not a run):
``symlinked_run_dir``, ``invalid_run_dir_name``, ``not_a_run_dir``.

Notes never fail a run: ``torn_tail``, ``uncommitted_tail``, ``checkpoint_missing`` (a
format-2 ledger rebuilds the run; or a format-1 start interrupted before its first checkpoint), ``no_ledger_position``, ``expected_head_found``,
``expected_head_uncommitted``, ``signature_unchecked``. docs/provenance.md explains each one
and what each layer can and cannot detect.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..core.errors import (
    CorruptRecordError,
    InvalidInputError,
    NotFoundError,
    RunNotFoundError,
    StorageError,
    UnsupportedFormatError,
    VerificationFailedError,
)
from .base import Checkpoint, LedgerHead
from .bookmarks import BOOKMARKS_FILE, Bookmark, read_bookmarks
from .fsio import validate_id
from .json_files import CHECKPOINT_FILE, LEDGER_FILE, RUNS_DIR, RunFiles, read_checkpoint
from .ledger_scan import LedgerScan, int_or_none, scan_runs_dir

MAX_FINDINGS = 200  # per list; a spliced million-record ledger must not produce a million lines
_HASH_RE = re.compile(r"[0-9a-f]{64}")


@dataclass
class Finding:
    """One problem or note: a stable ``type``, where (``seq``, 1-based file ``line``) and why."""

    type: str
    message: str
    seq: Optional[int] = None
    line: Optional[int] = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"type", "seq", "line", "message", "details"}``."""
        return {"type": self.type, "seq": self.seq, "line": self.line, "message": self.message,
                "details": self.details}


@dataclass
class VerifyReport:
    """What :func:`verify_run` found for one run; ``to_dict()`` is the CLI's ``--json`` schema."""

    run_id: str
    path: str
    count: int = 0
    lines: int = 0
    head_seq: int = 0
    head_hash: Optional[str] = None
    checkpoint_head: Optional[LedgerHead] = None
    run_status: Optional[str] = None
    expect_head: Optional[str] = None
    expect_head_seq: Optional[int] = None
    signature: str = "absent"  # absent | unchecked | valid | invalid
    signature_key_id: Optional[str] = None
    bookmarks_checked: int = 0
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    problems_omitted: int = 0
    notes_omitted: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (notes do not count)."""
        return not self.problems and not self.problems_omitted

    def problem(self, kind: str, message: str, *, seq: Any = None, line: Optional[int] = None,
                **details: Any) -> None:
        """Record a problem (beyond :data:`MAX_FINDINGS` only counted)."""
        if len(self.problems) >= MAX_FINDINGS:
            self.problems_omitted += 1
        else:
            self.problems.append(Finding(kind, message, int_or_none(seq), line, details))

    def note(self, kind: str, message: str, *, seq: Any = None, line: Optional[int] = None, **details: Any) -> None:
        """Record a note (informational; does not affect ``ok``)."""
        if len(self.notes) >= MAX_FINDINGS:
            self.notes_omitted += 1
        else:
            self.notes.append(Finding(kind, message, int_or_none(seq), line, details))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (documented in docs/provenance.md)."""
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "path": self.path,
            "count": self.count,
            "lines": self.lines,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoint_head": {"seq": self.checkpoint_head.seq, "head_hash": self.checkpoint_head.head_hash}
            if self.checkpoint_head else None,
            "run_status": self.run_status,
            "expect_head": self.expect_head,
            "expect_head_seq": self.expect_head_seq,
            "signature": self.signature,
            "signature_key_id": self.signature_key_id,
            "bookmarks_checked": self.bookmarks_checked,
            "problems": [p.to_dict() for p in self.problems],
            "problems_omitted": self.problems_omitted,
            "notes": [n.to_dict() for n in self.notes],
            "notes_omitted": self.notes_omitted,
        }


def _store_root(store: Any) -> Path:
    """A ``FileStore`` (anything with ``.root``) or a path."""
    if isinstance(store, (str, os.PathLike)):
        return Path(store)
    root = getattr(store, "root", None)
    if root is None:
        raise InvalidInputError(f"Expected a FileStore or a store path, not {type(store).__name__}")
    return Path(root)


def _normalise_hash(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _HASH_RE.fullmatch(text):
        raise InvalidInputError(f"Expected head must be a 64-digit hex SHA-256, not {value!r}")
    return text


def verify_run(
    store: Any,
    run_id: str,
    *,
    expect_head: Optional[str] = None,
    public_key: Any = None,
) -> VerifyReport:
    """Verify one run of a file store (a ``FileStore`` or its root path); see the module docstring.

    ``expect_head`` is a record hash published elsewhere earlier (e.g. the ``head_hash`` of a
    previous report): it must appear somewhere in the chain, and ``expect_head_seq`` says
    where (a head published earlier stays valid as the run grows). ``public_key`` (a PEM
    file path, PEM bytes or a key object) makes the checkpoint's signature mandatory and
    checked; it needs the ``[signing]`` extra. Raises :class:`RunNotFoundError` for an
    unknown run and :class:`InvalidInputError` for a malformed ``expect_head``.
    """
    return _verify(_store_root(store), run_id, expect_head=expect_head, public_key=public_key, search=None)


def _verify(root: Path, run_id: str, *, expect_head: Optional[str], public_key: Any,
            search: Optional[str]) -> VerifyReport:
    validate_id(run_id, "run id")
    expected = _normalise_hash(expect_head) if expect_head is not None else None
    if not root.is_dir():
        raise RunNotFoundError(run_id)
    run_dir = RunFiles(root, create=False).run_dir(run_id)
    ckpt_path, ledger_path = run_dir / CHECKPOINT_FILE, run_dir / LEDGER_FILE
    if not (ckpt_path.exists() or ledger_path.exists() or ledger_path.is_symlink()):
        raise RunNotFoundError(run_id)
    report = VerifyReport(run_id=run_id, path=str(run_dir), expect_head=expected)

    checkpoint = _load_checkpoint(report, ckpt_path)
    bookmarks = _load_bookmarks(report, run_dir / BOOKMARKS_FILE)
    signature = checkpoint.signature if checkpoint else None
    want_seqs = {b.seq for b in bookmarks}
    if checkpoint and checkpoint.ledger.seq:
        want_seqs.add(checkpoint.ledger.seq)
    want_hashes = {h for h in (expected, search) if h}
    scan = LedgerScan(report, want_seqs=want_seqs, want_hashes=want_hashes,
                      committed_seq=checkpoint.ledger.seq if checkpoint else None)
    scan.run(ledger_path)
    if scan.replayable:
        # A format-2 ledger is the log and run.json only its cache, written without fsync: a
        # damaged one is rebuilt on the next open, so it is worth a note, not a failure.
        for finding in [f for f in report.problems
                        if f.type == "checkpoint_corrupt" and f.details.get("cause") == "content"]:
            report.problems.remove(finding)
            report.note("checkpoint_corrupt", finding.message + " (rebuilt from the ledger when next opened)")

    _check_checkpoint(report, checkpoint, scan, ckpt_path)
    if checkpoint is not None and scan.workflow_in_chain and (checkpoint.workflow or None) != (scan.workflow or None):
        # run.json names code to load: it must be what the hash chain recorded.
        report.problem("checkpoint_workflow_mismatch", "run.json names workflow "
                       f"{(checkpoint.workflow or {}).get('source')!r} but the ledger recorded "
                       f"{(scan.workflow or {}).get('source')!r} (edited to point at other code?)")
    _check_bookmarks(report, bookmarks, scan, checkpoint, ckpt_path)
    if expected is not None or search is not None:
        _check_expected(report, expected, search, scan)
    _check_signature(report, scan, signature, public_key, checkpoint)
    return report


def _load_checkpoint(report: VerifyReport, path: Path) -> Optional[Checkpoint]:
    try:
        checkpoint = read_checkpoint(path)
    except FileNotFoundError:
        return None
    except UnsupportedFormatError as exc:
        report.problem("unsupported_format", str(exc))
        return None
    except CorruptRecordError as exc:
        report.problem("checkpoint_corrupt", str(exc), cause="content")
        return None
    except StorageError as exc:  # unreadable (permissions, symlink): never a crash's doing
        report.problem("checkpoint_corrupt", str(exc), cause="unreadable")
        return None
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a field of the wrong JSON type
        report.problem("checkpoint_corrupt", f"{path}: checkpoint has a malformed field ({type(exc).__name__})")
        return None
    report.checkpoint_head = checkpoint.ledger
    report.run_status = checkpoint.run.status.value
    if checkpoint.run.run_id != report.run_id:
        report.problem("wrong_run", f"the checkpoint belongs to run {checkpoint.run.run_id!r}")
    return checkpoint


def _load_bookmarks(report: VerifyReport, path: Path) -> list[Bookmark]:
    try:
        return sorted(read_bookmarks(path).values(), key=lambda b: (b.seq, b.name))
    except (CorruptRecordError, UnsupportedFormatError, StorageError) as exc:
        report.problem("bookmarks_corrupt", str(exc))
        return []


def _check_checkpoint(report: VerifyReport, checkpoint: Optional[Checkpoint], scan: LedgerScan, path: Path) -> None:
    if checkpoint is None:
        if path.exists():
            return  # unreadable: already reported
        if scan.replayable:  # the ledger is the log: the next open rebuilds run.json from it
            report.note("checkpoint_missing", "no run.json: the run is rebuilt from its ledger when next opened "
                        "(a crash before its first checkpoint, or the cache was removed)")
        elif scan.only_starts:  # each retried start appends one start record before its checkpoint
            report.note("checkpoint_missing", "no run.json: the run's start was interrupted before its first "
                        "checkpoint (the run does not exist for the runtime)")
        else:
            report.problem("checkpoint_missing", f"run.json is missing but the ledger holds {report.count} "
                           "records (deleted?)")
        return
    seq, head = checkpoint.ledger.seq, checkpoint.ledger.head_hash
    if seq == 0:
        if report.count:
            report.note("no_ledger_position", "the checkpoint records no ledger position, so it cannot "
                        "vouch for the ledger's length")
        return
    found = scan.at_seq.get(seq)
    if found is None:
        if seq > report.head_seq:
            report.problem("ledger_truncated", f"the checkpoint reflects seq {seq} but the ledger ends at seq "
                           f"{report.head_seq} (records removed from the end)", seq=seq,
                           ledger_head_seq=report.head_seq)
        else:
            report.problem("checkpoint_head_mismatch", f"the checkpoint reflects seq {seq}, which no ledger "
                           "record has", seq=seq)
        return
    if found[0] != head:
        report.problem("checkpoint_head_mismatch", f"the record at seq {seq} has hash {found[0]} but the "
                       f"checkpoint recorded {head} (ledger rewritten, or a checkpoint from another ledger)",
                       seq=seq, line=found[1], checkpoint_hash=head, ledger_hash=found[0])
        return
    if report.head_seq > seq:
        report.note("uncommitted_tail", f"{report.head_seq - seq} record(s) after the checkpoint's seq {seq}: "
                    "written after the last checkpoint (normal after a crash; the next tick continues from "
                    "the checkpoint)", seq=seq + 1)
    if scan.witness is not None:
        intent_seq, result_seq, line = scan.witness
        if _reread_seq(path) < intent_seq:  # a concurrent commit would have moved it past the intent
            report.problem("checkpoint_rollback", f"the checkpoint reflects seq {seq}, but the effect started "
                           f"at seq {intent_seq} has its result at seq {result_seq}; the runtime writes that only "
                           f"after checkpointing seq {intent_seq}: run.json was rolled back to an older copy",
                           seq=result_seq, line=line, checkpoint_seq=seq, intent_seq=intent_seq)


def _reread_seq(path: Path) -> int:
    try:
        return read_checkpoint(path).ledger.seq
    except (OSError, CorruptRecordError, UnsupportedFormatError, StorageError, AttributeError, TypeError,
            KeyError, ValueError):
        return -1


def _check_bookmarks(report: VerifyReport, bookmarks: list[Bookmark], scan: LedgerScan,
                     checkpoint: Optional[Checkpoint], ckpt_path: Path) -> None:
    report.bookmarks_checked = len(bookmarks)
    for mark in bookmarks:
        found = scan.at_seq.get(mark.seq)
        if found is None:
            report.problem("bookmark_missing_record", f"bookmark {mark.name!r} pins seq {mark.seq}, which the "
                           f"ledger no longer has (it ends at seq {report.head_seq})", seq=mark.seq,
                           bookmark=mark.name)
        elif found[0] != mark.record_hash:
            report.problem("bookmark_mismatch", f"bookmark {mark.name!r}: the record at seq {mark.seq} has hash "
                           f"{found[0]}, not the bookmarked {mark.record_hash}", seq=mark.seq, line=found[1],
                           bookmark=mark.name)
    if checkpoint is None:
        return
    newest = max((b for b in bookmarks if b.checkpoint_seq is not None),
                 key=lambda b: b.checkpoint_seq or 0, default=None)
    if newest is not None and (newest.checkpoint_seq or 0) > checkpoint.ledger.seq \
            and _reread_seq(ckpt_path) < (newest.checkpoint_seq or 0):
        # Checkpoints only move forward; the bookmark saw a newer one.
        report.problem("checkpoint_rollback", f"the checkpoint reflects seq {checkpoint.ledger.seq}, but when "
                       f"bookmark {newest.name!r} was added it reflected seq {newest.checkpoint_seq}: run.json "
                       "was rolled back to an older copy", seq=checkpoint.ledger.seq, bookmark=newest.name)


def _check_expected(report: VerifyReport, expected: Optional[str], search: Optional[str], scan: LedgerScan) -> None:
    target = expected or search
    assert target is not None
    found = scan.hash_at.get(target)
    if found is None:
        if expected is not None:
            report.problem("expected_head_missing", f"the expected head {expected} is not in the chain "
                           "(ledger rewritten, or truncated before it)")
        return
    report.expect_head, report.expect_head_seq = target, found[0]
    later = report.head_seq - found[0] if found[0] is not None else 0
    report.note("expected_head_found", f"the expected head is the record at seq {found[0]}"
                + (f" ({later} record(s) were added after it)" if later > 0 else " (the current head)"),
                seq=found[0], line=found[1])
    committed = report.checkpoint_head.seq if report.checkpoint_head else None
    if committed is not None and found[0] is not None and found[0] > committed:
        # Not a failure: a head published from the uncommitted tail after a crash looks the same.
        report.note("expected_head_uncommitted", f"the expected head (seq {found[0]}) is beyond the checkpoint "
                    f"(seq {committed}): the run crashed after writing it, or run.json was rolled back",
                    seq=found[0])


def _check_signature(report: VerifyReport, scan: LedgerScan, checkpoint_signature: Any, public_key: Any,
                     checkpoint: Optional[Checkpoint]) -> None:
    """The head's signature: the last signed record's (format 2: every batch is signed), else the
    checkpoint's (format 1). Records after the last signed one are always a problem."""
    trail = scan.signatures
    if trail.after_last:
        report.problem("unsigned_tail", f"{trail.after_last} record(s) after the last signed head (seq "
                       f"{trail.last_seq}) carry no signature: a signing writer signs every batch and a crash "
                       "cannot leave whole records after it, so they were appended without the key",
                       seq=trail.first_unsigned_after)
    if trail.last is not None:
        signature, covered = trail.last, (trail.last_seq, trail.last.get("head_hash"))
    else:
        signature = checkpoint_signature
        covered = (checkpoint.ledger.seq, checkpoint.ledger.head_hash) if checkpoint is not None else (None, None)
    if signature is None:
        if trail.declared is not None:
            report.problem("signature_missing", f"the run's first record says its batches are signed with key "
                           f"{trail.declared}, but no record carries a signature (removed?)")
        elif public_key is not None and (checkpoint is not None or report.count):
            report.problem("signature_missing", "a public key was given but the run's head is not signed")
        return
    report.signature_key_id = signature.get("key_id") if isinstance(signature, dict) else None
    if public_key is None:
        report.signature = "unchecked"
        report.note("signature_unchecked", "the head is signed; pass a public key to check the signature")
        return
    from .signing import verify_head_signature

    try:
        verify_head_signature(signature, run_id=report.run_id, public_key=public_key)
    except VerificationFailedError as exc:
        report.signature = "invalid"
        report.problem("signature_invalid", str(exc))
        return
    signed = (signature.get("seq"), signature.get("head_hash"))
    if signed != covered:
        report.signature = "invalid"
        report.problem("signature_mismatch", f"the signature covers seq {signed[0]} (hash {signed[1]}) but it "
                       f"stands for seq {covered[0]} (hash {covered[1]})", seq=signed[0])
        return
    report.signature = "valid"


def verify_store(
    root: Any,
    *,
    expect_head: Optional[str | Mapping[str, str]] = None,
    progress: Optional[Callable[[int, int, VerifyReport], None]] = None,
    public_key: Any = None,
) -> list[VerifyReport]:
    """Verify every run under ``root`` (a ``FileStore`` or path), in run-id order.

    ``expect_head`` may be a mapping ``{run_id: published head}`` (each run is checked
    against its own; a listed run that no longer exists gets a ``run_missing`` report) or a
    single hash, which must appear in at least one run (that run's report says where; if
    no run has it, every report carries ``expected_head_missing``, and an empty store
    raises :class:`VerificationFailedError`). ``progress(done, total, report)`` is called
    after each run (a single hash found in no run is reported afterwards, in the returned list).
    """
    base = _store_root(root)
    if not base.is_dir():
        raise NotFoundError(f"No abstractruntime store at {base}", path=str(base))
    mapping: dict[str, str] = {}
    single: Optional[str] = None
    if isinstance(expect_head, Mapping):
        mapping = {validate_id(k, "run id"): _normalise_hash(v) for k, v in expect_head.items()}
    elif expect_head is not None:
        single = _normalise_hash(expect_head)
    run_ids, stray_entries = scan_runs_dir(base / RUNS_DIR, CHECKPOINT_FILE, LEDGER_FILE)
    strays: dict[str, VerifyReport] = {}
    for name, kind, message in stray_entries:  # not runs: each fails, so --all cannot say "all ok"
        strays[name] = VerifyReport(run_id=name, path=str(base / RUNS_DIR / name))
        strays[name].problem(kind, message, entry=name)
    missing = sorted(set(mapping) - set(run_ids))
    total = len(run_ids) + len(missing) + len(strays)
    reports: list[VerifyReport] = []
    for run_id in sorted(set(run_ids) | set(missing) | set(strays)):
        if run_id in strays:
            report = strays[run_id]
        elif run_id in missing:
            report = VerifyReport(run_id=run_id, path=str(base / RUNS_DIR / run_id), expect_head=mapping[run_id])
            report.problem("run_missing", f"run {run_id} has an expected head but is not in the store")
        else:
            report = _verify(base, run_id, expect_head=mapping.get(run_id), public_key=public_key, search=single)
        reports.append(report)
        if progress is not None:
            progress(len(reports), total, report)
    if single is not None and not any(r.expect_head == single for r in reports):
        if not reports:
            raise VerificationFailedError(f"The expected head {single} is in no run: the store has no runs",
                                          expect_head=single)
        for report in reports:
            report.expect_head = single
            report.problem("expected_head_missing", f"the expected head {single} is in no run of the store")
    return reports


__all__ = ["Finding", "VerifyReport", "verify_run", "verify_store", "MAX_FINDINGS"]
