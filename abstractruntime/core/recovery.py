"""Opening a run: checkpoint + replay of the ledger tail, and the state at any past position.

The checkpoint is a cache. Opening a run reads it, then replays every ledger record after
the position it reflects: a checkpoint that is missing, unreadable (a power loss before the
page cache reached the disk) or rolled back changes nothing — the ledger decides. A ledger
that ends *before* the checkpoint's position, or at it with another hash, was truncated or
rewritten: that is corruption, never silently adopted. With a signing key, the head the
writer is about to extend must carry a valid signature (see :func:`check_signed_head`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from .errors import CorruptRecordError, MisplacedRecordError, InvalidInputError, RunNotFoundError, VerificationFailedError
from .models import RunState, RunStatus
from .ports import Checkpoint, LedgerHead, LedgerStore, RunStore
from .session import secrets_by_record
from .wal import replay

log = logging.getLogger("abstractruntime.recovery")


@dataclass
class OpenedRun:
    """A run as rebuilt for reading or writing."""

    checkpoint: Checkpoint
    # The position the stored checkpoint reflects (None when it had to be rebuilt).
    saved: Optional[LedgerHead]
    # The ledger's durable head (what the next append must extend).
    head: LedgerHead
    # The stored checkpoint was written outside the runtime (RunStore.save): adopt it as is.
    external: bool = False
    # The last record of the ledger as read (None when the tail was empty).
    last_record: Optional[dict[str, Any]] = None
    # The status the stored checkpoint (and so the query index) shows.
    saved_status: Optional[RunStatus] = None


def _blank(run_id: str) -> Checkpoint:
    return Checkpoint(run=RunState(run_id=run_id, workflow_id="", status=RunStatus.RUNNING, current_node=""),
                      ledger=LedgerHead())


def _keeps_checkpoints(runs: RunStore) -> bool:
    return type(runs).load_checkpoint is not RunStore.load_checkpoint


def open_run(runs: RunStore, ledger: LedgerStore, run_id: str) -> OpenedRun:
    """Rebuild ``run_id``: stored checkpoint + replay of the ledger after it.

    Raises :class:`RunNotFoundError` when neither exists, :class:`CorruptRecordError` when
    the ledger is shorter than the checkpoint or cannot be replayed.
    """
    stored: Optional[Checkpoint]
    unreadable: Optional[CorruptRecordError] = None
    try:
        stored = runs.load_checkpoint(run_id)
    except MisplacedRecordError:
        raise
    except CorruptRecordError as exc:
        # The checkpoint is a cache written without fsync: after a power loss it may be torn.
        log.warning("%s; rebuilding run %s from its ledger", exc, run_id)
        stored, unreadable = None, exc
    if stored is not None and stored.run.run_id != run_id:
        raise MisplacedRecordError(f"the checkpoint of run {run_id} describes run {stored.run.run_id!r} "
                                 "(a file's content must agree with its place)")
    if stored is not None and stored.external:
        head = ledger.head(run_id)
        return OpenedRun(checkpoint=stored, saved=stored.ledger, head=head, external=True,
                         saved_status=stored.run.status)
    if stored is not None and not _keeps_checkpoints(runs):
        # A 0.0.1-style store keeps only the RunState: the ledger rebuilds the rest.
        stored = None
    start = stored.ledger if stored is not None else LedgerHead()
    head, tail = ledger.read_after(run_id, start)
    if stored is None and not tail:
        if unreadable is not None:
            raise unreadable
        if head.seq:
            raise CorruptRecordError(f"run {run_id} has no checkpoint and its ledger cannot rebuild it")
        raise RunNotFoundError(run_id)
    if stored is not None and start.seq:
        if head.seq < start.seq or (head.seq == start.seq and head.head_hash != start.head_hash):
            raise CorruptRecordError(
                f"run {run_id}: the checkpoint reflects ledger seq {start.seq} but the ledger ends at seq "
                f"{head.seq} with another head (truncated or rewritten?); run `abstractruntime verify` for details")
    saved_status = stored.run.status if stored is not None else None
    checkpoint = stored if stored is not None else _blank(run_id)
    if tail:
        if stored is None and tail[0].get("delta") is None:
            raise CorruptRecordError(f"run {run_id} has no checkpoint and its ledger predates format 2: "
                                     "restore run.json from a backup")
        secrets = secrets_by_record(ledger.get_secrets(run_id)) if _has_redactions(tail) else None
        replay(checkpoint, tail, secrets=secrets, path=f"ledger of run {run_id}")
    checkpoint.ledger = head
    return OpenedRun(checkpoint=checkpoint, saved=stored.ledger if stored is not None else None, head=head,
                     last_record=tail[-1] if tail else None, saved_status=saved_status)


def _has_redactions(records: list[dict[str, Any]]) -> bool:
    # Cheap pre-check so runs without secrets never read the secrets file.
    from .canonical import canonical_json
    from .redaction import REDACTED

    marker = REDACTED.encode()
    return any(marker in canonical_json({k: r.get(k) for k in ("effect", "result", "delta")}) for r in records)


def state_at(runs: RunStore, ledger: LedgerStore, run_id: str, seq: int) -> Checkpoint:
    """The run as it was right after ledger record ``seq``, rebuilt from the ledger.

    Starts from the nearest kept anchor at or before ``seq`` (values redacted in the ledger
    show as the ledger has them there) or from the first record, and replays up to ``seq``.
    """
    peek = getattr(ledger, "peek_head", None)
    head = peek(run_id) if peek is not None else ledger.head(run_id)
    if not head.seq:
        raise RunNotFoundError(run_id)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or seq > head.seq:
        raise InvalidInputError(f"Run {run_id} has records 1..{head.seq}; there is no seq {seq}")
    base, start = _blank(run_id), LedgerHead()
    anchor = ledger.find_anchor(run_id, seq)
    if anchor is not None:
        try:
            base = Checkpoint.from_dict(anchor["checkpoint"])
            start = LedgerHead(int(anchor["seq"]), anchor.get("head_hash"), anchor.get("offset"))
        except (KeyError, TypeError, ValueError):
            base, start = _blank(run_id), LedgerHead()
    _, wanted = ledger.read_after(run_id, start, until_seq=seq)
    if any(r.get("delta") is None for r in wanted):
        raise InvalidInputError(f"Run {run_id}: records up to seq {seq} were written before point-in-time "
                                "records (format 2); its past states cannot be rebuilt")
    secrets = secrets_by_record(ledger.get_secrets(run_id)) if _has_redactions(wanted) else None
    return replay(base, wanted, secrets=secrets, path=f"ledger of run {run_id}")


def check_signed_head(opened: OpenedRun, *, signer: Any, ledger: LedgerStore, run_id: str) -> None:
    """With a signing key, refuse to extend a head that does not carry our valid signature.

    Every batch the runtime writes ends with a signed record, and a crash cannot produce
    unsigned complete records after it: unsigned or badly signed records at the head are
    tampering (:class:`VerificationFailedError`, nothing written). A run whose ledger was
    never signed (begun before a key was configured) is adopted and signed from now on.
    """
    if signer is None or not opened.head.seq:
        return
    last = opened.last_record
    signature = last.get("signature") if last is not None else opened.checkpoint.signature
    if signature is None:
        if any(r.get("signature") for r in ledger.list(run_id)):
            raise VerificationFailedError(
                f"run {run_id}: records after the last signed head are not signed (appended by someone "
                "without the key?); refusing to adopt or sign them — run `abstractruntime verify`")
        return
    verify = getattr(signer, "verify_head", None)
    if verify is None:
        return  # a signer that cannot verify (a custom one): nothing to check against
    try:
        verify(signature, run_id=run_id)
    except VerificationFailedError as exc:
        raise VerificationFailedError(f"run {run_id}: the ledger head's signature does not verify ({exc}); "
                                      "refusing to adopt or sign it") from None
    if signature.get("seq") != opened.head.seq or signature.get("head_hash") != opened.head.head_hash:
        raise VerificationFailedError(
            f"run {run_id}: the signature covers seq {signature.get('seq')} but the ledger ends at seq "
            f"{opened.head.seq}; records after the last signed head are tampering")
