"""The tamper matrix of a PostgreSQL store, one table at a time (docs/reliability.md, "Tamper and
abuse matrix"): editing, deleting, rolling back or forging the rows of each table makes the
runtime do *nothing* (the payment still runs once, with the real amount and key) or *refuse* (a
project error, nothing written, nothing paid) — with and without a signing key.

The victim and the probe are in tests/tamper_support.py; the attacker is a superuser connection
(``admin``) working on the store's schema.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Callable, Optional

import pytest

from abstractruntime import EffectOutcome, EffectType
from abstractruntime.core.errors import (
    CorruptRecordError,
    RunLockedError,
    SecretMissingError,
    StorageError,
    UnsupportedFormatError,
    VerificationFailedError,
)
from abstractruntime.core.jcs import jcs
from abstractruntime.core.restore import restore_snapshot, take_snapshot
from abstractruntime.storage.signing import Ed25519Signer

from tamper_support import API_KEY, INVOICES, PAYMENT, Victim, emit, paid_once, pay, probe, seen, start_victim


@pytest.fixture(params=["no key", "key"])
def signer(request: pytest.FixtureRequest) -> Optional[Ed25519Signer]:
    return Ed25519Signer.generate() if request.param == "key" else None


def ledger_rows(admin: Any, schema: str, run_id: str = "victim") -> list[tuple[int, bytes]]:
    """``(seq, line)`` of every record (a row holds the records of one append, joined by newlines)."""
    return [(int(first) + index, line) for first, data in admin.execute(
        f"SELECT seq, line FROM {schema}.ledger WHERE run_id = %s ORDER BY seq", [run_id]).fetchall()
        for index, line in enumerate(bytes(data).split(b"\n"))]


def table_state(admin: Any, schema: str) -> dict[str, Any]:
    """What the runtime could have written: ledger lines, the checkpoint row, secrets."""
    return {"ledger": ledger_rows(admin, schema),
            "runs": admin.execute(f"SELECT ledger_seq, checkpoint_json FROM {schema}.runs ORDER BY run_id").fetchall(),
            "secrets": admin.execute(f"SELECT run_id, seq, entry FROM {schema}.secrets ORDER BY id").fetchall()}


def assert_refused(outcome: Any, victim: Victim, before: dict[str, Any], admin: Any, schema: str,
                   *kinds: type) -> None:
    assert not outcome.ran, "the runtime went on"
    assert isinstance(outcome.error, kinds or (VerificationFailedError, CorruptRecordError)), outcome.error
    assert victim.bank.payments == [] and table_state(admin, schema) == before


def verify(store: Any, signer: Optional[Ed25519Signer], **kwargs: Any) -> set[str]:
    from abstractruntime.storage.postgres.verify import verify_run

    report = verify_run(store, "victim", public_key=signer.public_key if signer else None, **kwargs)
    return {p.type for p in report.problems}


# -- runs -----------------------------------------------------------------------------------------


def _edit_checkpoint_row(admin: Any, schema: str, change: Callable[[dict[str, Any]], None]) -> None:
    (raw,) = admin.execute(f"SELECT checkpoint_json FROM {schema}.runs WHERE run_id = 'victim'").fetchone()
    doc = json.loads(bytes(raw))
    change(doc)
    admin.execute(f"UPDATE {schema}.runs SET checkpoint_json = %s WHERE run_id = 'victim'",
                  [json.dumps(doc).encode()])


def _sent_back_to_pay(doc: dict[str, Any]) -> None:
    run = doc["state"]["run"]
    run.update(status="running", current_node="pay", waiting=None, output=None)
    run["vars"]["amount"] = {"answer": 5000}
    doc["state"]["kernel"]["effects"] = 0
    doc["state"]["kernel"]["metadata"] = {"llm": {"mode": "remote", "server": "http://attacker.example"}}
    doc["external"] = True


@pytest.mark.parametrize("attack", ["checkpoint edited", "row deleted"])
def test_runs_row_edited_or_deleted_changes_nothing(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                    signer: Any, attack: str) -> None:
    store = open_pg()
    victim = start_victim(store, signer)
    pay(store, victim)
    if attack == "checkpoint edited":
        _edit_checkpoint_row(admin, pg_schema, _sent_back_to_pay)
    else:
        admin.execute(f"DELETE FROM {pg_schema}.runs WHERE run_id = 'victim'")
    fresh = open_pg()
    outcome = probe(fresh, victim, answer=False)  # a deleted row is rebuilt from the ledger
    assert outcome.ran and outcome.state.status.value == "completed", outcome.error
    assert victim.bank.payments == [(7, API_KEY)]
    checkpoint = victim.runtime(fresh).get_checkpoint("victim")
    assert checkpoint.metadata == {} and checkpoint.run.vars["amount"] == {"answer": 7}


def test_runs_columns_edited_make_no_run_advance(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    # emit and workers read the indexed columns; the run itself (its ledger, under its lock) decides.
    from abstractruntime.scheduler.events import emit_event

    store = open_pg()
    victim = start_victim(store, None)
    pay(store, victim)
    admin.execute(f"UPDATE {pg_schema}.runs SET status = 'waiting', wait_reason = 'event', wait_key = 'evt-forged' "
                  "WHERE run_id = 'victim'")
    before = table_state(admin, pg_schema)
    runtime = victim.runtime(store)
    result = emit_event(store.runs, "evt-forged", {"answer": 5000}, resolve=lambda run: (PAYMENT, runtime))
    assert not result.states and table_state(admin, pg_schema) == before and victim.bank.payments == [(7, API_KEY)]
    assert "row_columns_mismatch" in verify(store, None)


# -- ledger ---------------------------------------------------------------------------------------


def _rewrite_line(admin: Any, schema: str, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the record at ``seq`` in the row that holds it, leaving the row's other records as they are."""
    first, raw = admin.execute(f"SELECT seq, line FROM {schema}.ledger WHERE run_id = 'victim' AND seq <= %s "
                               "ORDER BY seq DESC LIMIT 1", [seq]).fetchone()
    lines = bytes(raw).split(b"\n")
    doc = json.loads(lines[seq - first])
    change(doc)
    lines[seq - first] = jcs(doc)
    admin.execute(f"UPDATE {schema}.ledger SET line = %s WHERE run_id = 'victim' AND seq = %s",
                  [b"\n".join(lines), first])


