"""Gathering everything a report shows about one run, through the stores' public calls only.

Records are read as plain dicts and every field is looked up with ``.get``: the page must
render ledgers of any record format (extra fields are shown as they are, missing ones are
left blank). Reading never writes to the run and never imports workflow code.

A page is built from redacted values only. The state it shows is rebuilt from the ledger
(and its redacted anchors) through a view of the ledger that has no kept secrets, so a value
the ledger redacted — by the default rules or by rules the workflow declared — shows as the
ledger has it, whatever the checkpoint or the secrets file hold; the checkpoint's state is
used only when the ledger cannot be replayed (records older than format 2, a corrupt ledger).
Then everything the page shows (state, records, errors, verdict, marks, warnings) goes
through a :class:`~abstractruntime.core.redaction.Redactor`, so a secret the ledger itself
still holds (an error recorded in the clear, a ledger written under an older vocabulary) is
not copied into the page either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.json_codec import loads_strict
from .repeats import abbreviate
from ..core.redaction import Redactor
from ..core.errors import (
    AbstractRuntimeError,
    CorruptRecordError,
    InvalidInputError,
    RunNotFoundError,
)

log = logging.getLogger("abstractruntime.report")

# Related runs (other runs of the same workflow) only teach the graph its other nodes and
# edges; a bounded number keeps a single report cheap in a store with many runs.
RELATED_RUNS = 20
RELATED_RECORDS = 50_000


@dataclass
class RunData:
    """What the page is built from: the run, its records, the verdict and its marks."""

    run_id: str
    store_path: str
    run: dict[str, Any]
    checkpoint: Optional[dict[str, Any]]
    records: list[dict[str, Any]]
    total_records: int
    at: Optional[int]
    verify: dict[str, Any]
    verify_scope: str  # "files": the full verify_run; "chain": the hash chain only
    bookmarks: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    related: list[tuple[list[str], list[tuple[str, str]]]] = field(default_factory=list)
    rebuilt: bool = False  # ``run`` is the state rebuilt at ``at`` (not the last checkpoint)

    @property
    def workflow_id(self) -> str:
        """The run's workflow id (from the checkpoint, else from the start record)."""
        wid = self.run.get("workflow_id")
        if not wid:
            for rec in self.records[:1]:
                result = rec.get("result")
                if isinstance(result, dict):
                    wid = result.get("workflow_id")
        return str(wid or "?")

    @property
    def recorded_workflow(self) -> dict[str, Any]:
        """``{"workflow_id", "sha256"}`` of the workflow the run's hash chain recorded (the last
        record that names one among those shown; a format-1 run: its checkpoint's). A path a run
        recorded (``source``, older formats) is left out: code is located by the operator."""
        for rec in reversed(self.records):
            delta = rec.get("delta")
            found = delta.get("workflow") if isinstance(delta, dict) else None
            if isinstance(found, dict) and found.get("sha256"):
                return {"workflow_id": found.get("workflow_id"), "sha256": found.get("sha256")}
        stored = (self.checkpoint or {}).get("workflow")
        if isinstance(stored, dict) and not any(isinstance(r.get("delta"), dict) for r in self.records[:1]):
            return {"workflow_id": stored.get("workflow_id"), "sha256": stored.get("sha256")}
        return {}


def _checkpoint(store: Any, run_id: str, warnings: list[str]) -> Optional[dict[str, Any]]:
    try:
        checkpoint = store.runs.load_checkpoint(run_id)
    except AbstractRuntimeError as exc:
        warnings.append(f"checkpoint unreadable: {exc}")
        return None
    return checkpoint.to_dict() if checkpoint is not None else None


def _ledger_path(store: Any, run_id: str) -> Optional[Path]:
    path_fn = getattr(store.ledger, "path", None)
    if callable(path_fn):
        try:
            return Path(path_fn(run_id))
        except AbstractRuntimeError:
            return None
    return None


def _records(store: Any, run_id: str, warnings: list[str]) -> list[dict[str, Any]]:
    try:
        return [r for r in store.ledger.list(run_id) if isinstance(r, dict)]
    except CorruptRecordError as exc:
        # A corrupt ledger is exactly what an auditor needs to see: read what can be read,
        # line by line, and show the unreadable lines as rows of their own.
        warnings.append(f"ledger partly unreadable: {exc}")
        path = _ledger_path(store, run_id)
        return _tolerant_read(path) if path is not None else []


