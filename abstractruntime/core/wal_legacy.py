"""Replaying format-2 records (runs written before format 3): their deltas, onto a live checkpoint.

New records are format 3 (:mod:`abstractruntime.core.wal`); this module only reads the older
ones, as they were written. Every format-2 record has a ``delta``: what the record changed in the run, so that
``checkpoint + replay(records after it)`` rebuilds the run without re-entering any node.
A delta is a JSON object with only the keys that changed:

- ``vars``: a list of operations on the run's variables, applied in order —
  ``["s", path, value]`` sets ``vars[path] = value`` (the empty path replaces all vars),
  ``["d", path]`` deletes it, ``["r", path]`` sets it to this record's ``result``
  and ``["r", path, subpath]`` to ``result[subpath]`` (an effect's result or a resume's
  payload is stored once, not twice). Nested objects are diffed key by key;
  any other value is replaced whole.
- run fields: ``workflow_id``, ``status``, ``current_node``, ``waiting``, ``output``,
  ``error``, ``created_at``, ``actor_id``, ``parent_run_id`` — the new value.
- kernel fields: ``effects`` (effects begun so far), ``pending`` (the effect whose intent is
  durable and whose outcome is not), ``metadata``, ``workflow``, ``origin``.

The state after record *n* is the state after record *n-1* with record *n*'s delta applied;
``updated_at`` is the record's ``ended_at`` (or ``started_at``). docs/file-format.md has
the full description.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Optional, Sequence

from .errors import CorruptRecordError
from .models import RunState, RunStatus, WaitState
from .ports import Checkpoint, LedgerHead, Pending

RUN_FIELDS = ("workflow_id", "status", "current_node", "waiting", "output", "error", "created_at",
              "actor_id", "parent_run_id")
KERNEL_FIELDS = ("effects", "pending", "metadata", "workflow", "origin")

Path = list[Any]


def blank_checkpoint(run_id: str) -> Checkpoint:
    """The state before a run's first record."""
    return Checkpoint(run=RunState(run_id=run_id, workflow_id="", status=RunStatus.RUNNING, current_node=""),
                      ledger=LedgerHead())


def secrets_by_record(entries: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group format-2 secret entries by the record they belong to."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault(str(entry.get("record_hash")), []).append(entry)
    return grouped


def apply_var_ops(variables: dict[str, Any], ops: Iterable[Any], result: Any) -> dict[str, Any]:
    """Apply ``vars`` operations to ``variables`` (in place, except a root replacement)."""
    for op in ops:
        if not isinstance(op, list) or len(op) < 2 or not isinstance(op[1], list):
            raise ValueError(f"bad vars operation {op!r}")
        kind, path = op[0], op[1]
        if kind == "s" and len(op) == 3:
            value = copy.deepcopy(op[2])
        elif kind == "r":
            value = result
            for part in (op[2] if len(op) == 3 and isinstance(op[2], list) else []):
                value = value[part]
            value = copy.deepcopy(value)
        elif kind == "d":
            value = None
        else:
            raise ValueError(f"bad vars operation {op!r}")
        if not path:
            if kind == "d" or not isinstance(value, dict):
                raise ValueError("only an object may replace all vars")
            variables = value
            continue
        target = variables
        for part in path[:-1]:
            nxt = target.get(part) if isinstance(target, dict) else None
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        if kind == "d":
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
    return variables


def apply_record(checkpoint: Checkpoint, doc: dict[str, Any], *, offset: Optional[int] = None) -> None:
    """Apply one stored record's delta to ``checkpoint`` (in place) and move its position.

    Raises :class:`ValueError` for a record without a usable delta (format 1, or edited).
    """
    delta = doc.get("delta")
    if not isinstance(delta, dict):
        raise ValueError("record carries no delta (written before format 2)")
    run = checkpoint.run
    for key, value in delta.items():
        if key == "vars":
            if not isinstance(value, list):
                raise ValueError("delta.vars must be a list of operations")
            run.vars = apply_var_ops(run.vars, value, doc.get("result"))
        elif key == "status":
            run.status = RunStatus(value)
        elif key == "waiting":
            run.waiting = WaitState.from_dict(value) if value is not None else None
        elif key in RUN_FIELDS:
            setattr(run, key, copy.deepcopy(value))
        elif key == "pending":
            if isinstance(value, dict) and "effect" not in value:
                # An intent record's delta names its pending effect without repeating it.
                value = {**value, "effect": doc.get("effect")}
            checkpoint.pending = Pending.from_dict(copy.deepcopy(value)) if value is not None else None
        elif key in KERNEL_FIELDS:
            if key == "effects" and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError("delta.effects must be an integer")
            setattr(checkpoint, key, copy.deepcopy(value) if value is not None or key != "metadata" else {})
        else:
            raise ValueError(f"unknown delta field {key!r}")
    stamp = doc.get("ended_at") or doc.get("started_at")
    if isinstance(stamp, str):
        run.updated_at = stamp
    checkpoint.ledger = LedgerHead(seq=int(doc.get("seq") or checkpoint.ledger.seq + 1),
                                   head_hash=doc.get("record_hash"), offset=offset)
    if isinstance(doc.get("signature"), dict):
        checkpoint.signature = copy.deepcopy(doc["signature"])  # the signed head of its batch


def secret_key(doc: dict[str, Any]) -> str:
    """The key kept secret values are filed under: the record's hash (``seq:N`` unchained)."""
    digest = doc.get("record_hash")
    return str(digest) if digest else f"seq:{doc.get('seq')}"


def restore_secrets(doc: dict[str, Any], entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``doc`` with the real values kept beside the run put back where they were redacted."""
    restored = copy.deepcopy(doc)
    for entry in entries:
        field_name, path = entry.get("field"), entry.get("path")
        if field_name not in ("effect", "result", "delta") or not isinstance(path, list):
            continue
        if not path:  # the whole field was redacted
            restored[field_name] = copy.deepcopy(entry.get("value"))
            continue
        target: Any = restored.get(field_name)
        try:
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = copy.deepcopy(entry.get("value"))
        except (KeyError, IndexError, TypeError):
            continue  # the entry does not fit this record: it was never applied to it
    return restored


def replay(
    checkpoint: Checkpoint,
    records: Iterable[dict[str, Any]],
    *,
    secrets: Optional[dict[str, list[dict[str, Any]]]] = None,
    path: str = "ledger",
) -> Checkpoint:
    """Apply ``records`` (the tail after ``checkpoint.ledger``) to ``checkpoint`` in place.

    ``secrets`` maps record hashes to the real values the records redacted. A record that
    cannot be replayed raises :class:`CorruptRecordError` naming its seq.
    """
    for doc in records:
        seq = doc.get("seq")
        if doc.get("format") == 1 and doc.get("delta") is None:
            # Written before the ledger was the WAL: the format-1 checkpoint already holds
            # its effect; only the position moves.
            checkpoint.ledger = LedgerHead(seq=int(seq or checkpoint.ledger.seq + 1),
                                           head_hash=doc.get("record_hash"))
            continue
        entries = secrets.get(secret_key(doc)) if secrets else None
        source = restore_secrets(doc, entries) if entries else doc
        try:
            apply_record(checkpoint, source)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptRecordError(f"record seq {seq} cannot be replayed: {exc}", path=path) from exc
    return checkpoint