@pytest.mark.parametrize("attack", ["head line edited", "last row deleted", "signatures stripped"])
def test_ledger_rows_edited_deleted_or_stripped_are_refused(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                            signer: Any, attack: str) -> None:
    if attack == "signatures stripped" and signer is None:
        pytest.skip("an unsigned ledger has no signature to strip")
    store = open_pg()
    victim = start_victim(store, signer)
    rows = ledger_rows(admin, pg_schema)
    if attack == "head line edited":
        _rewrite_line(admin, pg_schema, rows[-1][0], lambda doc: doc.update(at="2031-01-01T00:00:00.000000+00:00"))
    elif attack == "last row deleted":
        admin.execute(f"DELETE FROM {pg_schema}.ledger WHERE run_id = 'victim' AND seq = "
                      f"(SELECT max(seq) FROM {pg_schema}.ledger WHERE run_id = 'victim')")
    else:
        for seq, _ in rows:
            _rewrite_line(admin, pg_schema, seq, lambda doc: doc.pop("signature", None))
    before = table_state(admin, pg_schema)
    assert_refused(probe(open_pg(), victim), victim, before, admin, pg_schema)
    assert verify(store, signer)


def test_a_ledger_line_edited_before_the_checkpoint_changes_nothing(open_pg: Callable[..., Any], admin: Any,
                                                                    pg_schema: str, signer: Any) -> None:
    # The run's state comes from its proven checkpoint and the records after it: an edit further
    # back is never read by the writer (verify reports it, and store copy refuses the run).
    store = open_pg()
    victim = start_victim(store, signer)
    _rewrite_line(admin, pg_schema, 1, lambda doc: doc.update(at="2031-01-01T00:00:00.000000+00:00"))
    assert paid_once(victim, probe(open_pg(), victim))
    assert "record_hash_mismatch" in verify(store, signer)


