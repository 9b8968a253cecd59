"""Opening a run: a *proven* checkpoint + replay of the ledger tail, and the state at any past position.

The checkpoint is a cache and is never believed: it is used only when the ledger record at its
position carries its hash and the digest of its state (docs/file-format.md, "run.json"). An
unproven checkpoint — edited, rolled back, copied from another position — is ignored: the run
is rebuilt from the last proven anchor, or from its first record. A checkpoint naming a position
the ledger does not have is truncation or forgery: refused. Values the ledger redacted are
filled in only where a marker commits to them (:mod:`~abstractruntime.core.secret_values`).

Runs whose records are older formats are read as those formats were: format-2 records are
replayed from the first one (their checkpoint is used only for the secrets their records did
not keep); a format-1 prefix, which has no deltas, takes its state from the checkpoint.
"""

from __future__ import annotations

from dataclasses import field
from .fastclass import dataclass
from typing import Any, Optional

from .errors import (
    CorruptRecordError,
    InvalidInputError,
    MisplacedRecordError,
    RunNotFoundError,
    SecretMissingError,
    VerificationFailedError,
)
from .logs import get_logger
from .markers import SECRET, document_value, run_value
from .models import RunState, RunStatus, WaitState
from .ports import Capability, Checkpoint, LedgerHead, LedgerStore, Pending, RunStore, StoredCheckpoint, \
    has_capability
from .records import JCS_FORMATS, record_hash3
from .secret_values import SecretKeeper, shown_text
from .session import RunParts
from .state import StateImage, digest_of
from .usage_totals import unsettled_reports
from .values import UndefinedValueError, ValueTable, ValueWriter
from .wal import apply_record, carries_whole_state, record_parts
from .wal_legacy import replay as legacy_replay, secrets_by_record

log = get_logger("abstractruntime.recovery")


@dataclass
class OpenedRun:
    """A run as rebuilt for reading or writing."""

    parts: RunParts
    # The position the stored checkpoint reflects, when it was proven (None: rebuilt).
    saved: Optional[LedgerHead]
    # The ledger's durable head (what the next append must extend).
    head: LedgerHead
    # A state saved with RunStore.save by a store that cannot record edits (in memory): to record.
    external: Optional[RunState] = None
    # The last record of the ledger as read (None when the tail was empty).
    last_record: Optional[dict[str, Any]] = None
    # The status the stored checkpoint (and so the query index) shows.
    saved_status: Optional[RunStatus] = None
    # The state came from older-format records: the next record must carry every field.
    legacy: bool = False
    # Why the stored checkpoint was not used (for verify and logs).
    notes: list[str] = field(default_factory=list)
    # The adoption a signing writer records before anything else (see check_signed_head).
    adoption: Optional["Adoption"] = None

    @property
    def checkpoint(self) -> Checkpoint:
        """The live run."""
        return self.parts.checkpoint


def _load_stored(runs: RunStore, run_id: str, unreadable: list[CorruptRecordError]) -> Optional[StoredCheckpoint]:
    try:
        stored = runs.load_checkpoint(run_id)
    except MisplacedRecordError:
        raise
    except CorruptRecordError as exc:
        # A cache written without fsync: after a power loss it may be torn. The ledger decides.
        log.warning("%s; rebuilding run %s from its ledger", exc, run_id)
        unreadable.append(exc)
        return None
    if stored is not None and stored.run_id != run_id:
        raise MisplacedRecordError(f"the checkpoint of run {run_id} describes run {stored.run_id!r} "
                                   "(a file's content must agree with its place)")
    return stored


