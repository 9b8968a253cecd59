"""The PostgreSQL stores beyond the shared conformance suite: schema versioning, opening,
redacted credentials, byte-exact ledger lines, conditional appends and values jsonb could not hold."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

import pytest

from abstractruntime.core.chain import seal_record_line
from abstractruntime.core.errors import (
    LedgerConflictError,
    StorageError,
    UnsupportedFormatError,
)
from abstractruntime.core.models import RunState, StepRecord
from abstractruntime.core.ports import LedgerHead
from abstractruntime.storage.ledger_chain import verify_ledger_chain
from abstractruntime.storage.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from abstractruntime.storage.postgres.store import PostgresStore
from abstractruntime.storage.dsn import redact
from abstractruntime.storage.store import STORE_ENV, StoreNotFoundError, open_store


def _sealed(run_id: str, head: LedgerHead, count: int, node: str = "n") -> tuple[list[dict], list[bytes]]:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    docs, lines = [], []
    for i in range(count):
        rec = StepRecord.start(run=run, node_id=f"{node}{i}", effect=None)
        rec.finish_success({"i": i, "text": "héllo ☃"})
        doc, line = seal_record_line(rec, head=head)
        head = LedgerHead(doc["seq"], doc["record_hash"])
        docs.append(doc)
        lines.append(line)
    return docs, lines


# -- schema --------------------------------------------------------------------------------


def test_schema_is_created_once_and_versioned(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    open_pg()
    open_pg()  # a second open migrates nothing
    rows = admin.execute(f'SELECT version FROM "{pg_schema}".schema_migrations ORDER BY version').fetchall()
    assert [r[0] for r in rows] == [version for version, _, _ in MIGRATIONS]
    tables = {r[0] for r in admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [pg_schema]).fetchall()}
    assert {"runs", "ledger", "secrets", "anchors", "snapshots", "bookmarks", "schema_migrations"} <= tables


def test_an_older_schema_is_upgraded_in_place(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from abstractruntime.storage.postgres import schema

    from abstractruntime.core.canonical import canonical_json
    from abstractruntime.core.ports import Checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(schema, "SCHEMA_VERSION", 1)
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        open_pg()
    assert admin.execute("SELECT to_regclass(%s)", [f"{pg_schema}.bookmarks"]).fetchone()[0] is None
    # A row as version 1 wrote it (no ledger_seq column yet).
    checkpoint = Checkpoint(run=RunState.new(workflow_id="wf", entry_node="a", run_id="kept"),
                            ledger=LedgerHead(3, "ab" * 32))
    data = canonical_json({"format": 2, **checkpoint.to_dict()})  # a checkpoint as that release wrote it
    admin.execute(f'INSERT INTO "{pg_schema}".runs (run_id, status, workflow_id, checkpoint, checkpoint_json)'
                  " VALUES ('kept', 'running', 'wf', %s::jsonb, %s)", [data.decode(), data])
    new = open_pg()
    assert new.runs.load("kept").run_id == "kept"
    rows = admin.execute(f'SELECT version FROM "{pg_schema}".schema_migrations ORDER BY version').fetchall()
    assert [r[0] for r in rows] == [version for version, _, _ in MIGRATIONS]
    # Version 4 took each row's ledger position from its checkpoint (the fence starts there).
    assert admin.execute(f'SELECT ledger_seq FROM "{pg_schema}".runs').fetchall() == [(3,)]


def test_newer_schema_is_refused(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    open_pg()
    admin.execute(f'INSERT INTO "{pg_schema}".schema_migrations (version, description) VALUES (%s, %s)',
                  [SCHEMA_VERSION + 1, "from the future"])
    for create in (True, False):
        with pytest.raises(UnsupportedFormatError) as info:
            open_pg(create=create)
        assert f"version {SCHEMA_VERSION + 1}" in str(info.value) and "upgrade abstractruntime" in str(info.value)


def test_create_false_refuses_an_empty_database(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    with pytest.raises(StoreNotFoundError):
        open_pg(create=False)
    assert admin.execute("SELECT to_regnamespace(%s)", [pg_schema]).fetchone()[0] is None  # nothing created
    open_pg()
    open_pg(create=False)


def test_open_store_takes_a_url_or_the_environment(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(postgres_url)
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()
    monkeypatch.setenv(STORE_ENV, postgres_url)
    store = open_store()
    try:
        assert isinstance(store, PostgresStore)
        assert store.runtime().run_store is store.runs
        assert store.runtime().artifact_store is store.artifacts
    finally:
        store.close()


# -- credentials ---------------------------------------------------------------------------


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://bob:s3cr@t@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact("postgres://bob@db/x") == "postgres://bob@db/x"
    assert "pw" not in redact("postgresql://u@h/d?password=pw and host=h password='p w'")


def test_passwords_never_reach_messages(postgres_url: str) -> None:
    # Trust authentication ignores the password, so the connection itself succeeds.
    with_password = postgres_url.replace("postgres@", "postgres:hunter2@")
    store = open_store(with_password)
    try:
        assert "hunter2" not in store.url + repr(store) + store.describe()
        assert "***" in store.url
    finally:
        store.close()
    missing = with_password.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StorageError) as info:
        open_store(missing)
    text = str(info.value) + json.dumps(info.value.to_dict())
    assert "hunter2" not in text and "no_such_database" in text and "***" in text
    for bad in (with_password + "?no_such_option=1", with_password.replace("@127.0.0.1:", "@127.0.0.1:port")):
        with pytest.raises(StorageError) as info:
            open_store(bad)
        assert "hunter2" not in str(info.value) + json.dumps(info.value.to_dict())


# -- the ledger ----------------------------------------------------------------------------


def test_lines_are_stored_byte_for_byte(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    ledger = open_pg().ledger
    docs, lines = _sealed("r1", LedgerHead(), 3)
    head = ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    assert head == LedgerHead(3, docs[-1]["record_hash"])
    assert ledger.lines("r1") == lines
    assert ledger.list("r1") == [json.loads(line) for line in lines]
    assert verify_ledger_chain(ledger.list("r1"))["ok"] is True
    # The records of one append share a row: their exact lines joined by newlines (the one copy),
    # keyed by the first seq, with the last seq and the head's hash beside them.
    rows = admin.execute(f'SELECT seq, last_seq, line, record_hash, status FROM "{pg_schema}".ledger '
                         "WHERE run_id = 'r1'").fetchall()
    assert rows == [(1, 3, b"\n".join(lines), docs[-1]["record_hash"], "completed")]
    # An operator's query reads records out of the lines (docs/postgres.md).
    found = admin.execute(
        "SELECT l.seq + r.n - 1, r.record::jsonb ->> 'node_id', r.record::jsonb ->> 'prev_hash' "
        f'FROM "{pg_schema}".ledger l, unnest(string_to_array(convert_from(l.line, \'UTF8\'), E\'\\n\')) '
        "WITH ORDINALITY AS r(record, n) WHERE l.run_id = 'r1' ORDER BY 1").fetchall()
    assert found == [(1, "n0", None), (2, "n1", docs[0]["record_hash"]), (3, "n2", docs[1]["record_hash"])]
    columns = {r[0] for r in admin.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_schema = %s AND table_name = 'ledger'", [pg_schema])}
    assert columns == {"run_id", "seq", "last_seq", "line", "record_hash", "status", "idempotency_key", "effect_id"}
    # Another append starts a row of its own.
    more_docs, more_lines = _sealed("r1", head, 1, node="m")
    assert ledger.append_lines("r1", more_docs, more_lines, expect=head).seq == 4
    assert admin.execute(f'SELECT seq, last_seq FROM "{pg_schema}".ledger WHERE run_id = \'r1\' ORDER BY seq'
                         ).fetchall() == [(1, 3), (4, None)]
    assert ledger.lines("r1") == [*lines, *more_lines]
    assert [doc["seq"] for doc in ledger.records_at("r1", [(3, None), (4, None), (2, None)])] == [2, 3, 4]
    assert ledger.read_after("r1", LedgerHead(2, docs[1]["record_hash"]), until_seq=3)[1] == [docs[2]]


def test_append_is_conditional_on_the_head(open_pg: Callable[..., Any]) -> None:
    ledger = open_pg().ledger
    docs, lines = _sealed("r1", LedgerHead(), 2)
    ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    stale_docs, stale_lines = _sealed("r1", LedgerHead(), 1, node="stale")
    with pytest.raises(LedgerConflictError):
        ledger.append_lines("r1", stale_docs, stale_lines, expect=LedgerHead())
    # Right seq, wrong hash: a writer that read another history.
    forged = LedgerHead(2, "0" * 64)
    more_docs, more_lines = _sealed("r1", forged, 1, node="forged")
    with pytest.raises(LedgerConflictError):
        ledger.append_lines("r1", more_docs, more_lines, expect=forged)
    assert ledger.lines("r1") == lines


def test_concurrent_writer_at_the_same_position_is_refused(open_pg: Callable[..., Any], admin: Any,
                                                           pg_schema: str) -> None:
    """Both writers read head 1; the one that inserts second is refused by the primary key
    even though its own head check passed (the first had not committed yet)."""
    ledger = open_pg().ledger
    docs, lines = _sealed("r1", LedgerHead(), 1)
    ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    head = ledger.head("r1")
    first_docs, first_lines = _sealed("r1", head, 2, node="first")
    second_docs, second_lines = _sealed("r1", head, 2, node="second")

    other = open_pg().ledger
    outcome: dict[str, Any] = {}
    with admin.transaction():
        # The first writer's batch, inserted but not committed.
        admin.execute(f'INSERT INTO "{pg_schema}".ledger (run_id, seq, line, record_hash) '
                      "VALUES (%s, %s, %s, %s)", ["r1", 2, first_lines[0], first_docs[0]["record_hash"]])

        def second() -> None:
            try:
                outcome["head"] = other.append_lines("r1", second_docs, second_lines, expect=head)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                outcome["error"] = exc

        thread = threading.Thread(target=second)
        thread.start()
        # Wait until the second writer is blocked on the first one's uncommitted row.
        while thread.is_alive() and not admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()[0]:
            time.sleep(0.01)
    thread.join()
    assert isinstance(outcome.get("error"), LedgerConflictError), outcome
    assert [json.loads(line)["node_id"] for line in ledger.lines("r1")] == ["n0", "first0"]


def test_numbers_come_back_as_written(open_pg: Callable[..., Any]) -> None:
    """jsonb rewrites 1e300 as digits; the records are read from their exact JSON (RFC 8785) instead."""
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.core.models import StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    wf = WorkflowSpec("num", "a", {"a": lambda run, ctx: StepPlan("a", next_node="b"),
                                   "b": lambda run, ctx: StepPlan("b", complete_output={"x": run.vars["x"]})})
    store = open_pg()
    run_id = store.runtime().start(workflow=wf, vars={"x": 1.5e300, "y": 0.1, "z": 2**50})
    state = open_pg().runs.load(run_id)
    assert isinstance(state.vars["x"], float) and state.vars == {"x": 1.5e300, "y": 0.1, "z": 2**50}
    assert isinstance(store.runtime().tick(workflow=wf, run_id=run_id).output["x"], float)
    # What RFC 8785 cannot carry exactly is refused at the source, naming it, before anything is written.
    with pytest.raises(InvalidInputError, match="vars.z"):
        store.runtime().start(workflow=wf, vars={"z": 2**70}, run_id="big")
    assert not open_pg().runs.exists("big")


def test_records_jsonb_cannot_hold_round_trip(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    """U+0000 in a value: jsonb refuses it, so the exact JSON is what is kept and read."""
    store = open_pg()
    from abstractruntime.core.models import StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    wf = WorkflowSpec("nul", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={"echo": run.vars["s"]})})
    rt = store.runtime()
    run_id = rt.start(workflow=wf, vars={"s": "a\x00b"})
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.output == {"echo": "a\x00b"}
    assert open_pg().runs.load(run_id).vars["s"] == "a\x00b"
    assert verify_ledger_chain(store.ledger.list(run_id))["ok"] is True
    # The exact JSON is the one copy: a jsonb column could not have held this checkpoint.
    columns = {r[0] for r in admin.execute("SELECT data_type FROM information_schema.columns "
                                           "WHERE table_schema = %s AND table_name = 'runs'", [pg_schema])}
    assert "jsonb" not in columns


def test_secrets_and_anchors(open_pg: Callable[..., Any]) -> None:
    ledger = open_pg().ledger
    docs, lines = _sealed("r1", LedgerHead(), 2)
    ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    # Values of records already in the ledger are kept at once (see test_pg_fencing.py for a batch's own).
    ledger.put_secrets("r1", [{"record_hash": docs[0]["record_hash"], "seq": 1, "field": "effect", "path": ["k"],
                               "value": "s1"},
                              {"record_hash": docs[1]["record_hash"], "seq": 2, "field": "result", "path": [],
                               "value": {"x": 1}}])
    assert [e["value"] for e in open_pg().ledger.get_secrets("r1")] == ["s1", {"x": 1}]
    # Format-3 values: the run's key and committed values; only what is still needed is kept.
    ledger.put_secrets("r2", [{"key": "00" * 32}, {"commitment": "a" * 64, "value": "v1"},
                              {"commitment": "b" * 64, "value": "v2"}])
    more, extra = _sealed("r2", LedgerHead(), 1)
    ledger.append_lines("r2", more, extra, expect=LedgerHead())  # they go in with the next batch
    assert len(open_pg().ledger.get_secrets("r2")) == 3
    ledger.retain_secrets("r2", ["b" * 64])
    assert open_pg().ledger.get_secrets("r2") == [{"key": "00" * 32}, {"commitment": "b" * 64, "value": "v2"}]
    ledger.retain_secrets("r2", [])
    assert ledger.get_secrets("r2") == [] and ledger.get_secrets("other") == []

    assert ledger.find_anchor("r1", 10) is None
    for seq in (5, 9):
        ledger.put_anchor("r1", {"seq": seq, "head_hash": f"h{seq}", "offset": None, "checkpoint": {"n": seq}})
    assert ledger.find_anchor("r1", 4) is None
    assert ledger.find_anchor("r1", 8)["checkpoint"] == {"n": 5}
    assert ledger.find_anchor("r1", 100)["head_hash"] == "h9"


def test_read_after_refuses_a_tail_that_does_not_continue_the_position(open_pg: Callable[..., Any]) -> None:
    from abstractruntime.core.errors import CorruptRecordError

    ledger = open_pg().ledger
    docs, lines = _sealed("r1", LedgerHead(), 3)
    ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    head, tail = ledger.read_after("r1", LedgerHead(1, docs[0]["record_hash"]))
    assert head.seq == 3 and [r["seq"] for r in tail] == [2, 3]
    head, tail = ledger.read_after("r1", LedgerHead(), until_seq=2)
    assert head.seq == 3 and [r["seq"] for r in tail] == [1, 2]
    head, tail = ledger.read_after("r1", LedgerHead(3, docs[2]["record_hash"]))
    assert head.seq == 3 and tail == []
    with pytest.raises(CorruptRecordError):
        ledger.read_after("r1", LedgerHead(1, "f" * 64))


# -- connections ---------------------------------------------------------------------------


def _backends(admin: Any) -> set[int]:
    """Backend pids of abstractruntime connections to the test database."""
    return {r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND application_name = 'abstractruntime'").fetchall()}


def test_lock_connections_are_pooled_not_leaked(open_pg: Callable[..., Any], admin: Any) -> None:
    from abstractruntime.storage.postgres.db import LOCK_POOL_SIZE

    store = open_pg()
    store.runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    before = _backends(admin)
    for _ in range(50):
        with store.runs.lock("r1"):
            pass
    opened = _backends(admin) - before
    assert 1 <= len(opened) <= LOCK_POOL_SIZE
    store.close()
    deadline = time.monotonic() + 60  # backends exit asynchronously after their client leaves
    while opened & _backends(admin) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not opened & _backends(admin)


def test_a_dropped_connection_fails_one_call_then_reconnects(open_pg: Callable[..., Any], admin: Any) -> None:
    store = open_pg()
    store.runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    with store.db.connection() as conn:
        pid = conn.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    try:
        store.runs.load("r1")  # may fail (StorageError) or find the connection already gone
    except StorageError as exc:
        assert "PostgreSQL" in str(exc)
    assert store.runs.load("r1").run_id == "r1"


# -- the row's token, as this store's own writes left it --------------------------------------------


def _effects_workflow(count: int) -> Any:
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def node(k: int) -> Any:
        if k == count:
            return lambda run, ctx: StepPlan(f"e{k}", complete_output={"done": True})
        return lambda run, ctx: StepPlan(f"e{k}", effect=Effect(EffectType.TOOL_CALLS, {"k": k}, result_key="r"),
                                         next_node=f"e{k + 1}")

    return WorkflowSpec("effects", "e0", {f"e{k}": node(k) for k in range(count + 1)})


def test_the_append_that_marks_the_row_keeps_its_token_known(open_pg: Callable[..., Any], admin: Any,
                                                             pg_schema: str) -> None:
    """A tick that ends without a checkpoint leaves the row marked ahead by its first append: the
    store still knows the row's token (so the next tick keeps the run's state instead of replaying
    the ledger), and loses it as soon as anyone else changes the row."""
    from abstractruntime import EffectOutcome, EffectType, RunStatus

    store = open_pg()
    wf = _effects_workflow(50)
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({})})
    run_id = rt.start(workflow=wf)
    written = store.runs.written_token(run_id)
    assert written == store.runs.checkpoint_token(run_id)
    assert rt.tick(workflow=wf, run_id=run_id, max_steps=5).status is RunStatus.RUNNING
    row = admin.execute(f'SELECT ledger_ahead, ledger_seq FROM "{pg_schema}".runs WHERE run_id = %s',
                        [run_id]).fetchone()
    assert row[0] is True and row[1] < store.ledger.head(run_id).seq  # appended past the checkpoint, marked
    assert store.runs.written_token(run_id) == store.runs.checkpoint_token(run_id) != written
    # Someone else's change of the row — here between a checkpoint and the append that marks it.
    store.runs.save_checkpoint(store.runs.load_checkpoint(run_id))
    admin.execute(f'UPDATE "{pg_schema}".runs SET ledger_ahead = false, updated_ts = updated_ts WHERE run_id = %s',
                  [run_id])
    ledger = store.ledger
    head = ledger.head(run_id)
    docs, lines = _sealed(run_id, head, 1)
    ledger.append_lines(run_id, docs, lines, expect=head)
    assert store.runs.written_token(run_id) != store.runs.checkpoint_token(run_id)


def test_a_long_batch_is_many_small_rows(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    """A tick of many pure steps (or a copied ledger) is one append: its rows stay small, so that
    reading one record reads little; every record is still found by its seq."""
    from abstractruntime.storage.postgres.ledger import ROW_BYTES, ROW_RECORDS

    ledger = open_pg().ledger
    docs, lines = _sealed("r1", LedgerHead(), 3 * ROW_RECORDS + 5)
    ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    rows = admin.execute(f'SELECT seq, coalesce(last_seq, seq), length(line) FROM "{pg_schema}".ledger '
                         "WHERE run_id = 'r1' ORDER BY seq").fetchall()
    assert len(rows) > 3 and rows[0][0] == 1 and rows[-1][1] == len(docs)
    assert all(last - first < ROW_RECORDS and size < ROW_BYTES + 600 for first, last, size in rows)
    assert all(nxt[0] == row[1] + 1 for row, nxt in zip(rows, rows[1:]))  # no gap, no overlap
    assert ledger.lines("r1") == lines
    wanted = [(1, None), (rows[1][0], None), (rows[1][0] - 1, None), (len(docs), None)]
    assert [doc["seq"] for doc in ledger.records_at("r1", wanted)] == sorted(seq for seq, _ in wanted)


@pytest.mark.parametrize("count", [2, 3 * 64 + 5], ids=["one row", "many rows"])
def test_a_refused_append_writes_no_row_and_marks_nothing(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                          count: int) -> None:
    """The head check, the insert and the run row's mark are one statement: a batch refused (a
    stale head, or a forged hash at the right seq) leaves neither a row nor the mark; the batch
    accepted leaves all its rows and the mark."""
    store = open_pg()
    store.runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    ledger = store.ledger
    docs, lines = _sealed("r1", LedgerHead(), 2)
    head = ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    admin.execute(f'UPDATE "{pg_schema}".runs SET ledger_ahead = false WHERE run_id = %s', ["r1"])

    def state() -> tuple[Any, Any]:
        return (admin.execute(f'SELECT ledger_ahead FROM "{pg_schema}".runs WHERE run_id = %s', ["r1"]).fetchone()[0],
                admin.execute(f'SELECT count(*) FROM "{pg_schema}".ledger WHERE run_id = %s', ["r1"]).fetchone()[0])

    for stale in (LedgerHead(), LedgerHead(1, docs[0]["record_hash"]), LedgerHead(2, "0" * 64)):
        stale_docs, stale_lines = _sealed("r1", stale, count, node="stale")
        with pytest.raises(LedgerConflictError):
            ledger.append_lines("r1", stale_docs, stale_lines, expect=stale)
        assert state() == (False, 1)
    more_docs, more_lines = _sealed("r1", head, count, node="more")
    assert ledger.append_lines("r1", more_docs, more_lines, expect=head).seq == 2 + count
    marked, rows = state()
    assert marked is True and rows > 1
    assert ledger.lines("r1") == [*lines, *more_lines]


def test_an_append_after_the_connection_was_dropped_goes_through_the_new_one(open_pg: Callable[..., Any],
                                                                            admin: Any) -> None:
    """The statement of a step goes through a cursor kept with the shared connection: once the
    server dropped that connection, the next append runs on its replacement (at most one call
    fails, writing nothing), and the head it returns is the ledger's."""
    store = open_pg()
    ledger = store.ledger
    docs, lines = _sealed("r1", LedgerHead(), 2)
    head = ledger.append_lines("r1", docs, lines, expect=LedgerHead())
    with store.db.connection() as conn:
        pid = conn.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    more_docs, more_lines = _sealed("r1", head, 2, node="more")
    try:
        head = ledger.append_lines("r1", more_docs, more_lines, expect=head)
    except StorageError as exc:
        assert "PostgreSQL" in str(exc)
        assert ledger.head("r1") == head  # nothing of the batch was written
        head = ledger.append_lines("r1", more_docs, more_lines, expect=head)
    assert head == ledger.head("r1") == LedgerHead(4, more_docs[-1]["record_hash"])
    with store.db.connection() as conn:
        assert conn.info.backend_pid != pid
    assert ledger.lines("r1") == [*lines, *more_lines]