def test_ledger_rows_appended_by_a_forger_are_refused_with_a_key(open_pg: Callable[..., Any], admin: Any,
                                                                 pg_schema: str) -> None:
    # Without a key, well-chained rows appended by someone who can write the table are the run's
    # history (the ledger is the only evidence): docs/security.md. With a key they are refused.
    from abstractruntime.core.records import seal

    signer = Ed25519Signer.generate()
    store = open_pg()
    victim = start_victim(store, signer)
    last = json.loads(ledger_rows(admin, pg_schema)[-1][1])
    doc, line = seal({"format": 3, "seq": last["seq"] + 1, "kind": "resume", "status": "completed",
                      "at": "2030-01-01T00:00:00.000000+00:00", "prev_hash": last["record_hash"], "node_id": "pay",
                      "result": {"payload": {"answer": 5000}, "reason": "user", "wait_id": victim.wait_id},
                      "delta": {"current_node": "pay", "status": "running", "waiting": None,
                                "vars": [["r", ["amount"], ["payload"]]]}})
    admin.execute(f"INSERT INTO {pg_schema}.ledger (run_id, seq, line, record_hash, status) "
                  "VALUES ('victim', %s, %s, %s, 'completed')", [doc["seq"], line, doc["record_hash"]])
    before = table_state(admin, pg_schema)
    assert_refused(probe(open_pg(), victim, answer=False), victim, before, admin, pg_schema)
    assert "unsigned_tail" in verify(store, signer)


# -- secrets --------------------------------------------------------------------------------------


def _secret_rows(admin: Any, schema: str) -> list[tuple[int, dict[str, Any]]]:
    return [(int(row_id), json.loads(bytes(entry))) for row_id, entry in admin.execute(
        f"SELECT id, entry FROM {schema}.secrets WHERE run_id = 'victim' ORDER BY id").fetchall()]


@pytest.mark.parametrize("attack", ["value edited", "run key edited", "rows deleted"])
def test_secrets_rows_edited_or_deleted_are_refused(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                    signer: Any, attack: str) -> None:
    store = open_pg()
    victim = start_victim(store, signer)
    rows = _secret_rows(admin, pg_schema)
    assert any("value" in entry for _, entry in rows) and any("key" in entry for _, entry in rows)
    for row_id, entry in rows:
        if attack == "rows deleted":
            admin.execute(f"DELETE FROM {pg_schema}.secrets WHERE id = %s", [row_id])
            continue
        field = "value" if attack == "value edited" else "key"
        if field in entry:
            entry[field] = "sk-attacker-000000000000" if field == "value" else "00" * 32
            admin.execute(f"UPDATE {pg_schema}.secrets SET entry = %s WHERE id = %s",
                          [json.dumps(entry).encode(), row_id])
    before = table_state(admin, pg_schema)
    assert_refused(probe(open_pg(), victim), victim, before, admin, pg_schema, SecretMissingError)


def test_forged_secrets_rows_are_never_applied(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                               signer: Any) -> None:
    store = open_pg()
    victim = start_victim(store, signer)
    last = json.loads(ledger_rows(admin, pg_schema)[-1][1])
    for entry in ({"commitment": "ab" * 32, "value": "completed"},
                  {"record_hash": last["record_hash"], "seq": last["seq"], "field": "delta", "path": ["status"],
                   "value": "completed"}):
        admin.execute(f"INSERT INTO {pg_schema}.secrets (run_id, seq, entry) VALUES ('victim', %s, %s)",
                      [last["seq"], json.dumps(entry).encode()])
    admin.execute(f"DELETE FROM {pg_schema}.runs WHERE run_id = 'victim'")  # rebuilt from the ledger
    assert paid_once(victim, probe(open_pg(), victim))


# -- anchors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["state edited", "rows deleted"])
def test_anchor_rows_edited_or_deleted_change_nothing(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                      signer: Any, attack: str) -> None:
    store = open_pg()
    victim = start_victim(store, signer, spins=1100)
    (seq, raw), = admin.execute(f"SELECT seq, anchor FROM {pg_schema}.anchors WHERE run_id = 'victim'").fetchall()
    truth = victim.runtime(store).state_at("victim", int(seq) + 1).run.vars
    if attack == "rows deleted":
        admin.execute(f"DELETE FROM {pg_schema}.anchors")
    else:
        doc = json.loads(bytes(raw))
        doc["checkpoint"]["state"]["run"]["vars"].update(i=-5, api_key="sk-attacker", amount={"answer": 5000})
        admin.execute(f"UPDATE {pg_schema}.anchors SET anchor = %s", [json.dumps(doc).encode()])
    admin.execute(f"DELETE FROM {pg_schema}.runs WHERE run_id = 'victim'")
    fresh = open_pg()
    assert victim.runtime(fresh).state_at("victim", int(seq) + 1).run.vars == truth
    assert paid_once(victim, probe(fresh, victim))