def prove(ledger: LedgerStore, run_id: str, stored: StoredCheckpoint) -> Optional[dict[str, Any]]:
    """The ledger record proving ``stored`` (format 3 or 4), or ``None`` when it does not prove.

    It proves when the record at its position has that position's hash, is unedited, and
    carries the digest of the checkpoint's state.
    """
    position = stored.ledger
    if not position.seq or stored.legacy is not None:
        return None
    doc = ledger.record_at(run_id, position)
    if doc is None or doc.get("format") not in JCS_FORMATS or doc.get("record_hash") != position.head_hash:
        return None
    try:
        # An unchained ledger (upstream 0.0.1's in-memory one) has no hashes: the digest alone decides.
        unchained = position.head_hash is None and doc.get("record_hash") is None
        if (not unchained and record_hash3(doc) != position.head_hash) or doc.get("state") != digest_of(stored.state):
            return None
    except (InvalidInputError, ValueError):
        return None
    return doc


def open_run(runs: RunStore, ledger: LedgerStore, run_id: str, *, for_writing: bool = True,
             secrets: bool = True) -> OpenedRun:
    """Rebuild ``run_id``: a proven checkpoint (or anchor, or nothing) + replay of the ledger after it.

    Raises :class:`RunNotFoundError` when neither exists, :class:`VerificationFailedError` when the
    checkpoint names a position the ledger does not have, :class:`CorruptRecordError` when the
    ledger cannot be replayed. ``for_writing``: a redacted secret whose value is gone raises
    :class:`SecretMissingError` (for reading it is shown redacted). ``secrets=False`` (reading
    only) never reads the run's secrets store: every secret shows redacted, as readers see it.
    """
    if not secrets and for_writing:
        raise ValueError("a run opened for writing needs its secrets")
    unreadable: list[CorruptRecordError] = []
    stored = _load_stored(runs, run_id, unreadable)
    if stored is not None and not has_capability(runs, Capability.CHECKPOINTS):
        stored = None  # a 0.0.1-style store keeps only the RunState: the ledger rebuilds the rest
    external = stored.run_view() if stored is not None and stored.external else None
    # Where the ledger ends, to refuse a checkpoint beyond it; the chain-checked head comes with
    # the tail read from the proven checkpoint below (a store that can, reads it off the last
    # line instead of checking the whole ledger on every open).
    head = ledger.peek_head(run_id) if has_capability(ledger, Capability.PEEK_HEAD) else ledger.head(run_id)  # type: ignore[attr-defined]
    if stored is not None and stored.ledger.seq > head.seq and stored.legacy is None:
        raise VerificationFailedError(
            f"run {run_id}: its checkpoint names ledger seq {stored.ledger.seq} but the ledger ends at seq {head.seq} "
            "(truncated, or a forged checkpoint); nothing was written — run `abstractruntime verify`, and delete "
            "run.json only if the ledger is known good")
    notes: list[str] = []
    table = ValueTable()
    base: Optional[StateImage] = None
    start = LedgerHead()
    base_doc: Optional[dict[str, Any]] = None
    if stored is not None and stored.legacy is None:
        base_doc = prove(ledger, run_id, stored)
        if base_doc is not None:
            base, start = StateImage(stored.state), stored.ledger
        else:
            notes.append("checkpoint_state_mismatch")
            log.warning("run %s: its checkpoint is not proven by the ledger; rebuilding from the ledger", run_id)
    if base is None:
        anchored = _proven_anchor(ledger, run_id, head.seq)
        if anchored is not None:
            base, start, base_doc = anchored
    if stored is not None and stored.legacy is not None and base is None:
        return _open_legacy(runs, _hiding(ledger, secrets), run_id, stored, for_writing, external)
    head, tail = ledger.read_after(run_id, start)
    if base is None and not tail:
        if unreadable:
            raise unreadable[0]
        if head.seq:
            raise CorruptRecordError(f"run {run_id} has no checkpoint and its ledger cannot rebuild it")
        raise RunNotFoundError(run_id)
    if tail and tail[0].get("format") not in JCS_FORMATS and base is None:
        upgraded = _upgraded_at(tail)
        if upgraded is None:
            return _open_legacy(runs, _hiding(ledger, secrets), run_id, stored, for_writing, external)
        tail = tail[upgraded:]  # a run begun in an older format: its first newer record carries the whole state
    image = base if base is not None else StateImage.blank(run_id)
    if base is not None:
        _file_values(ledger, run_id, table, image, stored.values if stored is not None and base_doc is not None
                     and start == stored.ledger else [], start)
    _replay(image, tail, table, run_id)
    last = tail[-1] if tail else base_doc
    keeper = _keeper(ledger, run_id, image, tail) if secrets else SecretKeeper()
    checkpoint = materialize(image, table, keeper, head, strict=for_writing)
    writer = _seeded_writer(image, table, checkpoint) if for_writing else None
    if external is not None:
        checkpoint.run = external  # a process-local edit (in-memory store): the runtime records it on write
    parts = RunParts(checkpoint, image, table, keeper, head_digest=last.get("state") if last else None,
                     writer=writer, unsettled=unsettled_reports(checkpoint.metadata, tail))
    saved = start if base is not None and stored is not None and start == stored.ledger else None
    return OpenedRun(parts=parts, saved=saved, head=head, external=external, last_record=last,
                     saved_status=RunStatus(stored.run_doc.get("status")) if saved is not None and stored is not None
                     else None, notes=notes)


