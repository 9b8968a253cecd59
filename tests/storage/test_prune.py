"""Pruning a folder store: what goes, what stays, the tombstone log verify reads, and crashes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from abstractruntime.core.errors import CorruptRecordError, InvalidInputError, RunPrunedError
from abstractruntime.storage.prune import parse_age, prune_store
from abstractruntime.storage.snapshots import Snapshot
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.tombstones import FileTombstones, check_log
from abstractruntime.storage.verify import TOMBSTONE_LOG, verify_run, verify_store
from tests.retention_support import fill, heads, later, run_start

REPO = Path(__file__).resolve().parents[1]
FINISHED = ["cancelled-1", "done-1", "done-2", "done-3", "failed-1"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FileStore]:
    s = FileStore(tmp_path / "store", durability="fsync")
    yield s
    s.close()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("index.sqlite3") and p.name != ".lock"}


def _prune(store: Any, **kwargs: Any) -> Any:
    return prune_store(store, finished_before=parse_age("30d"), now=later, **kwargs)


def _by_id(reports: list[Any]) -> dict[str, Any]:
    return {r.run_id: r for r in reports}


def test_parse_age() -> None:
    assert parse_age("30d").days == 30 and parse_age("1d12h").total_seconds() == 36 * 3600
    assert parse_age("2w").days == 14 and parse_age("90s").total_seconds() == 90
    for bad in ("", "30", "d", "30x", "-3d", "3d junk"):
        with pytest.raises(InvalidInputError):
            parse_age(bad)


def test_prune_removes_finished_runs_and_verify_still_accounts_for_them(store: FileStore) -> None:
    kinds = fill(store)
    before = heads(store, list(kinds))
    report = _prune(store)
    assert sorted(t["run_id"] for t in report.pruned) == FINISHED
    runs = store.root / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["waiting-1"]  # a waiting run is never pruned
    reports = _by_id(verify_store(store))
    assert sorted(reports) == sorted(kinds)
    assert all(r.ok for r in reports.values()), {k: r.to_dict() for k, r in reports.items() if not r.ok}
    for run_id in FINISHED:
        r = reports[run_id]
        assert r.pruned is not None and r.head_hash == before[run_id] and r.run_status == kinds[run_id]
        assert [n.type for n in r.notes] == ["pruned"]
    assert reports["waiting-1"].pruned is None and reports["waiting-1"].head_hash == before["waiting-1"]
    # One run verified on its own: the tombstone answers for it.
    assert verify_run(store, "done-2").pruned["head_hash"] == before["done-2"]
    # The log is 0600, chained from its first line, and its head is beside it.
    log = store.root / "tombstones.jsonl"
    assert log.stat().st_mode & 0o777 == 0o600
    checked = FileTombstones(store.root).read()
    assert checked.ok and [t.seq for t in checked.entries] == [1, 2, 3, 4, 5]
    assert checked.entries[0].prev_hash is None and checked.entries[1].prev_hash == checked.entries[0].hash
    # Pruning again finds nothing more.
    assert _prune(store).pruned == []


def test_dry_run_and_status_filter_and_age(store: FileStore) -> None:
    fill(store)
    files = _files(store.root)
    dry = _prune(store, dry_run=True)
    assert sorted(t["run_id"] for t in dry.pruned) == FINISHED and dry.dry_run
    assert _files(store.root) == files  # nothing written
    # Runs finished less than 30 days ago (by the real clock) stay.
    assert prune_store(store, finished_before=parse_age("30d")).pruned == []
    only = _prune(store, statuses=["failed"])
    assert [t["run_id"] for t in only.pruned] == ["failed-1"]
    with pytest.raises(InvalidInputError):
        _prune(store, statuses=["waiting"])


def test_snapshotted_and_bookmarked_runs_stay_unless_told(store: FileStore) -> None:
    fill(store)
    store.snapshots.save(Snapshot.from_run(run=store.runs.load("done-1"), name="keep me"))
    store.bookmarks.add("done-2", "audited")
    report = _prune(store)
    kept = {k["run_id"]: k["reason"] for k in report.kept}
    assert "snapshot" in kept["done-1"] and "bookmarks" in kept["done-2"]
    assert (store.root / "runs" / "done-1").is_dir() and (store.root / "runs" / "done-2").is_dir()
    report = _prune(store, include_snapshotted=True, include_bookmarked=True)
    assert sorted(t["run_id"] for t in report.pruned) == ["done-1", "done-2"]
    assert store.snapshots.list(run_id="done-1", limit=None) == []  # its snapshots went with it
    assert all(r.ok for r in verify_store(store))


def test_a_pruned_id_is_never_started_again(store: FileStore) -> None:
    fill(store)
    _prune(store)
    with pytest.raises(RunPrunedError) as info:
        run_start(store, "done-1")()
    assert "pruned" in str(info.value) and info.value.code == "run_pruned"
    assert not (store.root / "runs" / "done-1").exists()  # refused before anything was made
    # A directory left under the id (a start racing a prune) changes nothing.
    (store.root / "runs" / "done-1").mkdir(mode=0o700)
    with pytest.raises(RunPrunedError):
        run_start(store, "done-1")()


def test_a_run_that_does_not_verify_is_not_pruned(store: FileStore) -> None:
    fill(store)
    ledger = store.root / "runs" / "done-3" / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b"yes done-3", b"no! done-3"))
    report = _prune(store)
    kept = {k["run_id"]: k["reason"] for k in report.kept}
    assert "does not verify" in kept["done-3"] and "done-3" not in [t["run_id"] for t in report.pruned]
    assert ledger.exists()


def _edit_line(path: Path, index: int, old: bytes, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    assert old in lines[index]
    lines[index] = lines[index].replace(old, new)
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("attack, problem", [
    ("edit", "tombstone_hash_mismatch"),
    ("rehash", "tombstone_chain_broken"),
    ("drop_middle", "tombstone_chain_broken"),
    ("drop_last", "tombstones_truncated"),
    ("swap", "tombstone_chain_broken"),
    ("drop_head", "tombstones_head_missing"),
])
def test_an_edited_tombstone_log_fails_verify_and_blocks_prune(store: FileStore, attack: str, problem: str) -> None:
    fill(store)
    _prune(store, statuses=["completed"])
    log = store.root / "tombstones.jsonl"
    lines = log.read_bytes().split(b"\n")[:-1]
    if attack == "edit":
        _edit_line(log, 1, b'"status":"completed"', b'"status":"cancelled"')
    elif attack == "rehash":  # a line edited and its own hash recomputed: the next line's link breaks
        from abstractruntime.core.canonical import canonical_json, sha256_hex

        doc = json.loads(lines[0])
        doc["head_hash"] = "0" * 64
        del doc["hash"]
        doc["hash"] = sha256_hex(canonical_json(doc))
        log.write_bytes(b"\n".join([canonical_json(doc), *lines[1:]]) + b"\n")
    elif attack == "drop_middle":
        log.write_bytes(b"\n".join([lines[0], lines[2]]) + b"\n")
    elif attack == "drop_last":
        log.write_bytes(b"\n".join(lines[:2]) + b"\n")
    elif attack == "swap":
        log.write_bytes(b"\n".join([lines[1], lines[0], lines[2]]) + b"\n")
    else:
        (store.root / "tombstones.head.json").unlink()
    reports = _by_id(verify_store(store))
    assert not reports[TOMBSTONE_LOG].ok
    assert problem in [p.type for p in reports[TOMBSTONE_LOG].problems]
    with pytest.raises(CorruptRecordError):
        _prune(store)  # a tombstone chained to a damaged log would seal the damage
    assert (store.root / "runs" / "failed-1").is_dir()


def test_a_removed_marker_or_a_run_recreated_under_a_pruned_id_is_a_problem(store: FileStore,
                                                                             tmp_path: Path) -> None:
    fill(store)
    _prune(store, statuses=["completed"])
    (store.root / "pruned" / "done-1").unlink()
    reports = _by_id(verify_store(store))
    assert "tombstone_marker_missing" in [p.type for p in reports["done-1"].problems]
    # A different run started under the id, once nothing kept it:
    run_start(store, "done-1")()
    reports = _by_id(verify_store(store))
    assert "tombstone_mismatch" in [p.type for p in reports["done-1"].problems]


def test_check_log_reads_a_torn_tail_as_a_note() -> None:
    from abstractruntime.storage.tombstones import seal

    first, line = seal(run_id="a", workflow_id="w", status="completed", head_seq=3, head_hash="1" * 64, count=3,
                       signature=None, pruned_at="2026-01-01T00:00:00+00:00", previous=None)
    found = check_log(line + b"\n" + line[:20], head={"seq": 1, "hash": first.hash})
    assert found.ok and [n[0] for n in found.notes] == ["tombstone_torn_tail"] and found.valid_end == len(line) + 1


def test_a_torn_tombstone_line_is_cut_by_the_next_prune(store: FileStore) -> None:
    fill(store)
    _prune(store, statuses=["completed"])
    log = store.root / "tombstones.jsonl"
    with open(log, "ab") as fh:
        fh.write(b'{"format":1,"seq":4,"run_id":"failed-1"')  # a crash in the middle of an append
    assert all(r.ok for r in verify_store(store))
    _prune(store)
    checked = FileTombstones(store.root).read()
    assert checked.ok and not checked.notes and [t.run_id for t in checked.entries][-2:] == ["cancelled-1",
                                                                                            "failed-1"]


# -- a prune killed at every point ------------------------------------------------------------

# Each point is a function of the prune; the child process runs it, then kills itself with
# SIGKILL (nothing after it runs: no finally, no flush).
KILL_POINTS = [
    ("abstractruntime.storage.tombstones", "FileTombstones", "intend"),
    ("abstractruntime.storage.fsio", None, "append_bytes"),
    ("abstractruntime.storage.tombstones", None, "atomic_write_bytes"),
    ("abstractruntime.storage.tombstones", "FileTombstones", "mark"),
    ("abstractruntime.storage.prune", None, "fsync_dir"),
    ("abstractruntime.storage.prune", "shutil", "rmtree"),
    ("abstractruntime.storage.json_files", "JsonFileRunStore", "forget"),
]

CHILD = textwrap.dedent("""
    import importlib, os, signal, sys
    from datetime import datetime, timedelta, timezone
    module_name, owner, name, root = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    module = importlib.import_module(module_name)
    target = getattr(module, owner) if owner != "-" else module
    original = getattr(target, name)
    def killer(*args, **kwargs):
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result
    if owner != "-" and isinstance(target, type):
        setattr(target, name, killer)
    else:
        setattr(target, name, killer)
        if owner == "-" and module_name == "abstractruntime.storage.fsio":
            import abstractruntime.storage.tombstones as t
            t.append_bytes = killer
    from abstractruntime.storage.prune import prune_store
    from abstractruntime.storage.store import FileStore
    later = datetime.now(timezone.utc) + timedelta(days=60)
    prune_store(FileStore(root), finished_before=timedelta(days=30), now=lambda: later, statuses=["completed"])
    print("not killed")