def _tolerant_read(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL ledger that parses; the others become ``unreadable`` rows."""
    out: list[dict[str, Any]] = []
    try:
        data = path.read_bytes()
    except OSError:
        return out
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            doc = loads_strict(raw)  # what the ledger's own reader accepts, no more
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            doc = None
            reason = str(exc)
        if isinstance(doc, dict):
            out.append(doc)
        else:
            text = raw.decode("utf-8", "replace")
            out.append({"kind": "unreadable", "status": "unreadable", "line": number,
                        "error": f"line {number} is not a JSON object" + (f" ({reason})" if doc is None else ""),
                        "raw": text[:2000]})
    return out


def _verify(store: Any, run_id: str, records: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    if getattr(store, "root", None) is not None:
        from ..storage.verify import verify_run

        return verify_run(store, run_id).to_dict(), "files"
    # A store without files (a database): the hash chain is all that can be checked here.
    from ..storage.ledger_chain import verify_ledger_chain

    chain = verify_ledger_chain(records)
    problems = [{"type": e.get("type"), "seq": e.get("seq"), "line": None, "message": e.get("message"),
                 "details": {}} for e in chain.get("errors", [])]
    return {"ok": bool(chain.get("ok")), "run_id": run_id, "count": chain.get("count", len(records)),
            "head_hash": chain.get("head_hash"), "head_seq": len(records), "problems": problems,
            "problems_omitted": 0, "notes": [], "notes_omitted": 0, "signature": "absent",
            "bookmarks_checked": 0, "checkpoint_head": None}, "chain"


def _bookmarks(store: Any, run_id: str, warnings: list[str]) -> list[dict[str, Any]]:
    marks = getattr(store, "bookmarks", None)
    if marks is None:
        return []
    try:
        return [b.to_dict() for b in marks.list(run_id)]
    except AbstractRuntimeError as exc:
        warnings.append(f"bookmarks unreadable: {exc}")
        return []


def _snapshots(store: Any, run_id: str, warnings: list[str]) -> list[dict[str, Any]]:
    snaps = getattr(store, "snapshots", None)
    if snaps is None:
        return []
    try:
        found = snaps.list(run_id=run_id)
    except AbstractRuntimeError as exc:
        warnings.append(f"snapshots unreadable: {exc}")
        return []
    out = []
    for snap in found:
        doc = snap.to_dict()
        state = doc.pop("run_state", None) or {}
        doc.pop("state", None)  # the state document: markers and references, nothing a page shows
        doc["run_status"] = state.get("status") if isinstance(state, dict) else None
        out.append(doc)
    return sorted(out, key=lambda d: (((d.get("ledger") or {}).get("seq") or 0), d.get("created_at") or ""))


def related_records(store: Any, run_id: str, workflow_id: str, *,
                    limit: int = RELATED_RUNS) -> list[tuple[list[str], list[tuple[str, str]]]]:
    """The transitions of up to ``limit`` other runs of the same workflow (the paths not taken)."""
    from .graph import transitions

    if limit <= 0 or workflow_id in ("", "?"):
        return []
    try:
        runs = store.runs.list_runs(workflow_id=workflow_id, limit=limit + 1)
    except (AbstractRuntimeError, AttributeError, TypeError, OSError) as exc:
        log.debug("related runs not listed: %s", exc)
        return []
    out: list[tuple[list[str], list[tuple[str, str]]]] = []
    budget = RELATED_RECORDS
    for other in runs:
        if other.run_id == run_id or len(out) >= limit or budget <= 0:
            continue
        try:
            recs = store.ledger.list(other.run_id)
        except AbstractRuntimeError:
            continue
        budget -= len(recs)
        nodes, steps = transitions(recs)
        out.append((nodes, list(dict.fromkeys(steps))))
    return out


def load_run(store: Any, run_id: str, *, at: Optional[int] = None, related: int = RELATED_RUNS,
             verify: Optional[dict[str, Any]] = None, redactor: Optional[Redactor] = None) -> RunData:
    """Read one run for a report; ``at`` cuts the ledger after that seq (the run as it was then).

    ``verify`` is the run's ``VerifyReport.to_dict()`` when the caller already has it
    (``report --all`` verifies the whole store first); otherwise the run is verified here.
    Everything returned is redacted (see the module docstring) by ``redactor`` (default:
    ``Redactor()``; pass one with a workflow's own rules to apply them too).

    Raises :class:`RunNotFoundError` when the store has neither a checkpoint nor a ledger for
    the run, and :class:`InvalidInputError` for an ``at`` outside the ledger.
    """
    warnings: list[str] = []
    checkpoint = _checkpoint(store, run_id, warnings)
    records = _records(store, run_id, warnings)
    if checkpoint is None and not records:
        raise RunNotFoundError(run_id)
    if verify is not None:
        scope = "files"
    else:
        verify, scope = _verify(store, run_id, records)
    total = len(records)
    if at is not None:
        last = _seq(records[-1]) if records else 0
        if at < 1 or at > (last or 0):
            raise InvalidInputError(f"--at {at} is outside the ledger of run {run_id} (seq 1..{last})")
        records = [r for r in records if (_seq(r) or 0) <= at]
    records = abbreviate(records)  # an agent's conversation shown once, not at every turn
    run = dict((checkpoint or {}).get("run") or {})
    rebuilt = None
    if at is not None:
        rebuilt, why = _state_at(store, run_id, at)
        if rebuilt is not None:
            run = rebuilt
        else:
            warnings.append(f"the state at seq {at} could not be rebuilt ({why}); the state shown is the last "
                            "checkpoint's, the timeline and graph stop at seq {at}".replace("{at}", str(at)))
    elif records and _seq(records[-1]):
        # The state as the ledger has it (redacted), not the checkpoint's copy of the real values.
        current, _ = _state_at(store, run_id, _seq(records[-1]) or 0)
        if current is not None:
            run = current
    redactor = redactor if redactor is not None else Redactor()
    data = RunData(run_id=run_id, store_path=str(getattr(store, "root", "") or ""), run=run, checkpoint=checkpoint,
                   records=records, total_records=total, at=at, verify=verify, verify_scope=scope,
                   bookmarks=_bookmarks(store, run_id, warnings), snapshots=_snapshots(store, run_id, warnings),
                   warnings=warnings, rebuilt=rebuilt is not None)
    _redact(data, redactor)
    if related:
        data.related = related_records(store, run_id, data.workflow_id, limit=related)
    return data


# Record fields that hold hashes, positions, times and the runtime's own ids: never a secret,
# and the bulk of a large ledger's strings, so they are not scanned.
_PLAIN_FIELDS = frozenset({"seq", "format", "prev_hash", "record_hash", "signature", "started_at", "ended_at",
                           "attempt", "status", "kind", "step_id", "idempotency_key", "run_id"})


def _redact(data: RunData, redactor: Redactor) -> None:
    """Redact, in place, every value of ``data`` the page shows."""
    data.run = redactor.redact(data.run)
    if data.checkpoint is not None:
        data.checkpoint = redactor.redact({**data.checkpoint, "run": data.run})
    records = []
    for rec in data.records:
        rest = {k: v for k, v in rec.items() if k not in _PLAIN_FIELDS}
        records.append({**rec, **redactor.redact(rest)})
    data.records = records
    data.verify = redactor.redact(data.verify)
    data.bookmarks = redactor.redact(data.bookmarks)
    data.snapshots = redactor.redact(data.snapshots)
    data.warnings = [redactor.redact_error(w) for w in data.warnings]


class _WithoutSecrets:
    """A run's ledger as a report reads it: records and (redacted) anchors, never the kept secret values."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger

    def get_secrets(self, run_id: str) -> list[dict[str, Any]]:
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


def _state_at(store: Any, run_id: str, seq: int) -> tuple[Optional[dict[str, Any]], str]:
    """The run as the ledger has it right after record ``seq`` (redacted values as recorded), else why not."""
    from ..core.recovery import state_at

    try:
        found = state_at(store.runs, _WithoutSecrets(store.ledger), run_id, seq)  # type: ignore[arg-type]
    except (AbstractRuntimeError, TypeError, ValueError, KeyError, AttributeError, NotImplementedError) as exc:
        return None, str(exc)
    doc = found.to_dict() if hasattr(found, "to_dict") else found
    run = doc.get("run") if isinstance(doc, dict) and isinstance(doc.get("run"), dict) else doc
    return (dict(run), "") if isinstance(run, dict) else (None, "no state returned")


def _seq(record: dict[str, Any]) -> Optional[int]:
    seq = record.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


__all__ = ["RunData", "load_run", "related_records", "RELATED_RUNS"]