def _seeded_writer(image: StateImage, table: ValueTable, checkpoint: Checkpoint) -> Optional[ValueWriter]:
    """A writer that knows the stored values the run's variables are (so the next records refer to
    them and extend them, instead of writing them again); none for a run that ended."""
    if checkpoint.run.status.is_terminal:
        return None
    writer = ValueWriter(table)
    writer.seed(image.vars, checkpoint.run.vars)
    return writer


def _replay(image: StateImage, docs: list[dict[str, Any]], table: ValueTable, run_id: str) -> None:
    for doc in docs:
        seq = doc.get("seq")
        if doc.get("format") not in JCS_FORMATS:
            raise CorruptRecordError(f"record seq {seq} of run {run_id} is format {doc.get('format')} after "
                                     "format-3 or format-4 records")
        try:
            for part in record_parts(doc):
                table.collect(part, int(seq or 0), doc.get("_offset"))
            apply_record(image, doc, table, run_id)
        except (ValueError, TypeError, KeyError, UndefinedValueError) as exc:
            raise CorruptRecordError(f"record seq {seq} cannot be replayed: {exc}", path=f"ledger of run {run_id}") \
                from exc


def _file_values(ledger: LedgerStore, run_id: str, table: ValueTable, image: StateImage,
                 hints: list[list[int]], upto: LedgerHead) -> None:
    """File the definitions the image refers to: from the hinted lines, else by reading the ledger."""
    needed = table.closure(document_value(image.document()))
    if not needed:
        return
    if hints:
        for doc in ledger.records_at(run_id, [(int(h[0]), h[1]) for h in hints]):
            for part in record_parts(doc):
                table.collect(part, int(doc.get("seq") or 0))
        needed = {vid for vid in table.closure(document_value(image.document())) if vid not in table}
        if not needed:
            return
    _, prefix = ledger.read_after(run_id, LedgerHead(), until_seq=upto.seq)
    for doc in prefix:
        if doc.get("format") in JCS_FORMATS:
            for part in record_parts(doc):
                table.collect(part, int(doc.get("seq") or 0), doc.get("_offset"))


def _proven_anchor(ledger: LedgerStore, run_id: str, upto: int) -> Optional[tuple[StateImage, LedgerHead,
                                                                                   dict[str, Any]]]:
    """The last anchor at or before ``upto`` that the ledger proves."""
    if not has_capability(ledger, Capability.ANCHORS) or not upto:
        return None
    anchor = ledger.find_anchor(run_id, upto)
    try:
        stored = StoredCheckpoint.from_dict(anchor["checkpoint"]) if anchor else None
    except (KeyError, TypeError, ValueError):
        return None
    if stored is None or stored.run_id != run_id:
        return None
    doc = prove(ledger, run_id, stored)
    if doc is None:
        return None
    return StateImage(stored.state), stored.ledger, doc