""")


@pytest.mark.parametrize("module, owner, name", KILL_POINTS)
def test_a_prune_killed_anywhere_leaves_each_run_or_its_tombstone(tmp_path: Path, module: str, owner: Any,
                                                                   name: str) -> None:
    root = tmp_path / "store"
    store = FileStore(root)
    kinds = fill(store)
    before = heads(store, list(kinds))
    store.close()
    child = subprocess.run([sys.executable, "-c", CHILD, module, owner or "-", name, str(root)],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    # Right after the kill: every completed run is still in runs/ or has its tombstone (or both).
    tombstoned = FileTombstones(root).read().by_run()
    present = {p.name for p in (root / "runs").iterdir() if (p / "ledger.jsonl").exists()}
    for run_id in ("done-1", "done-2", "done-3"):
        assert run_id in present or run_id in tombstoned, (run_id, present, tombstoned)
    reports = _by_id(verify_store(root))
    assert all(r.ok for r in reports.values()), {k: r.to_dict()["problems"] for k, r in reports.items() if not r.ok}
    # The next prune finishes the interrupted one; nothing is tombstoned twice.
    store = FileStore(root)
    try:
        _prune(store, statuses=["completed"])
        checked = FileTombstones(root).read()
        assert checked.ok and sorted(t.run_id for t in checked.entries) == ["done-1", "done-2", "done-3"]
        assert not any((root / "runs" / r).exists() for r in ("done-1", "done-2", "done-3"))
        assert not list(root.glob(".pruning-*")) and FileTombstones(root).intended() == []
        reports = _by_id(verify_store(root))
        assert all(r.ok for r in reports.values())
        assert {r: reports[r].head_hash for r in ("done-1", "done-2", "done-3")} == \
            {r: before[r] for r in ("done-1", "done-2", "done-3")}
        with pytest.raises(RunPrunedError):
            run_start(store, "done-1")()
        assert sorted(r.run_id for r in store.runs.list_runs(limit=100)) == \
            ["cancelled-1", "failed-1", "waiting-1"]
    finally:
        store.close()


def test_secrets_and_event_records_go_with_the_run(store: FileStore) -> None:
    from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    def wait(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="ev"),
                        next_node="done")

    wf = WorkflowSpec("events", "wait", {"wait": wait, "done": lambda run, ctx: StepPlan("done", complete_output={})})
    rt = store.runtime()
    rt.start(workflow=wf, run_id="ev-1")
    rt.tick(workflow=wf, run_id="ev-1")
    from abstractruntime.scheduler.events import emit_event

    emit_event(store.runs, "go", {"x": 1}, resolve=lambda run: (wf, rt), event_id="evt-1", events=store.events,
               ledger=store.ledger)
    assert store.runs.load("ev-1").status.value == "completed"
    assert store.events.get("evt-1") is not None
    _prune(store)
    assert store.events.get("evt-1") is None and not (store.root / "runs" / "ev-1").exists()


def test_a_child_whose_parent_is_still_going_stays(store: FileStore) -> None:
    from tests.retention_support import ask_workflow

    fill(store)
    rt = store.runtime()
    quick = ask_workflow()
    for parent in ("waiting-1", "done-1"):
        child = f"child-of-{parent}"
        rt.start(workflow=quick, run_id=child, parent_run_id=parent)
        rt.cancel_run(child)
    report = _prune(store, statuses=["cancelled"])
    kept = {k["run_id"]: k["reason"] for k in report.kept}
    assert "parent run waiting-1" in kept["child-of-waiting-1"]
    assert sorted(t["run_id"] for t in report.pruned) == ["cancelled-1", "child-of-done-1"]


def test_verify_of_one_run_notes_an_interrupted_prune(store: FileStore) -> None:
    fill(store)
    files = FileTombstones(store.root)
    files.intend("done-1")
    with files.lock():
        files.append({"run_id": "done-1", "workflow_id": "retention", "status": "completed",
                      "head_seq": store.ledger.head("done-1").seq, "head_hash": store.ledger.head("done-1").head_hash,
                      "count": store.ledger.head("done-1").seq, "signature": None,
                      "pruned_at": "2026-01-01T00:00:00+00:00"})
    files.mark("done-1")
    report = verify_run(store, "done-1")
    assert report.ok and "prune_pending" in [n.type for n in report.notes]
    with pytest.raises(RunPrunedError):
        run_start(store, "done-1")()
    assert _prune(store, statuses=["failed"]).finished == ["done-1"]
    assert verify_run(store, "done-1").pruned is not None and not (store.root / "runs" / "done-1").exists()


def test_a_signed_run_keeps_its_head_signature_in_its_tombstone(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from abstractruntime.storage.signing import Ed25519Signer

    signer, stranger = Ed25519Signer.generate(), Ed25519Signer.generate()
    store = FileStore(tmp_path / "signed", durability="none")
    store.runtime_defaults["signer"] = signer
    try:
        fill(store)
        _prune(store, statuses=["completed"])
        tombstone = FileTombstones(store.root).read().by_run()["done-1"]
        assert tombstone.signature and tombstone.signature["head_hash"] == tombstone.head_hash
        with_key = _by_id(verify_store(store, public_key=signer.public_key))
        assert with_key["done-1"].ok and with_key["done-1"].signature == "valid"
        wrong = _by_id(verify_store(store, public_key=stranger.public_key))
        assert "signature_untrusted" in [p.type for p in wrong["done-1"].problems]
        assert verify_run(store, "done-2", public_key=signer.public_key).signature == "valid"
    finally:
        store.close()


def test_an_unsigned_pruned_run_fails_verify_with_a_key(store: FileStore) -> None:
    pytest.importorskip("cryptography")
    from abstractruntime.storage.signing import Ed25519Signer

    fill(store)
    _prune(store, statuses=["completed"])
    report = verify_run(store, "done-1", public_key=Ed25519Signer.generate().public_key)
    assert "signature_missing" in [p.type for p in report.problems]
