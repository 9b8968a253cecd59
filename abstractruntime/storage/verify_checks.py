"""The per-layer checks of :func:`~abstractruntime.storage.verify.verify_run`, past the chain itself.

Each reads what one layer kept (the checkpoint, the bookmarks, a head published elsewhere,
the signature) and compares it with what the ledger scan found, adding problems and notes
to the report. The chain checks are :class:`~abstractruntime.storage.ledger_scan.LedgerScan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..core.errors import (
    CorruptRecordError,
    StorageError,
    UnsupportedFormatError,
    VerificationFailedError,
)
from ..core.ports import StoredCheckpoint as Checkpoint
from ..core.state import digest_of
from .bookmarks import Bookmark, bookmarks_in_order
from .json_files import read_checkpoint
from .ledger_scan import LedgerScan
from .verify_report import VerifyReport



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
    report.run_status = checkpoint.shown_run().status.value
    if checkpoint.run_id != report.run_id:
        report.problem("wrong_run", f"the checkpoint belongs to run {checkpoint.run_id!r}")
    return checkpoint


def _load_bookmarks(report: VerifyReport, path: Path) -> list[Bookmark]:
    try:
        return bookmarks_in_order(path)
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
    if checkpoint.legacy is None:
        claimed = scan.state_at.get(seq)
        try:
            actual = digest_of(checkpoint.state)
        except (ValueError, TypeError):
            actual = None
        if claimed is None or claimed != actual:
            report.problem("checkpoint_state_mismatch", f"the checkpoint's state is not the state the ledger "
                           f"records at seq {seq} (edited, or copied from another position?); the runtime ignores "
                           "it and rebuilds the run from the ledger", seq=seq, line=found[1])
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


def _check_signature(report: VerifyReport, scan: LedgerScan, checkpoint_signature: Any, keyring: Optional[dict[str, Any]],
                     checkpoint: Optional[Checkpoint]) -> None:
    """The head's signature and the keys the run was signed with.

    The head's signature is the last signed record's (format 1: the checkpoint's, since those
    records carried none; a later format never takes ``run.json``'s copy). Always checked:
    records after the last signed one, a first record declaring a key with no signature, and
    batches not signed by the key in force (:class:`~.record_rules.SignatureTrail`). With
    ``keyring`` (key id -> public key): the head must be signed by a key trusted from the
    auditor's key — one key given, that key; several, the key the run's first record names —
    or by a key a rotation signed by a trusted key handed the run over to.
    """
    trail = scan.signatures
    if trail.after_last:
        report.problem("unsigned_tail", f"{trail.after_last} record(s) after the last signed head (seq "
                       f"{trail.last_seq}) carry no signature: a signing writer signs every batch and a crash "
                       "cannot leave whole records after it, so they were appended without the key",
                       seq=trail.first_unsigned_after)
    for kind, message, seq in trail.problems:
        report.problem(kind, message, seq=seq)
    if trail.pending and not trail.signed:  # after a signed record they are the unsigned tail, reported above
        report.problem("signature_missing", f"the signing record at seq {trail.pending[0].seq} is in no signed batch",
                       seq=trail.pending[0].seq)
    _note_events(report, trail.events)
    if trail.last is not None:
        signature, covered = trail.last, (trail.last_seq, trail.last.get("head_hash"))
    elif not trail.modern and checkpoint is not None:
        signature, covered = checkpoint_signature, (checkpoint.ledger.seq, checkpoint.ledger.head_hash)
    else:
        signature, covered = None, (None, None)
    if signature is None:
        if trail.declared is not None:
            report.problem("signature_missing", f"the run's first record says its batches are signed with key "
                           f"{trail.declared}, but no record carries a signature (removed?)")
        elif keyring is not None and (checkpoint is not None or report.count):
            report.problem("signature_missing", "a public key was given but the run's head is not signed")
        return
    report.signature_key_id = signature.get("key_id") if isinstance(signature, dict) else None
    if keyring is None:
        report.signature = "unchecked"
        report.note("signature_unchecked", "the head is signed; pass a public key to check the signature")
        return
    from .signing import verify_head_signature

    trusted = _trusted_keys(report, trail, keyring)
    if trusted is None:
        report.signature = "invalid"
        return
    head_key = report.signature_key_id
    if head_key not in trusted:
        report.signature = "invalid"
        report.problem(*_untrusted(head_key, trusted, keyring, trail), seq=covered[0])
        return
    try:
        verify_head_signature(signature, run_id=report.run_id, public_key=trusted[head_key])
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


def _note_events(report: VerifyReport, events: list[Any]) -> None:
    for event in events:
        if event.kind == "rotate":
            report.note("signing_rotated", f"seq {event.seq}: key {event.from_key} handed the run over to key "
                        f"{event.key_id}", seq=event.seq, key_id=event.key_id, from_key=event.from_key)
        elif event.kind == "adopt":
            report.note("signing_adopted", f"seq {event.seq}: key {event.key_id} adopted the run; records "
                        f"{event.from_seq}..{event.seq - 1} carry no signature of it (an operator's explicit "
                        "choice)", seq=event.seq, key_id=event.key_id, from_seq=event.from_seq)
        else:
            report.note("signing_adopted", f"seq {event.batch_seq}: key {event.key_id} signed the run, begun "
                        "without a key, without recording an adoption (an earlier release adopted such runs "
                        "silently)", seq=event.batch_seq, key_id=event.key_id, implicit=True)


def _trusted_keys(report: VerifyReport, trail: Any, keyring: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The keys trusted for this run: the auditor's anchor key, and every key a rotation signed by a
    trusted key handed the run over to (``None`` when the anchor is not among the keys given)."""
    from ..core.errors import InvalidInputError
    from .signing import key_id_of, load_public_key, verify_head_signature

    anchor = next(iter(keyring)) if len(keyring) == 1 else trail.first_key
    if anchor not in keyring:
        report.problem("signature_untrusted", f"none of the {len(keyring)} keys given ({', '.join(sorted(keyring))}) "
                       f"is the key the run was first signed with ({anchor}): rotations are followed from that key")
        return None
    trusted = {anchor: keyring[anchor]}
    for event in trail.events:
        if event.kind != "rotate" or event.from_key not in trusted or event.signature is None:
            continue
        try:
            verify_head_signature(event.signature, run_id=report.run_id, public_key=trusted[event.from_key])
        except VerificationFailedError as exc:
            report.problem("rotation_invalid", f"seq {event.seq}: the rotation from key {event.from_key} to "
                           f"{event.key_id} is not signed by {event.from_key} ({exc})", seq=event.seq)
            continue
        try:
            key = load_public_key(str(event.public_key).encode("utf-8"))
        except InvalidInputError as exc:
            report.problem("rotation_invalid", f"seq {event.seq}: the rotation's public key is unusable ({exc})",
                           seq=event.seq)
            continue
        if key_id_of(key) != event.key_id:
            report.problem("rotation_invalid", f"seq {event.seq}: the rotation names key {event.key_id} but its "
                           f"public key is {key_id_of(key)}", seq=event.seq)
            continue
        trusted[event.key_id] = key
    return trusted


def _untrusted(head_key: Any, trusted: dict[str, Any], keyring: dict[str, Any], trail: Any) -> tuple[str, str]:
    """The problem of a head signed by a key the auditor's key does not lead to."""
    given = ", ".join(repr(k) for k in sorted(keyring))
    adoption = next((e for e in reversed(trail.events) if e.kind in ("adopt", "implicit") and e.key_id == head_key),
                    None)
    if adoption is not None:
        return ("signature_untrusted", f"the head is signed by key {head_key!r}, which adopted the run at seq "
                f"{adoption.seq} instead of being handed it by a rotation from the key given ({given}): verify with "
                f"key {head_key!r} alone to accept the adoption")
    if head_key in keyring:
        return ("signature_untrusted", f"the head is signed by key {head_key!r}, which no rotation from the run's "
                f"first key hands the run over to")
    return ("signature_invalid", f"signed by key {head_key!r}, but the public key given is {given}"
            + (f" (trusted for this run through rotations: {', '.join(sorted(trusted))})" if len(trusted) > 1 else ""))