def _keeper(ledger: LedgerStore, run_id: str, image: StateImage, tail: list[dict[str, Any]]) -> SecretKeeper:
    """The run's secrets: its key (new commitments must use it) and the values its markers commit to.

    A marker may sit in the state, in a record of the tail, or inside a stored value the state
    refers to (a conversation whose messages carry a key): a store that keeps secrets gives them
    all, in one small read (most runs have none). Another store is asked only when a marker shows.
    """
    if has_capability(ledger, Capability.SECRETS):
        return SecretKeeper.from_entries(ledger.get_secrets(run_id))
    from .jcs import jcs

    marker = ('"' + SECRET + '"').encode()
    if marker in jcs(image.document()) or any(marker in jcs(record_parts(doc)) for doc in tail):
        return SecretKeeper.from_entries(ledger.get_secrets(run_id))
    return SecretKeeper()


def materialize(image: StateImage, table: ValueTable, keeper: SecretKeeper, head: LedgerHead, *,
                strict: bool) -> Checkpoint:
    """The live run the image stands for: stored values resolved, secrets filled in.

    A secret whose value is gone raises :class:`SecretMissingError` when ``strict`` and the run
    has not ended; otherwise it shows redacted.
    """
    terminal = RunStatus(image.run.get("status") or "running").is_terminal

    def fill(marker: dict[str, Any]) -> Any:
        if keeper.knows(marker[SECRET]):
            return keeper.fill(marker)
        if strict and not terminal:
            raise SecretMissingError(
                f"the real value of a redacted secret ({marker['$shown']!r}) is missing from the run's secrets store; "
                "restore it from a backup — the run is not continued with a placeholder", commitment=marker[SECRET])
        return shown_text(marker)

    try:
        run_doc = table.resolve(run_value(image.run), fill)
        kernel = table.resolve(image.kernel, fill)
    except UndefinedValueError as exc:
        raise CorruptRecordError(f"run {image.run.get('run_id')}: {exc}") from exc
    run = RunState.from_dict(run_doc)
    if run_doc.get("waiting") is not None:
        run.waiting = WaitState.from_dict(run_doc["waiting"])
    pending = kernel.get("pending")
    return Checkpoint(run=run, ledger=head, workflow=kernel.get("workflow"), origin=kernel.get("origin"),
                      pending=Pending.from_dict(pending) if pending is not None else None,
                      effects=int(kernel.get("effects") or 0), metadata=kernel.get("metadata") or {})


def image_of(checkpoint: Checkpoint, seal: Any) -> StateImage:
    """An image of a live checkpoint (``seal(value, path)`` gives a value's stored form): used when a
    run's history is older-format records and its next record carries every field."""
    run = checkpoint.run.to_dict()
    document = {
        "run": {**{k: seal(v, [k]) for k, v in run.items() if k != "vars"},
                "vars": {k: seal(v, [k]) for k, v in run["vars"].items()}},
        "kernel": {"effects": checkpoint.effects,
                   "pending": seal(checkpoint.pending.to_dict(), ["pending"]) if checkpoint.pending else None,
                   "metadata": seal(checkpoint.metadata, ["metadata"]), "workflow": seal(checkpoint.workflow,
                                                                                          ["workflow"]),
                   "origin": seal(checkpoint.origin, ["origin"])},
    }
    return StateImage(document)


def _upgraded_at(records: list[dict[str, Any]]) -> Optional[int]:
    """The index of the first format-3 or format-4 record after older ones, when it carries the whole
    state and no older record follows it (the run rebuilds from it alone), else ``None``."""
    for index, doc in enumerate(records):
        if doc.get("format") in JCS_FORMATS:
            if carries_whole_state(doc) and all(r.get("format") in JCS_FORMATS for r in records[index:]):
                return index
            return None
    return None


