"""The ledger as the write-ahead log: the state change each record carries, and replay.

Every format-2 record has a ``delta``: what the record changed in the run, so that
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
import json
from typing import Any, Iterable, Optional

from .canonical import canonical_json
from .errors import CorruptRecordError
from .models import RunState, RunStatus, WaitState
from .ports import Checkpoint, LedgerHead

RUN_FIELDS = ("workflow_id", "status", "current_node", "waiting", "output", "error", "created_at",
              "actor_id", "parent_run_id")
KERNEL_FIELDS = ("effects", "pending", "metadata", "workflow", "origin")

Path = list[Any]


def _image(checkpoint: Checkpoint) -> dict[str, Any]:
    """The comparable fields of a checkpoint, vars excluded.

    Not copied: the kernel replaces ``pending``, ``metadata``, ``workflow`` and ``origin``
    with new objects instead of changing them in place, and ``output`` is set once, at the
    end; ``waiting`` is a fresh dict from ``to_dict``. (This runs for every record.)
    """
    run = checkpoint.run
    return {
        "workflow_id": run.workflow_id,
        "status": RunStatus(run.status).value,
        "current_node": run.current_node,
        "waiting": run.waiting.to_dict() if run.waiting is not None else None,
        "output": run.output,
        "error": run.error,
        "created_at": run.created_at,
        "actor_id": run.actor_id,
        "parent_run_id": run.parent_run_id,
        "effects": checkpoint.effects,
        "pending": checkpoint.pending,
        "metadata": checkpoint.metadata,
        "workflow": checkpoint.workflow,
        "origin": checkpoint.origin,
    }


def full_delta(checkpoint: Checkpoint) -> dict[str, Any]:
    """A delta that sets every field: what a run's first record (or a restore) carries."""
    delta = _image(checkpoint)
    delta["vars"] = [["s", [], checkpoint.run.vars]]
    return delta


class DeltaTracker:
    """Remembers the state as of the last record and computes the next record's delta.

    Values in a returned delta may be live objects of the run: the caller encodes the record
    at once (the session seals it), before a node can mutate them.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.reset(checkpoint)

    def reset(self, checkpoint: Checkpoint) -> None:
        """Take ``checkpoint`` as the state the next delta is relative to."""
        self._image = _image(checkpoint)
        self._vars_bytes = canonical_json(checkpoint.run.vars)
        # A private copy decoded from the canonical bytes just encoded (not json_codec.loads_strict:
        # these bytes cannot hold what it refuses, and this runs on every step).
        self._vars: dict[str, Any] = json.loads(self._vars_bytes)

    def delta(self, checkpoint: Checkpoint, *, result: Any = None, result_path: Path | None = None) -> dict[str, Any]:
        """What changed since the last call (or :meth:`reset`), and remember the new state.

        Raises :class:`~abstractruntime.core.errors.InvalidInputError` (before changing
        anything) when the run's variables cannot be stored as JSON.
        """
        vars_bytes = canonical_json(checkpoint.run.vars, root="vars")
        image = _image(checkpoint)
        delta: dict[str, Any] = {k: v for k, v in image.items() if v != self._image.get(k)}
        if vars_bytes != self._vars_bytes:
            ops: list[list[Any]] = []
            _diff(self._vars, checkpoint.run.vars, [], ops, (result, result_path))
            delta["vars"] = ops
            self._vars = json.loads(vars_bytes)
            self._vars_bytes = vars_bytes
        self._image = image
        return delta


    def detached(self, checkpoint: Checkpoint) -> Checkpoint:
        """A copy of ``checkpoint`` that shares nothing with the live run, built from what the last
        :meth:`delta` remembered (valid only when nothing changed since; cheaper than a deep copy)."""
        image = self._image
        waiting = image["waiting"]
        run = RunState(
            run_id=checkpoint.run.run_id, workflow_id=image["workflow_id"], status=RunStatus(image["status"]),
            current_node=image["current_node"], vars=self._vars,
            waiting=WaitState.from_dict(waiting) if waiting is not None else None,
            output=copy.deepcopy(image["output"]),
            error=image["error"], created_at=image["created_at"], updated_at=checkpoint.run.updated_at,
            actor_id=image["actor_id"], parent_run_id=image["parent_run_id"])
        return Checkpoint(run=run, ledger=checkpoint.ledger, workflow=copy.deepcopy(image["workflow"]),
                          signature=copy.deepcopy(checkpoint.signature), origin=copy.deepcopy(image["origin"]),
                          pending=copy.deepcopy(image["pending"]), effects=image["effects"],
                          metadata=copy.deepcopy(image["metadata"]), external=False)


def _diff(old: Any, new: Any, path: Path, ops: list[list[Any]], result: tuple[Any, Path | None]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append(["d", path + [key]])
        for key, value in new.items():
            if key not in old:
                _set(path + [key], value, ops, result)
            elif old[key] != value or type(old[key]) is not type(value):
                if isinstance(old[key], dict) and isinstance(value, dict):
                    _diff(old[key], value, path + [key], ops, result)
                else:
                    _set(path + [key], value, ops, result)
        return
    _set(path, new, ops, result)


def _set(path: Path, value: Any, ops: list[list[Any]], result: tuple[Any, Path | None]) -> None:
    obj, subpath = result
    if obj is not None and value is obj:
        ops.append(["r", path, subpath] if subpath else ["r", path])
    else:
        ops.append(["s", path, value])


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
        elif key == "pending" and isinstance(value, dict) and "effect" not in value:
            # An intent record's delta names its pending effect without repeating it.
            checkpoint.pending = {**copy.deepcopy(value), "effect": copy.deepcopy(doc.get("effect"))}
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