# -- snapshots, bookmarks, artifacts ---------------------------------------------------------------


def test_a_snapshot_row_whose_state_was_edited_is_refused(open_pg: Callable[..., Any], admin: Any,
                                                          pg_schema: str) -> None:
    store = open_pg()
    victim = start_victim(store, None)
    snapshot = take_snapshot(victim.runtime(store), "victim", name="asked")
    store.snapshots.save(snapshot)
    (raw,) = admin.execute(f"SELECT snapshot_json FROM {pg_schema}.snapshots").fetchone()
    doc = json.loads(bytes(raw))
    for state in (doc.get("run_state"), (doc.get("state") or {}).get("run")):
        if state is not None:
            state.update(status="running", current_node="pay", waiting=None)
            state["vars"]["amount"] = {"answer": 5000}
    admin.execute(f"UPDATE {pg_schema}.snapshots SET snapshot_json = %s",
                  [json.dumps(doc).encode()])
    fresh = open_pg()
    runtime = victim.runtime(fresh)
    try:
        restore_snapshot(runtime, fresh.snapshots.load(snapshot.snapshot_id), workflow=PAYMENT)
        runtime.tick(workflow=PAYMENT, run_id="victim")
    except (VerificationFailedError, CorruptRecordError):
        pass
    assert victim.bank.payments == []


@pytest.mark.parametrize("attack", ["row edited", "row deleted"])
def test_bookmark_rows_edited_or_deleted_change_nothing_the_runtime_does(open_pg: Callable[..., Any], admin: Any,
                                                                         pg_schema: str, attack: str) -> None:
    store = open_pg()
    victim = start_victim(store, None)
    store.bookmarks.add("victim", "asked")
    if attack == "row deleted":
        admin.execute(f"DELETE FROM {pg_schema}.bookmarks")
    else:
        admin.execute(f"UPDATE {pg_schema}.bookmarks SET record_hash = %s", ["ab" * 32])
    assert paid_once(victim, probe(open_pg(), victim))
    assert verify(store, None) == (set() if attack == "row deleted" else {"bookmark_mismatch"})


def test_artifact_rows_edited_with_their_hash_are_refused(open_pg: Callable[..., Any], admin: Any,
                                                          pg_schema: str) -> None:
    store = open_pg()
    meta = store.artifacts.store(b"the approved contract", content_type="text/plain", run_id="victim")
    forged = b"the forged contract!!"
    admin.execute(f"UPDATE {pg_schema}.artifacts SET content = %s, sha256 = %s, size_bytes = %s",
                  [forged, hashlib.sha256(forged).hexdigest(), len(forged)])
    with pytest.raises(CorruptRecordError):
        open_pg().artifacts.load(meta.artifact_id)
    admin.execute(f"DELETE FROM {pg_schema}.artifacts")
    assert open_pg().artifacts.load(meta.artifact_id) is None


# -- leases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["deleted", "forged for another worker"])
def test_lease_rows_deleted_or_forged_do_not_admit_a_second_writer(open_pg: Callable[..., Any], admin: Any,
                                                                   pg_schema: str, attack: str) -> None:
    # A lease only spreads work; the run's advisory lock keeps one writer (and appends are
    # conditional on the head the writer read).
    store = open_pg()
    victim = start_victim(store, None)
    inside, release = threading.Event(), threading.Event()

    def slow(run: Any, effect: Any) -> EffectOutcome:
        victim.bank.payments.append((effect.payload["pay"], effect.payload["api_key"]))
        inside.set()
        release.wait(30)
        return EffectOutcome.completed({"receipt": "paid"})

    first = open_pg().runtime(effect_handlers={EffectType.TOOL_CALLS: slow})
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(first.resume(
        workflow=PAYMENT, run_id="victim", wait_id=victim.wait_id, payload={"answer": 7})))
    thread.start()
    assert inside.wait(30)
    try:
        if attack == "deleted":
            admin.execute(f"DELETE FROM {pg_schema}.leases")
        else:
            admin.execute(f"INSERT INTO {pg_schema}.leases (run_id, owner, until) VALUES ('victim', 'forger', "
                          "now() - interval '1 hour') ON CONFLICT (run_id) DO UPDATE SET owner = 'forger'")
        second = open_pg().runtime(effect_handlers={EffectType.TOOL_CALLS: slow})
        with pytest.raises(RunLockedError):
            second.tick(workflow=PAYMENT, run_id="victim")
    finally:
        release.set()
        thread.join(30)
    assert done and done[0].status.value == "completed" and victim.bank.payments == [(7, API_KEY)]