def _open_legacy(runs: RunStore, ledger: LedgerStore, run_id: str, stored: Optional[StoredCheckpoint],
                 for_writing: bool, external: Optional[RunState]) -> OpenedRun:
    """A run whose records are format 1 or 2: rebuilt as those formats were (see the module docstring)."""
    head, records = ledger.read_after(run_id, LedgerHead())
    if any(r.get("format") in JCS_FORMATS for r in records):
        raise CorruptRecordError(f"run {run_id}: format-3 or format-4 records follow older ones without carrying the whole state")
    legacy = stored.legacy if stored is not None else None
    if not records and legacy is None:
        raise RunNotFoundError(run_id)
    entries = ledger.get_secrets(run_id)
    keeper = SecretKeeper.from_entries(entries)
    grouped = secrets_by_record(keeper.legacy)
    if records and all(r.get("delta") is not None for r in records):
        from .wal_legacy import blank_checkpoint

        checkpoint = legacy_replay(blank_checkpoint(run_id), records, secrets=grouped, path=f"ledger of run {run_id}")
        if legacy is not None and legacy.ledger.seq == head.seq and legacy.ledger.head_hash == head.head_hash:
            _fill_from(checkpoint.run.vars, legacy.run.vars)
    elif legacy is not None:
        if legacy.ledger.seq > head.seq:
            raise VerificationFailedError(f"run {run_id}: its checkpoint names ledger seq {legacy.ledger.seq} but the "
                                          f"ledger ends at seq {head.seq}; nothing was written")
        later = [r for r in records if isinstance(r.get("seq"), int) and r["seq"] > legacy.ledger.seq]
        checkpoint = legacy_replay(legacy, later, secrets=grouped, path=f"ledger of run {run_id}")
    else:
        raise CorruptRecordError(f"run {run_id} has no checkpoint and its ledger predates format 2: "
                                 "restore run.json from a backup")
    checkpoint.ledger = head
    parts = RunParts(checkpoint, StateImage.blank(run_id), ValueTable(), keeper)
    return OpenedRun(parts=parts, saved=None, head=head, external=external,
                     last_record=records[-1] if records else None,
                     saved_status=stored.run_view().status if stored is not None else None, legacy=True)


def _fill_from(target: dict[str, Any], source: dict[str, Any]) -> None:
    """Format-2 secrets a checkpoint kept: put back only where the ledger holds the placeholder."""
    from .redaction import REDACTED

    for key, value in list(target.items()):
        if value == REDACTED and key in source and source[key] != REDACTED:
            target[key] = source[key]
        elif isinstance(value, dict) and isinstance(source.get(key), dict):
            _fill_from(value, source[key])


def state_at(runs: RunStore, ledger: LedgerStore, run_id: str, seq: int, *, secrets: bool = True) -> Checkpoint:
    """The run as it was right after ledger record ``seq``, rebuilt from the ledger.

    Starts from the nearest proven anchor at or before ``seq``, or from the first record, and
    replays up to ``seq``. Secrets show as their values while the run's secrets keep them
    (``secrets=False``: always as readers see them, redacted).
    """
    found = _image_at(ledger, run_id, seq)
    if found is None:
        return _legacy_state_at(_hiding(ledger, secrets), run_id, seq)
    image, table, wanted, position = found
    keeper = _keeper(ledger, run_id, image, wanted) if secrets else SecretKeeper()
    return materialize(image, table, keeper, position, strict=False)


