"""Checks shared by the crash batteries: does every file load, does every run verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from abstractruntime.core.errors import CorruptRecordError
from abstractruntime.storage.bookmarks import BOOKMARKS_FILE, read_bookmarks
from abstractruntime.storage.fsio import read_bytes
from abstractruntime.storage.json_files import read_checkpoint
from abstractruntime.storage.run_files import CHECKPOINT_FILE, LEDGER_FILE
from abstractruntime.core.records import expand_records
from abstractruntime.storage.ledger_parse import parse_ledger
from abstractruntime.storage.verify import verify_run


def run_ids(root: Path) -> list[str]:
    """Run directories present under ``root/runs``."""
    runs = root / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def ledger_records(root: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's records, chain-checked (a torn tail is ignored, as the runtime does), expanded as
    ``list()`` gives them (each effect record names its effect and idempotency key)."""
    path = root / "runs" / run_id / LEDGER_FILE
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        return []
    return expand_records(parse_ledger(data, path=str(path), verify_chain=True, run_id=run_id).records, run_id)


def store_problems(root: Path) -> list[str]:
    """Every file of every run loads and every run verifies; returns what is wrong (empty = fine)."""
    problems: list[str] = []
    for run_id in run_ids(root):
        run_dir = root / "runs" / run_id
        try:
            if (run_dir / CHECKPOINT_FILE).exists():
                try:
                    read_checkpoint(run_dir / CHECKPOINT_FILE)
                except CorruptRecordError:
                    # run.json is a cache written without fsync: a crash may tear it. It must
                    # not matter — the run rebuilds from its ledger.
                    _rebuild(root, run_id)
            ledger_records(root, run_id)
            read_bookmarks(run_dir / BOOKMARKS_FILE)
        except Exception as exc:  # any failure to load is the finding
            problems.append(f"{run_id}: cannot load: {type(exc).__name__}: {exc}")
            continue
        if not (run_dir / CHECKPOINT_FILE).exists() and not (run_dir / LEDGER_FILE).exists():
            continue  # an empty directory left by an interrupted start
        report = verify_run(root, run_id)
        for finding in report.problems:
            problems.append(f"{run_id}: verify: {finding.type}: {finding.message}")
    return problems


def _rebuild(root: Path, run_id: str) -> None:
    from abstractruntime.storage.store import FileStore

    store = FileStore(root, durability="none")
    try:
        store.runtime().get_state(run_id)
    finally:
        store.close()


def durable_problems(root: Path, run_id: str, acked: dict[int, str]) -> list[str]:
    """Each acknowledged ``seq -> hash`` is still in the ledger (the log the run is rebuilt from)."""
    if not acked:
        return []
    problems: list[str] = []
    try:
        records = ledger_records(root, run_id)
    except Exception as exc:
        return [f"{run_id}: acknowledged steps unreadable: {type(exc).__name__}: {exc}"]
    by_seq = {r.get("seq"): r.get("record_hash") for r in records}
    for seq, digest in sorted(acked.items()):
        if by_seq.get(seq) != digest:
            problems.append(f"{run_id}: acknowledged seq {seq} lost (ledger has {by_seq.get(seq)!r})")
    return problems


def _is_step(rec: dict[str, Any]) -> bool:
    """A code-first step's record (a side effect at its position, like an effect's)."""
    ext = rec.get("ext") if isinstance(rec.get("ext"), dict) else {}
    return rec.get("kind") == "step" and isinstance(ext.get("step"), dict) and ext["step"].get("kind") == "step"


def _key(run_id: str, rec: dict[str, Any]) -> str:
    """An effect's idempotency key; a step's is its position's (what ``current_effect().key`` gave it)."""
    if _is_step(rec):
        from abstractruntime.core.wal import positional_key

        return positional_key(run_id, int(rec["effect_id"]))
    return str(rec.get("idempotency_key") or "")


def in_flight_effect_keys(root: Path) -> set[str]:
    """Keys of effects (and code-first steps) whose latest intent has no outcome yet: the ones inside their window."""
    keys: set[str] = set()
    for run_id in run_ids(root):
        open_intents: dict[int, str] = {}
        for rec in ledger_records(root, run_id):
            effect_id = rec.get("effect_id")
            if (rec.get("kind") != "effect" and not _is_step(rec)) or effect_id is None:
                continue
            if rec.get("status") == "started":
                open_intents[effect_id] = _key(run_id, rec)
            else:
                open_intents.pop(effect_id, None)
        keys.update(open_intents.values())
    return keys


def completed_effect_keys(root: Path) -> set[str]:
    """Idempotency keys with a completed effect (or code-first step) record in any ledger of the store."""
    keys: set[str] = set()
    for run_id in run_ids(root):
        for rec in ledger_records(root, run_id):
            if rec.get("status") != "completed":
                continue
            if rec.get("kind") == "effect" and rec.get("idempotency_key"):
                keys.add(rec["idempotency_key"])
            elif _is_step(rec):
                keys.add(_key(run_id, rec))
    return keys
