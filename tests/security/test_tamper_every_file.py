"""The tamper matrix of a folder store, one file at a time (docs/reliability.md, "Tamper and abuse
matrix"): editing, deleting, rolling back or forging each file of a run directory and of the store
makes the runtime do *nothing* (the payment still runs once, with the real amount and key) or
*refuse* (a project error, nothing written, nothing paid) — with and without a signing key.

The victim and the probe are in tests/tamper_support.py. Where the answer is neither, the test
says so and why (a limit of any store that has no state outside itself).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from abstractruntime import EffectOutcome, EffectType, open_store
from abstractruntime.core.errors import (
    CorruptRecordError,
    InvalidInputError,
    RunLockedError,
    SecretMissingError,
    StorageError,
    VerificationFailedError,
)
from abstractruntime.core.jcs import jcs
from abstractruntime.core.restore import restore_snapshot, take_snapshot
from abstractruntime.storage.signing import Ed25519Signer
from abstractruntime.storage.verify import verify_run

from tamper_support import API_KEY, INVOICES, PAYMENT, Victim, emit, paid_once, pay, probe, seen, start_victim

CLI = [sys.executable, "-m", "abstractruntime"]


@pytest.fixture(params=["no key", "key"])
def signer(request: pytest.FixtureRequest) -> Optional[Ed25519Signer]:
    return Ed25519Signer.generate() if request.param == "key" else None


def run_files(root: Path, run_id: str = "victim") -> dict[str, bytes]:
    folder = root / "runs" / run_id
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def assert_refused(outcome: Any, victim: Victim, before: dict[str, bytes], root: Path, *kinds: type) -> None:
    assert not outcome.ran, "the runtime went on"
    assert isinstance(outcome.error, kinds or (VerificationFailedError, CorruptRecordError)), outcome.error
    assert victim.bank.payments == [] and run_files(root) == before  # nothing paid, nothing written


def key_of(signer: Optional[Ed25519Signer]) -> Any:
    return signer.public_key if signer is not None else None


def ledger_lines(root: Path) -> list[bytes]:
    return (root / "runs" / "victim" / "ledger.jsonl").read_bytes().splitlines()


def write_lines(root: Path, lines: list[bytes]) -> None:
    (root / "runs" / "victim" / "ledger.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


# -- ledger.jsonl ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first", "head"])
@pytest.mark.parametrize("checkpoint", ["kept", "deleted"])
def test_ledger_edited_in_place_is_refused(tmp_path: Path, signer: Any, where: str, checkpoint: str) -> None:
    root = tmp_path / "store"
    victim = start_victim(open_store(root), signer)
    lines = ledger_lines(root)
    index = 0 if where == "first" else len(lines) - 1
    doc = json.loads(lines[index])
    doc["at"] = "2031-01-01T00:00:00.000000+00:00"  # not re-hashed
    lines[index] = jcs(doc)
    write_lines(root, lines)
    if checkpoint == "deleted":
        (root / "runs" / "victim" / "run.json").unlink()
    before = run_files(root)
    outcome = probe(open_store(root), victim)
    if where == "first" and checkpoint == "kept":
        # The state comes from the proven checkpoint and the records after it: a record further
        # back is never read by the writer, so its edit steers nothing (verify reports it).
        assert paid_once(victim, outcome)
    else:
        assert_refused(outcome, victim, before, root)
    assert "record_hash_mismatch" in {p.type for p in verify_run(root, "victim", public_key=key_of(signer)).problems}


@pytest.mark.parametrize("how", ["deleted", "rolled back one record", "rolled back one batch"])
def test_ledger_deleted_or_rolled_back_is_refused(tmp_path: Path, signer: Any, how: str) -> None:
    root = tmp_path / "store"
    store = open_store(root)
    victim = start_victim(store, signer)
    state = pay(store, victim)
    assert state.status.value == "completed" and victim.bank.payments == [(7, API_KEY)]
    victim.bank.payments.clear()
    path = root / "runs" / "victim" / "ledger.jsonl"
    if how == "deleted":
        path.unlink()
    else:
        lines = ledger_lines(root)
        cut = 1 if how == "rolled back one record" else len(lines) - max(
            i for i, line in enumerate(lines[:-1]) if b'"signature":{' in line or b'"state":' in line) - 1
        write_lines(root, lines[:-cut])
    before = run_files(root)
    # run.json (a cache) still names the head the ledger lost: truncation, refused.
    assert_refused(probe(open_store(root), victim, answer=False), victim, before, root)
    assert "ledger_truncated" in {p.type for p in verify_run(root, "victim").problems}


def test_a_whole_run_rolled_back_runs_again_and_only_a_published_head_shows_it(tmp_path: Path, signer: Any) -> None:
    # The limit of any store without state outside itself: the whole run directory put back as it was
    # (a backup restored) is a run at an earlier point, and the runtime continues it from there — the
    # payment runs again. With a key too: the old head is genuinely signed (a signature proves who
    # wrote a head, not that it is the newest). A head published elsewhere shows it.
    root = tmp_path / "store"
    store = open_store(root)
    victim = start_victim(store, signer)
    backup = run_files(root)
    pay(store, victim)
    published = verify_run(root, "victim").head_hash
    folder = root / "runs" / "victim"
    for name in set(run_files(root)) - set(backup):
        (folder / name).unlink()
    for name, data in backup.items():
        (folder / name).write_bytes(data)

    outcome = probe(open_store(root), victim)
    assert outcome.ran and victim.bank.payments == [(7, API_KEY), (7, API_KEY)]
    report = verify_run(root, "victim", expect_head=published, public_key=key_of(signer))
    assert {p.type for p in report.problems} == {"expected_head_missing"}


# -- run.json -------------------------------------------------------------------------------------


def _edit_checkpoint(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / "runs" / "victim" / "run.json"
    doc = json.loads(path.read_bytes())
    change(doc)
    path.write_text(json.dumps(doc))


def _external_edit(doc: dict[str, Any]) -> None:
    # Issue 20, item 1 (b): a finished run marked as edited outside, sent back before the payment.
    run = doc["state"]["run"]
    run.update(status="running", current_node="pay", waiting=None, output=None)
    run["vars"]["amount"] = {"answer": 5000}
    doc["state"]["kernel"]["effects"] = 0
    doc["external"] = True


def _server_edit(doc: dict[str, Any]) -> None:
    doc["state"]["kernel"]["metadata"] = {"llm": {"mode": "remote", "server": "http://attacker.example"}}


CHECKPOINT_ATTACKS: dict[str, Callable[[Path], None]] = {
    "state edited": lambda root: _edit_checkpoint(root, _external_edit),
    "metadata edited": lambda root: _edit_checkpoint(root, _server_edit),
    "deleted": lambda root: (root / "runs" / "victim" / "run.json").unlink(),
    "garbage": lambda root: (root / "runs" / "victim" / "run.json").write_bytes(b"\x00\x00{"),
}


def _older_copy_pointed_at_the_head(root: Path, older: bytes) -> None:
    # Issue 20, item 1 (a): the checkpoint from before the payment, claiming today's head.
    path = root / "runs" / "victim" / "run.json"
    current = json.loads(path.read_bytes())
    doc = json.loads(older)
    doc["ledger"], doc["signature"] = current["ledger"], current.get("signature")
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("attack", sorted([*CHECKPOINT_ATTACKS, "older copy pointed at the head"]))
def test_checkpoint_edited_or_deleted_changes_nothing(tmp_path: Path, signer: Any, attack: str) -> None:
    root = tmp_path / "store"
    store = open_store(root)
    victim = start_victim(store, signer)
    older = (root / "runs" / "victim" / "run.json").read_bytes()
    pay(store, victim)
    if attack == "older copy pointed at the head":
        _older_copy_pointed_at_the_head(root, older)
    else:
        CHECKPOINT_ATTACKS[attack](root)
    fresh = open_store(root)
    outcome = probe(fresh, victim, answer=False)  # tick the finished run
    assert outcome.ran and outcome.state is not None and outcome.state.status.value == "completed"
    assert victim.bank.payments == [(7, API_KEY)]  # never paid again, never 5000
    checkpoint = victim.runtime(fresh).get_checkpoint("victim")
    assert checkpoint.metadata == {} and checkpoint.run.vars["amount"] == {"answer": 7}
    assert verify_run(root, "victim", public_key=key_of(signer)).ok  # the runtime rewrote its cache


def test_checkpoint_ahead_of_the_ledger_is_refused_every_time(tmp_path: Path, signer: Any) -> None:
    # Issue 20, item 4: an inflated ledger.seq is truncation or forgery: no writer extends it.
    root = tmp_path / "store"
    victim = start_victim(open_store(root), signer)
    _edit_checkpoint(root, lambda doc: doc["ledger"].update(seq=doc["ledger"]["seq"] + 1000))
    before = run_files(root)
    for _ in range(2):
        assert_refused(probe(open_store(root), victim), victim, before, root, VerificationFailedError)
    assert "ledger_truncated" in {p.type for p in verify_run(root, "victim").problems}


# -- secrets.jsonl --------------------------------------------------------------------------------


def _rewrite_secrets(root: Path, change: Callable[[dict[str, Any]], Optional[dict[str, Any]]]) -> None:
    path = root / "runs" / "victim" / "secrets.jsonl"
    out = []
    for line in path.read_bytes().splitlines():
        doc = change(json.loads(line))
        if doc is not None:
            out.append(json.dumps(doc).encode() + b"\n")
    path.write_bytes(b"".join(out))


SECRET_ATTACKS: dict[str, Callable[[Path], None]] = {
    "value edited": lambda root: _rewrite_secrets(
        root, lambda d: {**d, "value": "sk-attacker-000000000000"} if "value" in d else d),
    "run key edited": lambda root: _rewrite_secrets(root, lambda d: {**d, "key": "00" * 32} if "key" in d else d),
    "value removed": lambda root: _rewrite_secrets(root, lambda d: d if "value" not in d else None),
    "deleted": lambda root: (root / "runs" / "victim" / "secrets.jsonl").unlink(),
    "rolled back to empty": lambda root: (root / "runs" / "victim" / "secrets.jsonl").write_bytes(b""),
}


@pytest.mark.parametrize("attack", sorted(SECRET_ATTACKS))
def test_secrets_edited_deleted_or_rolled_back_are_refused(tmp_path: Path, signer: Any, attack: str) -> None:
    # The waiting run holds its API key as a secret: without its real value it is never continued
    # (never called with "[REDACTED]" or another key).
    root = tmp_path / "store"
    victim = start_victim(open_store(root), signer)
    SECRET_ATTACKS[attack](root)
    before = run_files(root)
    assert_refused(probe(open_store(root), victim), victim, before, root, SecretMissingError)


def test_forged_secret_entries_are_never_applied(tmp_path: Path, signer: Any) -> None:
    # Issue 20, item 3: entries aimed at the last record's status, node, wait and vars, run.json
    # deleted so the run is rebuilt: an entry that matches no commitment standing in the ledger
    # fills nothing.
    root = tmp_path / "store"
    victim = start_victim(open_store(root), signer)
    path = root / "runs" / "victim" / "secrets.jsonl"
    last = json.loads(ledger_lines(root)[-1])
    forged = [{"commitment": "ab" * 32, "value": "completed"},
              *({"record_hash": last["record_hash"], "seq": last["seq"], "field": "delta", "path": [name],
                 "value": value}
                for name, value in (("status", "running"), ("current_node", "pay"), ("waiting", None),
                                    ("vars", {"amount": {"answer": 5000}, "api_key": "sk-attacker"})))]
    with path.open("ab") as handle:
        handle.write(b"".join(json.dumps(doc).encode() + b"\n" for doc in forged))
    (root / "runs" / "victim" / "run.json").unlink()
    fresh = open_store(root)
    assert victim.runtime(fresh).get_state("victim").status.value == "waiting"
    assert paid_once(victim, probe(fresh, victim))


# -- anchors.jsonl --------------------------------------------------------------------------------


def _anchor_attacks(root: Path, attack: str) -> None:
    path = root / "runs" / "victim" / "anchors.jsonl"
    if attack == "deleted":
        path.unlink()
        return
    doc = json.loads(path.read_bytes().splitlines()[-1])
    if attack == "state edited":
        doc["checkpoint"]["state"]["run"]["vars"].update(i=-5, api_key="sk-attacker", amount={"answer": 5000})
    elif attack == "moved to another position":
        doc["seq"] -= 10
        doc["checkpoint"]["ledger"]["seq"] -= 10
    path.write_text(json.dumps(doc) + "\n")


@pytest.mark.parametrize("attack", ["state edited", "moved to another position", "deleted"])
def test_anchors_edited_or_deleted_change_nothing(tmp_path: Path, signer: Any, attack: str) -> None:
    # Issue 20, item 2: an anchor is used only where the ledger proves it (runs show --at, snapshot
    # --at, and rebuilding a run without its checkpoint).
    root = tmp_path / "store"
    victim = start_victim(open_store(root), signer, spins=1100)
    anchor_seq = json.loads((root / "runs" / "victim" / "anchors.jsonl").read_bytes().splitlines()[-1])["seq"]
    truth = victim.runtime(open_store(root)).state_at("victim", anchor_seq + 1).run.vars
    _anchor_attacks(root, attack)
    (root / "runs" / "victim" / "run.json").unlink()
    fresh = open_store(root)
    assert victim.runtime(fresh).state_at("victim", anchor_seq + 1).run.vars == truth
    assert paid_once(victim, probe(fresh, victim))


# -- bookmarks.json -------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["forged", "deleted"])
def test_bookmarks_edited_or_deleted_change_nothing_the_runtime_does(tmp_path: Path, signer: Any,
                                                                     attack: str) -> None:
    root = tmp_path / "store"
    store = open_store(root)
    victim = start_victim(store, signer)
    store.bookmarks.add("victim", "asked")
    path = root / "runs" / "victim" / "bookmarks.json"
    if attack == "deleted":
        path.unlink()
    else:
        doc = json.loads(path.read_bytes())
        doc["bookmarks"]["asked"].update(record_hash="ab" * 32, checkpoint_seq=99)
        path.write_text(json.dumps(doc))
    assert paid_once(victim, probe(open_store(root), victim))
    problems = {p.type for p in verify_run(root, "victim").problems}
    assert problems == (set() if attack == "deleted" else {"bookmark_mismatch", "checkpoint_rollback"})


# -- .lock ----------------------------------------------------------------------------------------


def test_deleting_the_lock_file_does_not_admit_a_second_writer(tmp_path: Path, signer: Any) -> None:
    # While a writer is inside the payment, its lock file is deleted: a second writer would lock a
    # new file, find the payment's intent without a result and pay again. The run directory is
    # locked too, so it is refused.
    root = tmp_path / "store"
    victim = start_victim(open_store(root), signer)
    inside, release = threading.Event(), threading.Event()

    def slow(run: Any, effect: Any) -> EffectOutcome:
        victim.bank.payments.append((effect.payload["pay"], effect.payload["api_key"]))
        inside.set()
        release.wait(30)
        return EffectOutcome.completed({"receipt": "paid"})

    first = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: slow}, signer=signer)
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(first.resume(
        workflow=PAYMENT, run_id="victim", wait_id=victim.wait_id, payload={"answer": 7})))
    thread.start()
    assert inside.wait(30)
    try:
        (root / "runs" / "victim" / ".lock").unlink()
        second = open_store(root).runtime(effect_handlers={EffectType.TOOL_CALLS: slow}, signer=signer)
        with pytest.raises(RunLockedError):
            second.tick(workflow=PAYMENT, run_id="victim")
    finally:
        release.set()
        thread.join(30)
    assert done and done[0].status.value == "completed" and victim.bank.payments == [(7, API_KEY)]


@pytest.mark.parametrize("attack", ["replaced by a symlink", "content written"])
def test_a_lock_file_replaced_or_written_is_refused_or_harmless(tmp_path: Path, signer: Any, attack: str) -> None:
    root = tmp_path / "store"
    victim = start_victim(open_store(root), signer)
    lock = root / "runs" / "victim" / ".lock"
    if attack == "replaced by a symlink":
        lock.unlink()
        lock.symlink_to(tmp_path / "elsewhere")
        before = run_files(root)
        assert_refused(probe(open_store(root), victim), victim, before, root, StorageError)
        assert not (tmp_path / "elsewhere").exists()
    else:
        lock.write_text("held by nobody\n")
        assert paid_once(victim, probe(open_store(root), victim))


# -- index.sqlite3 (store level) ------------------------------------------------------------------


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("ABSTRACTRUNTIME_STORE", None)
    return subprocess.run([*CLI, "--store", str(root), *args], capture_output=True, text=True, timeout=120,
                          cwd=root.parent, env=env)


def test_index_rows_edited_or_deleted_make_no_run_advance(tmp_path: Path) -> None:
    # The index is a cache of the checkpoints: a row edited to say a finished run waits on a key,
    # or on a due timer, makes emit and tick --due look at it; the run itself (under its lock, from
    # its ledger) is not waiting, so nothing is resumed. A deleted index is rebuilt.
    root = tmp_path / "store"
    store = open_store(root)
    victim = start_victim(store, None)
    pay(store, victim)
    assert _cli(root, "runs", "list").returncode == 0  # the index exists
    before = run_files(root)
    with sqlite3.connect(root / "index.sqlite3") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        assert {"status", "wait_key"} <= columns, columns
        db.execute("UPDATE runs SET status = 'waiting', wait_reason = 'event', wait_key = 'evt-forged' "
                   "WHERE run_id = 'victim'")
    emitted = _cli(root, "emit", "evt-forged", "--payload", '{"answer": 5000}')
    assert emitted.returncode != 0 and run_files(root) == before
    with sqlite3.connect(root / "index.sqlite3") as db:
        db.execute("UPDATE runs SET status = 'waiting', wait_reason = 'until', until_ts = 946684800.0 "
                   "WHERE run_id = 'victim'")
    _cli(root, "tick", "--due")
    assert run_files(root) == before and victim.bank.payments == [(7, API_KEY)]
    for path in root.glob("index.sqlite3*"):
        path.unlink()
    listed = _cli(root, "runs", "list", "--json")
    assert listed.returncode == 0 and [r["status"] for r in json.loads(listed.stdout)] == ["completed"]


# -- snapshots/*.json (store level) ---------------------------------------------------------------


def test_a_snapshot_whose_state_was_edited_is_refused(tmp_path: Path, signer: Any) -> None:
    root = tmp_path / "store"
    store = open_store(root)
    victim = start_victim(store, signer)
    snapshot = take_snapshot(victim.runtime(store), "victim", name="asked")
    store.snapshots.save(snapshot)
    path = root / "snapshots" / f"{snapshot.snapshot_id}.json"
    doc = json.loads(path.read_bytes())
    for state in (doc.get("run_state"), (doc.get("state") or {}).get("run")):
        if state is not None:
            state.update(status="running", current_node="pay", waiting=None)
            state["vars"]["amount"] = {"answer": 5000}
    path.write_text(json.dumps(doc))
    fresh = open_store(root)
    runtime = victim.runtime(fresh)
    try:
        restore_snapshot(runtime, fresh.snapshots.load(snapshot.snapshot_id), workflow=PAYMENT)
        runtime.tick(workflow=PAYMENT, run_id="victim")
    except (VerificationFailedError, CorruptRecordError):
        pass
    assert victim.bank.payments == []  # never 5000


def test_a_deleted_snapshot_is_not_found(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = open_store(root)
    victim = start_victim(store, None)
    snapshot = take_snapshot(victim.runtime(store), "victim", name="asked")
    store.snapshots.save(snapshot)
    (root / "snapshots" / f"{snapshot.snapshot_id}.json").unlink()
    before = run_files(root)
    proc = _cli(root, "snapshot", "restore", snapshot.snapshot_id)
    assert proc.returncode == 4 and run_files(root) == before


# -- artifacts/ (store level) ---------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["content edited", "content and metadata edited", "content deleted"])
def test_artifact_content_edited_or_deleted_is_refused(tmp_path: Path, attack: str) -> None:
    # A run refers to an artifact by its content address ({"$artifact": id}, the first 32 hex
    # digits of its sha256): bytes that do not hash to it are never served, whatever .meta says.
    root = tmp_path / "store"
    store = open_store(root)
    meta = store.artifacts.store(b"the approved contract", content_type="text/plain", run_id="victim")
    folder = root / "artifacts"
    bin_path = next(p for p in folder.rglob(f"{meta.artifact_id}*.bin"))
    meta_path = next(p for p in folder.rglob(f"{meta.artifact_id}*.meta"))
    forged = b"the forged contract!!"
    if attack == "content deleted":
        bin_path.unlink()
    else:
        bin_path.write_bytes(forged)
    if attack == "content and metadata edited":
        import hashlib

        doc = json.loads(meta_path.read_bytes())
        doc.update(sha256=hashlib.sha256(forged).hexdigest(), size_bytes=len(forged))
        meta_path.write_text(json.dumps(doc))
    with pytest.raises(CorruptRecordError):
        open_store(root).artifacts.load(meta.artifact_id)


def test_an_id_that_looks_like_a_content_address_must_be_one(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    with pytest.raises(InvalidInputError, match="content address"):
        store.artifacts.store(b"anything", artifact_id="0" * 32)
    meta = store.artifacts.store(b"anything")
    assert store.artifacts.store(b"anything", artifact_id=meta.artifact_id).artifact_id == meta.artifact_id


# -- events/ (store level) ------------------------------------------------------------------------


def _delivered_once(tmp_path: Path) -> tuple[Path, Any, str]:
    root = tmp_path / "store"
    store = open_store(root)
    runtime = store.runtime()
    run_id = runtime.start(workflow=INVOICES, run_id="invoices")
    runtime.tick(workflow=INVOICES, run_id=run_id)
    emit(store, "inv-1", runtime)
    assert seen(store, run_id) == 1  # delivered, and the run waits on the key again
    return root, runtime, run_id


def test_an_event_record_rolled_back_to_open_delivers_nothing_twice(tmp_path: Path) -> None:
    # An open record names the waits it goes to; each wait accepts one answer.
    root, _, run_id = _delivered_once(tmp_path)
    (path,) = (root / "events").glob("*.jsonl")
    path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])  # the "delivered" line removed
    store = open_store(root)
    emit(store, "inv-1", store.runtime())
    assert seen(store, run_id) == 1


def test_an_event_record_forged_as_delivered_is_not_delivered(tmp_path: Path) -> None:
    # A forged "delivered" record makes emit --id drop that event: the runtime does nothing (the
    # run goes on waiting; the emitter is told "already delivered").
    root, _, run_id = _delivered_once(tmp_path)
    (path,) = (root / "events").glob("*.jsonl")
    forged = [json.loads(line) for line in path.read_bytes().splitlines()]
    forged[0]["event_id"] = "inv-2"
    target = root / "events" / path.name.replace(path.stem, __import__("hashlib").sha256(b"inv-2").hexdigest())
    target.write_bytes(b"".join(json.dumps(doc).encode() + b"\n" for doc in forged))
    store = open_store(root)
    result = emit(store, "inv-2", store.runtime())
    assert result.outcome == "already_delivered" and seen(store, run_id) == 1


def test_an_event_record_deleted_does_not_deliver_the_event_again(tmp_path: Path) -> None:
    root, _, run_id = _delivered_once(tmp_path)
    for path in (root / "events").glob("*.jsonl"):
        path.unlink()
    # The run's ledger shows the event given to it; it waits on the key again and is not given it twice.
    store = open_store(root)
    assert emit(store, "inv-1", store.runtime()).outcome == "already_delivered"
    assert seen(store, run_id) == 1
    assert len(list((root / "events").glob("*.jsonl"))) == 1  # the delivery is on record again
    assert emit(open_store(root), "inv-1", store.runtime()).outcome == "already_delivered"
    assert seen(store, run_id) == 1