def _image_at(ledger: LedgerStore, run_id: str,
              seq: int) -> Optional[tuple[StateImage, ValueTable, list[dict[str, Any]], LedgerHead]]:
    """The image of the run right after record ``seq``, the values filed on the way, the records
    replayed and the position; ``None`` when records of an older format stand before it."""
    head = ledger.peek_head(run_id) if has_capability(ledger, Capability.PEEK_HEAD) else ledger.head(run_id)  # type: ignore[attr-defined]
    if not head.seq:
        raise RunNotFoundError(run_id)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or seq > head.seq:
        raise InvalidInputError(f"Run {run_id} has records 1..{head.seq}; there is no seq {seq}")
    table = ValueTable()
    anchored = _proven_anchor(ledger, run_id, seq)
    image, start = (anchored[0], anchored[1]) if anchored is not None else (StateImage.blank(run_id), LedgerHead())
    _, wanted = ledger.read_after(run_id, start, until_seq=seq)
    if any(r.get("format") not in JCS_FORMATS for r in wanted) or (anchored is None and wanted
                                                                  and wanted[0].get("format") not in JCS_FORMATS):
        return None
    if anchored is not None:
        _file_values(ledger, run_id, table, image, [], start)
    _replay(image, wanted, table, run_id)
    last = wanted[-1] if wanted else anchored[2] if anchored is not None else None
    return image, table, wanted, LedgerHead(seq, last.get("record_hash") if last else None)


@dataclass
class StateDocument:
    """A run's state document at one ledger position, as the ledger holds it (docs/file-format.md,
    "State digests"): secrets as markers committing to their values, large values as ``{"$v": id}``
    references, which ``table`` resolves."""

    document: dict[str, Any]
    ledger: LedgerHead
    table: ValueTable

    def digest(self) -> str:
        """The state digest of the document."""
        return digest_of(self.document)

    def shown(self) -> Checkpoint:
        """The run as readers see it at this position: secrets shown redacted, stored values resolved."""
        return materialize(StateImage(self.document), self.table, SecretKeeper(), self.ledger, strict=False)


def state_document(runs: RunStore, ledger: LedgerStore, run_id: str,
                   seq: Optional[int] = None) -> Optional[StateDocument]:
    """The run's state document right after record ``seq`` (default: at its head), rebuilt from the
    ledger (a proven checkpoint or anchor, and the records after it); reads no secret value.

    ``None`` when the run's records are of an older format (they hold no state document).
    Raises :class:`RunNotFoundError` for an unknown run and :class:`InvalidInputError` for a
    ``seq`` the ledger does not have.
    """
    import json

    from .jcs import jcs

    if seq is None:
        opened = open_run(runs, ledger, run_id, for_writing=False, secrets=False)
        if opened.legacy:
            return None
        image, table, position = opened.parts.image, opened.parts.table, opened.head
    else:
        found = _image_at(ledger, run_id, seq)
        if found is None:
            return None
        image, table, _, position = found
    document: dict[str, Any] = json.loads(jcs(image.document()))
    return StateDocument(document, position, table)


class _HiddenSecrets:
    """A ledger store whose secrets store reads as empty (a run opened as readers see it)."""

    def __init__(self, ledger: LedgerStore) -> None:
        self._ledger = ledger

    def get_secrets(self, run_id: str) -> list[dict[str, Any]]:
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


def _hiding(ledger: LedgerStore, secrets: bool) -> LedgerStore:
    return ledger if secrets else _HiddenSecrets(ledger)  # type: ignore[return-value]


def _legacy_state_at(ledger: LedgerStore, run_id: str, seq: int) -> Checkpoint:
    from .wal_legacy import blank_checkpoint

    _, wanted = ledger.read_after(run_id, LedgerHead(), until_seq=seq)
    if any(r.get("delta") is None for r in wanted):
        raise InvalidInputError(f"Run {run_id}: records up to seq {seq} were written before point-in-time "
                                "records (format 2); its past states cannot be rebuilt")
    if any(r.get("format") in JCS_FORMATS for r in wanted):
        image, table = None, ValueTable()
        checkpoint = blank_checkpoint(run_id)
        for index, doc in enumerate(wanted):
            if doc.get("format") in JCS_FORMATS:
                image = StateImage.blank(run_id)
                _replay(image, wanted[index:], table, run_id)
                keeper = _keeper(ledger, run_id, image, wanted[index:])
                return materialize(image, table, keeper, LedgerHead(seq, wanted[-1].get("record_hash")), strict=False)
        return checkpoint
    keeper = SecretKeeper.from_entries(ledger.get_secrets(run_id))
    return legacy_replay(blank_checkpoint(run_id), wanted, secrets=secrets_by_record(keeper.legacy),
                         path=f"ledger of run {run_id}")