# -- schema_migrations ----------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["version raised", "rows deleted"])
def test_schema_migrations_edited_are_refused(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                              attack: str) -> None:
    store = open_pg()
    victim = start_victim(store, None)
    if attack == "version raised":
        admin.execute(f"INSERT INTO {pg_schema}.schema_migrations (version, description) VALUES (99, 'from the future')")
    else:
        admin.execute(f"DELETE FROM {pg_schema}.schema_migrations")
    before = table_state(admin, pg_schema)
    # Raised: a newer schema is refused (an older release must not write rows it does not
    # understand). Deleted: the migrations are tried again and fail on the tables already there.
    with pytest.raises(UnsupportedFormatError if attack == "version raised" else StorageError):
        pay(open_pg(), victim)
    assert table_state(admin, pg_schema) == before and victim.bank.payments == []


# -- events ---------------------------------------------------------------------------------------


def _delivered_once(store: Any) -> tuple[Any, str]:
    runtime = store.runtime()
    run_id = runtime.start(workflow=INVOICES, run_id="invoices")
    runtime.tick(workflow=INVOICES, run_id=run_id)
    emit(store, "inv-1", runtime)
    assert seen(store, run_id) == 1
    return runtime, run_id


def test_an_event_row_reopened_delivers_nothing_twice(open_pg: Callable[..., Any], admin: Any,
                                                      pg_schema: str) -> None:
    store = open_pg()
    runtime, run_id = _delivered_once(store)
    admin.execute(f"UPDATE {pg_schema}.events SET state = 'open', finished_at = NULL")
    emit(store, "inv-1", runtime)
    assert seen(store, run_id) == 1


def test_an_event_row_forged_as_delivered_is_not_delivered(open_pg: Callable[..., Any], admin: Any,
                                                           pg_schema: str) -> None:
    store = open_pg()
    runtime, run_id = _delivered_once(store)
    admin.execute(f"INSERT INTO {pg_schema}.events SELECT 'inv-2', event_key, payload_sha256, payload, created_at, "
                  f"keep_until, targets, state, finished_at FROM {pg_schema}.events WHERE event_id = 'inv-1'")
    assert emit(store, "inv-2", runtime).outcome == "already_delivered" and seen(store, run_id) == 1


def test_an_event_row_deleted_does_not_deliver_the_event_again(open_pg: Callable[..., Any], admin: Any,
                                                               pg_schema: str) -> None:
    store = open_pg()
    runtime, run_id = _delivered_once(store)
    admin.execute(f"DELETE FROM {pg_schema}.events")
    emit(store, "inv-1", runtime)
    assert seen(store, run_id) == 1


# -- signing keys on PostgreSQL ---------------------------------------------------------------------


def test_keys_rotate_and_adopt_on_postgres(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    from abstractruntime.storage.postgres.verify import verify_run

    old, new = Ed25519Signer.generate(), Ed25519Signer.generate()
    store = open_pg()
    victim = start_victim(store, old)
    store.runtime(signer=old).rotate_key("victim", new)
    with pytest.raises(VerificationFailedError):
        open_pg().runtime(signer=old).tick(workflow=PAYMENT, run_id="victim")
    victim.signer = new
    assert paid_once(victim, probe(open_pg(), victim))
    for keys in (old.public_key, new.public_key, [old.public_key, new.public_key]):
        report = verify_run(store, "victim", public_key=keys)
        assert report.ok and report.signature == "valid", report.problems

    plain = start_victim(store, None, run_id="plain")
    plain.signer = new
    outcome = probe(open_pg(), plain)
    assert not outcome.ran and isinstance(outcome.error, VerificationFailedError)
    open_pg().runtime(signer=new).adopt("plain")
    assert paid_once(plain, probe(open_pg(), plain))
    assert verify_run(store, "plain", public_key=new.public_key).signature == "valid"
