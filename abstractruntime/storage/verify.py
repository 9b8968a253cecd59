"""Verifying runs offline, from their files: chain, checkpoint head, bookmarks, published head, signature.

The chain is checked by :class:`~abstractruntime.storage.ledger_scan.LedgerScan`, the other
layers by :mod:`~abstractruntime.storage.verify_checks`; the findings are a
:class:`~abstractruntime.storage.verify_report.VerifyReport` (re-exported here).

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
``signature_untrusted``, ``signature_not_in_force``, ``rotation_not_in_force``, ``rotation_invalid``,
``signing_record_malformed``, ``unsigned_tail``.
Store layout (:func:`verify_store` only, one report per entry of ``runs/`` that is not a run):
``symlinked_run_dir``, ``invalid_run_dir_name``, ``not_a_run_dir``.

Notes never fail a run: ``torn_tail``, ``uncommitted_tail``, ``checkpoint_missing`` (a
format-2 ledger rebuilds the run; or a format-1 start interrupted before its first
checkpoint), ``no_ledger_position``, ``expected_head_found``, ``expected_head_uncommitted``,
``signature_unchecked``, ``signing_rotated``, ``signing_adopted``. docs/provenance.md explains each one
and what each layer can and cannot detect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..core.canonical import is_sha256_hex
from ..core.errors import (
    InvalidInputError,
    NotFoundError,
    RunNotFoundError,
    StorageError,
    VerificationFailedError,
)
from .bookmarks import BOOKMARKS_FILE
from .fsio import validate_id
from .segments import SEGMENTS_DIR, list_parts
from .run_files import CHECKPOINT_FILE, LEDGER_FILE, RUNS_DIR, RunFiles
from .ledger_scan import LedgerScan, scan_runs_dir
from .signing import load_keyring
from .verify_checks import (_check_bookmarks, _check_checkpoint, _check_expected, _check_signature, _load_bookmarks,
                            _load_checkpoint)
from .tombstones import PRUNED_DIR, FileTombstones, LogCheck, Tombstone
from . import verify_parallel
from .verify_parallel import scan_parallel
from .verify_pool import RunsAhead, default_jobs
from .verify_report import MAX_FINDINGS, Finding, VerifyReport

# The run_id of the report on the tombstone log itself (not a valid run id: it names no run).
TOMBSTONE_LOG = "(tombstones)"

def _store_root(store: Any) -> Path:
    """A ``FileStore`` (anything with ``.root``) or a path."""
    if isinstance(store, (str, os.PathLike)):
        return Path(store)
    root = getattr(store, "root", None)
    if root is None:
        raise InvalidInputError(f"Expected a FileStore or a store path, not {type(store).__name__}")
    return Path(root)


def _jobs(jobs: Optional[int]) -> int:
    if jobs is None:
        return default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidInputError(f"jobs must be a whole number of at least 1, not {jobs!r}")
    return jobs


def _normalise_hash(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not is_sha256_hex(text):
        raise InvalidInputError(f"Expected head must be a 64-digit hex SHA-256, not {value!r}")
    return text


def verify_run(
    store: Any,
    run_id: str,
    *,
    expect_head: Optional[str] = None,
    public_key: Any = None,
    jobs: Optional[int] = None,
) -> VerifyReport:
    """Verify one run of a file store (a ``FileStore`` or its root path); see the module docstring.

    ``expect_head`` is a record hash published elsewhere earlier (e.g. the ``head_hash`` of a
    previous report): it must appear somewhere in the chain, and ``expect_head_seq`` says
    where (a head published earlier stays valid as the run grows). ``public_key`` makes a
    signed head mandatory and checked (it needs the ``[signing]`` extra): one key (a PEM file
    path, PEM bytes, 32 raw bytes or a key object), a list of them, or a directory of ``*.pub``
    / ``*.pem`` public keys. From one key, rotations the run records are followed; from
    several, they are followed from the key the run's first record names (docs/provenance.md,
    "Keys over months"). ``jobs`` (default: the CPUs this process may use) is how many processes
    check a long ledger (:mod:`~abstractruntime.storage.verify_parallel`); the report is the same
    with any number. Raises :class:`RunNotFoundError` for an unknown run,
    :class:`InvalidInputError` for a malformed ``expect_head``, a source with no public key or
    ``jobs`` below 1, and :class:`StorageError` when a worker process dies.
    """
    keyring = load_keyring(public_key) if public_key is not None else None
    root = _store_root(store)
    workers = _jobs(jobs)
    try:
        report = _verify(root, run_id, expect_head=expect_head, keyring=keyring, search=None, jobs=workers)
        tombstones = FileTombstones(root)
        if tombstones.marked(run_id):  # a prune of it was interrupted (or a run put under a pruned id)
            tombstone = tombstones.read().by_run().get(run_id)
            if tombstone is not None:
                _pending_prune(tombstones, tombstone, report)
        return report
    except RunNotFoundError:
        # A pruned run is accounted for by its tombstone (when the log holds it).
        tombstones = FileTombstones(root)
        if not tombstones.marked(run_id):
            raise
        tombstone = tombstones.read().by_run().get(run_id)
        if tombstone is None:
            raise
        return _pruned_report(tombstones, tombstone, expect_head, keyring=keyring)


def _verify(root: Path, run_id: str, *, expect_head: Optional[str], keyring: Optional[dict[str, Any]],
            search: Optional[str], jobs: int = 1) -> VerifyReport:
    validate_id(run_id, "run id")
    expected = _normalise_hash(expect_head) if expect_head is not None else None
    if not root.is_dir():
        raise RunNotFoundError(run_id)
    run_dir = RunFiles(root, create=False).run_dir(run_id)
    ckpt_path, ledger_path = run_dir / CHECKPOINT_FILE, run_dir / LEDGER_FILE
    if not (ckpt_path.exists() or ledger_path.exists() or ledger_path.is_symlink() or (run_dir / SEGMENTS_DIR).exists()):
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
    try:
        parts = list_parts(run_dir)
    except StorageError as exc:
        report.problem("unreadable_ledger", str(exc))
        parts = None
    if parts is not None and jobs > 1 and scan_parallel(scan, parts, run_dir, jobs=jobs):
        pass  # a long, clean ledger, checked on several cores (anything found: checked again below)
    elif parts is not None and (parts.sealed or parts.strays):
        scan.run_parts(parts)
    else:
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
        # run.json names the run's workflow (id, sha256): it must be what the hash chain recorded.
        report.problem("checkpoint_workflow_mismatch", f"run.json names workflow {checkpoint.workflow!r} but the "
                       f"ledger recorded {scan.workflow!r} (edited to point at other code?)")
    _check_bookmarks(report, bookmarks, scan, checkpoint, ckpt_path)
    if expected is not None or search is not None:
        _check_expected(report, expected, search, scan)
    _check_signature(report, scan, signature, keyring, checkpoint)
    return report


def verify_store(
    root: Any,
    *,
    expect_head: Optional[str | Mapping[str, str]] = None,
    progress: Optional[Callable[[int, int, VerifyReport], None]] = None,
    public_key: Any = None,
    check_markers: bool = True,
    jobs: Optional[int] = None,
) -> list[VerifyReport]:
    """Verify every run under ``root`` (a ``FileStore`` or path), in run-id order.

    ``expect_head`` may be a mapping ``{run_id: published head}`` (each run is checked
    against its own; a listed run that no longer exists gets a ``run_missing`` report) or a
    single hash, which must appear in at least one run (that run's report says where; if
    no run has it, every report carries ``expected_head_missing``, and an empty store
    raises :class:`VerificationFailedError`). ``progress(done, total, report)`` is called
    after each run (a single hash found in no run is reported afterwards, in the returned list).

    Each pruned run gets a report from its tombstone (``pruned``), and a damaged tombstone log a
    failed report named ``"(tombstones)"``. ``check_markers=False`` skips the check that each
    pruned id still has its ``pruned/<run_id>`` marker (a database's rows are their own markers).

    ``jobs`` (default: the CPUs this process may use) processes verify the runs side by side, and
    each long ledger on that many cores; reports and progress still come in run-id order.
    """
    workers = _jobs(jobs)
    base = _store_root(root)
    if not base.is_dir():
        raise NotFoundError(f"No abstractruntime store at {base}", path=str(base))
    mapping: dict[str, str] = {}
    single: Optional[str] = None
    if isinstance(expect_head, Mapping):
        mapping = {validate_id(k, "run id"): _normalise_hash(v) for k, v in expect_head.items()}
    elif expect_head is not None:
        single = _normalise_hash(expect_head)
    keyring = load_keyring(public_key) if public_key is not None else None
    run_ids, stray_entries = scan_runs_dir(base / RUNS_DIR, CHECKPOINT_FILE, LEDGER_FILE, SEGMENTS_DIR)
    strays: dict[str, VerifyReport] = {}
    for name, kind, message in stray_entries:  # not runs: each fails, so --all cannot say "all ok"
        strays[name] = VerifyReport(run_id=name, path=str(base / RUNS_DIR / name))
        strays[name].problem(kind, message, entry=name)
    tombstones = FileTombstones(base)
    log = tombstones.read()
    tombstoned = log.by_run()
    gone = sorted(set(tombstoned) - set(run_ids) - set(strays))
    intended = set(tombstones.intended()) if gone and check_markers else set()
    missing = sorted(set(mapping) - set(run_ids) - set(tombstoned))
    total = len(run_ids) + len(missing) + len(strays) + len(gone) + (0 if log.ok and not log.notes else 1)
    reports: list[VerifyReport] = []
    ahead = RunsAhead(base, sorted(run_ids), _verify, mapping=mapping, keyring=keyring, search=single, jobs=workers,
                      long_bytes=verify_parallel.PARALLEL_MIN_BYTES)
    try:
        for run_id in sorted(set(run_ids) | set(missing) | set(strays) | set(gone)):
            if run_id in strays:
                report = strays[run_id]
            elif run_id in missing:
                report = VerifyReport(run_id=run_id, path=str(base / RUNS_DIR / run_id), expect_head=mapping[run_id])
                report.problem("run_missing", f"run {run_id} has an expected head but is not in the store")
            elif run_id in gone:
                report = _pruned_report(tombstones, tombstoned[run_id], mapping.get(run_id), intended, keyring,
                                        check_marker=check_markers)
            else:
                report = ahead.report(run_id)
                if run_id in tombstoned:
                    _pending_prune(tombstones, tombstoned[run_id], report)
            reports.append(report)
            if progress is not None:
                progress(len(reports), total, report)
    finally:
        ahead.close()
    if not log.ok or log.notes:  # a torn last line is a note: said, not failed
        reports.append(_log_report(tombstones, log))
        if progress is not None:
            progress(len(reports), total, reports[-1])
    if single is not None and not any(r.expect_head == single for r in reports):
        if not reports:
            raise VerificationFailedError(f"The expected head {single} is in no run: the store has no runs",
                                          expect_head=single)
        for report in reports:
            report.expect_head = single
            report.problem("expected_head_missing", f"the expected head {single} is in no run of the store")
    return reports


def _pruned_report(tombstones: FileTombstones, tombstone: Tombstone, expected: Optional[str],
                   intended: Optional[set[str]] = None, keyring: Optional[dict[str, Any]] = None,
                   check_marker: bool = True) -> VerifyReport:
    """A pruned run, accounted for by its tombstone: its head, record count and final status."""
    if intended is None:
        intended = set(tombstones.intended())
    report = VerifyReport(run_id=tombstone.run_id, path=f"{tombstones.path} seq {tombstone.seq}",
                          count=tombstone.count, head_seq=tombstone.head_seq, head_hash=tombstone.head_hash,
                          run_status=tombstone.status, pruned=tombstone.to_dict(),
                          signature="unchecked" if tombstone.signature else "absent")
    report.note("pruned", f"run {tombstone.run_id} was pruned at {tombstone.pruned_at}; its tombstone (seq "
                f"{tombstone.seq}) keeps its head", seq=tombstone.head_seq)
    if expected is not None:
        report.expect_head = _normalise_hash(expected)
        if report.expect_head == tombstone.head_hash:
            report.expect_head_seq = tombstone.head_seq
        else:
            report.problem("expected_head_missing", f"run {tombstone.run_id} was pruned with head "
                           f"{tombstone.head_hash}, not the expected head {report.expect_head}")
    if keyring is not None:
        _check_tombstone_signature(report, tombstone, keyring)
    if check_marker and not tombstones.marked(tombstone.run_id) and tombstone.run_id not in intended:
        report.problem("tombstone_marker_missing", f"{tombstones.root / PRUNED_DIR / tombstone.run_id} is missing: "
                       "nothing keeps the pruned id from naming a new run (removed by hand?)")
    return report


def _check_tombstone_signature(report: VerifyReport, tombstone: Tombstone, keyring: dict[str, Any]) -> None:
    """With keys given, a pruned run's head must carry a signature one of them made, of that head."""
    from .signing import verify_head_signature

    signature = tombstone.signature
    if not signature:
        report.problem("signature_missing", f"the tombstone of run {tombstone.run_id} carries no signature of its "
                       "head, and a public key was given", seq=tombstone.head_seq)
        return
    key_id = signature.get("key_id") if isinstance(signature, dict) else None
    report.signature_key_id = key_id if isinstance(key_id, str) else None
    key = keyring.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        report.signature = "invalid"
        report.problem("signature_untrusted", f"run {tombstone.run_id}'s head is signed by key {key_id!r}, not one "
                       "of the keys given (the rotations its pruned ledger recorded cannot be followed: give that "
                       "key)", seq=tombstone.head_seq)
        return
    try:
        verify_head_signature(signature, run_id=tombstone.run_id, public_key=key)
    except VerificationFailedError as exc:
        report.signature = "invalid"
        report.problem("signature_invalid", f"the head signature in run {tombstone.run_id}'s tombstone: {exc}",
                       seq=tombstone.head_seq)
        return
    if (signature.get("seq"), signature.get("head_hash")) != (tombstone.head_seq, tombstone.head_hash):
        report.signature = "invalid"
        report.problem("signature_mismatch", f"the signature in run {tombstone.run_id}'s tombstone covers seq "
                       f"{signature.get('seq')}, not the head it sealed", seq=tombstone.head_seq)
        return
    report.signature = "valid"


def _pending_prune(tombstones: FileTombstones, tombstone: Tombstone, report: VerifyReport) -> None:
    """A run still in the store with a tombstone: a prune killed before it removed the run (the
    next prune finishes it), which must still have the head its tombstone sealed."""
    report.pruned = tombstone.to_dict()
    if (report.head_seq, report.head_hash) != (tombstone.head_seq, tombstone.head_hash):
        report.problem("tombstone_mismatch", f"run {report.run_id} ends at seq {report.head_seq} but its tombstone "
                       f"(seq {tombstone.seq}) sealed head seq {tombstone.head_seq} {tombstone.head_hash}: a run "
                       "under a pruned id", seq=report.head_seq)
    else:
        report.note("prune_pending", f"run {report.run_id} has a tombstone (seq {tombstone.seq}) but is still in "
                    "the store: a prune was interrupted; the next prune removes it")


def _log_report(tombstones: FileTombstones, log: LogCheck) -> VerifyReport:
    """The tombstone log's own problems (edited, reordered or cut), as one failed report."""
    report = VerifyReport(run_id=TOMBSTONE_LOG, path=str(tombstones.path), count=len(log.entries),
                          head_seq=len(log.entries), head_hash=log.last.hash if log.last else None)
    for kind, message, line in log.problems:
        report.problem(kind, f"{tombstones.path}: {message}", line=line)
    for kind, message, line in log.notes:
        report.note(kind, f"{tombstones.path}: {message}", line=line)
    return report


__all__ = ["Finding", "TOMBSTONE_LOG", "VerifyReport", "verify_run", "verify_store", "MAX_FINDINGS"]