@dataclass(frozen=True)
class Adoption:
    """A signing writer takes over a ledger its key did not sign: recorded as a ``signing`` record
    ``{"adopt": {"key_id", "from_seq"}}`` at the start of its next batch, which that key signs.
    ``from_seq`` is the first record no signature of that key covered."""

    key_id: str
    from_seq: int

    def result(self) -> dict[str, Any]:
        """The record's ``result``."""
        return {"adopt": {"key_id": self.key_id, "from_seq": self.from_seq}}


def rotation_of(doc: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The ``{"from", "to", "public_key"}`` of a ``signing`` record that rotates keys, else ``None``."""
    if not doc or doc.get("kind") != "signing" or not isinstance(doc.get("result"), dict):
        return None
    rotate = doc["result"].get("rotate")
    return rotate if isinstance(rotate, dict) else None


def head_signature(opened: OpenedRun) -> Optional[dict[str, Any]]:
    """The signature of the run's head as its ledger carries it (format 1: ``run.json``'s, since
    those records carried none)."""
    last = opened.last_record
    if last is None:
        return None
    signature = opened.checkpoint.signature if last.get("format") == 1 else last.get("signature")
    return signature if isinstance(signature, dict) else None


def check_signed_head(opened: OpenedRun, *, signer: Any, ledger: LedgerStore, run_id: str,
                      adopt_unsigned: bool = False) -> Optional[Adoption]:
    """Before a writer extends a ledger: the head must carry a valid signature of its key, in force.

    A signing runtime signs the last record of every batch in the same write, and a crash
    cannot leave whole records after it, so a head its key did not sign — unsigned (a run
    begun without a key, stripped signatures, an appended forgery), signed by another key, or
    by a key the run was handed over from — is refused with :class:`VerificationFailedError`
    and nothing is written. ``adopt_unsigned`` (the operator's explicit choice) returns the
    :class:`Adoption` the writer records, signed, before anything else. A writer without a key
    refuses a signed head: continuing it would leave the run's next records unsigned.
    """
    head = opened.head
    if not head.seq or not has_capability(ledger, Capability.CHAINED):
        return None  # an unchained ledger (0.0.1's in-memory one) has no hashes to sign: nothing is signed
    signature = head_signature(opened)
    signed_by = signature.get("key_id") if signature is not None else None
    if signer is None:
        if signed_by is not None:
            raise VerificationFailedError(
                f"run {run_id} is signed (its head carries a signature of key {signed_by}); continuing it without "
                "that key would leave its next records unsigned: give the signing key (CLI --signing-key PEM_FILE "
                "or $ABSTRACTRUNTIME_SIGNING_KEY; Runtime(signer=...)); nothing was written", key_id=signed_by)
        return None
    key_id = getattr(signer, "key_id", None)
    last = opened.last_record
    rotation = rotation_of(last)
    why = _not_ours(signature, signer, run_id, head)
    if why is None:
        if rotation is not None and rotation.get("from") == key_id:
            raise VerificationFailedError(
                f"run {run_id} was handed over from key {key_id} to key {rotation.get('to')} (seq {head.seq}); this "
                "writer's key is no longer in force there: continue it with the new key; nothing was written",
                key_id=key_id)
        return None
    if rotation is not None and rotation.get("to") == key_id and signed_by == rotation.get("from") \
            and not adopt_unsigned:
        raise VerificationFailedError(
            f"run {run_id} is being handed over from key {signed_by} to this writer's key {key_id} (seq {head.seq}), "
            "but the new key has not signed it yet (the rotation was interrupted): run `abstractruntime keys rotate "
            f"{run_id} --from OLD.pem --to NEW.pem` again; nothing was written", key_id=key_id)
    if adopt_unsigned:
        return Adoption(str(key_id), _first_not_signed_by(ledger, run_id, signer))
    raise VerificationFailedError(
        f"run {run_id}: its ledger head (seq {head.seq}) is not signed by this writer's key {key_id}: {why}; refusing "
        "to extend it, nothing was written. Check the run (`abstractruntime verify`); to take it over, adopt it "
        "explicitly (--adopt-unsigned, or `abstractruntime keys adopt RUN`; Runtime(adopt_unsigned=True)): the "
        "adoption is recorded in the ledger and signed by this key", key_id=key_id)


def rotation_step(opened: OpenedRun, *, old: Any, new: Any, ledger: LedgerStore, run_id: str) -> str:
    """What handing the run over from ``old`` to ``new`` still needs: ``"done"`` (the new key signs
    its head already), ``"acknowledge"`` (the old key's rotation is at the head, the new key's first
    batch is missing: an interrupted rotation) or ``"rotate"``. Raises
    :class:`VerificationFailedError` when ``old`` is not the key in force."""
    try:
        if check_signed_head(opened, signer=new, ledger=ledger, run_id=run_id) is None:
            return "done"
    except VerificationFailedError:
        pass
    rotation, signature = rotation_of(opened.last_record), head_signature(opened)
    if rotation is not None and (rotation.get("from"), rotation.get("to")) == (old.key_id, new.key_id) \
            and signature is not None and signature.get("key_id") == old.key_id:
        if hasattr(old, "verify_head"):
            old.verify_head(signature, run_id=run_id)  # raises when it is not the old key's own
        return "acknowledge"
    check_signed_head(opened, signer=old, ledger=ledger, run_id=run_id)
    return "rotate"


def _not_ours(signature: Optional[dict[str, Any]], signer: Any, run_id: str, head: LedgerHead) -> Optional[str]:
    """Why ``signature`` is not this signer's valid signature of ``head`` (``None`` when it is)."""
    if signature is None:
        return "it carries no signature (a run begun without a key, signatures removed, or records appended " \
               "without the key)"
    if signature.get("key_id") != getattr(signer, "key_id", None):
        return (f"it is signed by key {signature.get('key_id')} (to hand a run over to a new key: "
                "`abstractruntime keys rotate RUN --from OLD.pem --to NEW.pem`)")
    verify = getattr(signer, "verify_head", None)
    if verify is not None:  # a signer that cannot verify (a custom one) is trusted by its key id
        try:
            verify(signature, run_id=run_id)
        except VerificationFailedError as exc:
            return f"its signature names this key but does not verify ({exc})"
    if signature.get("seq") != head.seq or signature.get("head_hash") != head.head_hash:
        return f"its signature covers seq {signature.get('seq')}, not the head"
    return None


def _first_not_signed_by(ledger: LedgerStore, run_id: str, signer: Any) -> int:
    """1 + the seq of the last record carrying this signer's valid signature (1 if none does)."""
    _, records = ledger.read_after(run_id, LedgerHead())
    verify = getattr(signer, "verify_head", None)
    key_id = getattr(signer, "key_id", None)
    for doc in reversed(records):
        signature = doc.get("signature")
        if not isinstance(signature, dict) or signature.get("key_id") != key_id \
                or signature.get("seq") != doc.get("seq") or signature.get("head_hash") != doc.get("record_hash"):
            continue
        try:
            if verify is not None:
                verify(signature, run_id=run_id)
        except VerificationFailedError:
            continue
        return int(doc["seq"]) + 1
    return 1
