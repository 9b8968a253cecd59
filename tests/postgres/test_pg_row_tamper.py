"""Ledger rows holding several records (schema migration 11), edited behind the store's back.

A row keeps the lines of consecutive records joined by newlines, keyed by its first seq, with
``last_seq``, ``record_hash`` and ``status`` columns beside them for the queries. The lines are
the ledger; the columns are the writer's notes. Each attack here edits one row — a record
inside it, its key, its columns, or how the records are cut into rows — and the store must
refuse or report: ``verify`` names a problem, the next step refuses or pays exactly once, and
``store copy`` leaves the run out. Cutting the same lines into other rows changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import AbstractRuntimeError, VerificationFailedError
from abstractruntime.core.jcs import jcs
from abstractruntime.storage.archive import export_archive
from abstractruntime.storage.postgres.copy import copy_store
from abstractruntime.storage.store import FileStore

from tamper_support import Victim, paid_once, probe, start_victim


def _rows(admin: Any, schema: str) -> list[tuple[int, Any, bytes, Any, Any]]:
    return [(int(r[0]), r[1], bytes(r[2]), r[3], r[4]) for r in admin.execute(
        f"SELECT seq, last_seq, line, record_hash, status FROM {schema}.ledger WHERE run_id = 'victim' "
        "ORDER BY seq").fetchall()]


def _multi(admin: Any, schema: str) -> list[tuple[int, Any, bytes, Any, Any]]:
    return [r for r in _rows(admin, schema) if r[1] is not None and r[1] - r[0] >= 2]


def _victim_in_multi_record_rows(open_pg: Callable[..., Any], admin: Any, schema: str, tmp_path: Path) -> Victim:
    """The payment run, written on a folder store and copied over: its ledger lands in rows of many records."""
    folder = FileStore(tmp_path / "source", durability="none")
    try:
        victim = start_victim(folder, spins=40)
        pg = open_pg()
        assert copy_store(folder, pg).copied == ["victim"]
    finally:
        folder.close()
    assert _multi(admin, schema), "the copy wrote no row of several records"
    return victim


def _set_line(admin: Any, schema: str, first: int, lines: list[bytes]) -> None:
    admin.execute(f"UPDATE {schema}.ledger SET line = %s WHERE run_id = 'victim' AND seq = %s",
                  [b"\n".join(lines), first])


def _edit_inside(admin: Any, schema: str) -> None:
    first, _, data, _, _ = _multi(admin, schema)[0]
    lines = data.split(b"\n")
    doc = json.loads(lines[1])
    doc["at"] = "2031-01-01T00:00:00.000000+00:00"
    lines[1] = jcs(doc)
    _set_line(admin, schema, first, lines)


def _edit_inside_rehashed(admin: Any, schema: str) -> None:
    """A record's node changed and its hash recomputed (the chain after it then breaks)."""
    from abstractruntime.core.chain import record_hash

    first, _, data, _, _ = _multi(admin, schema)[0]
    lines = data.split(b"\n")
    doc = json.loads(lines[1])
    doc["node_id"] = "pay"
    doc.pop("signature", None)
    doc["record_hash"] = record_hash(doc)
    lines[1] = jcs(doc)
    _set_line(admin, schema, first, lines)


def _swap_rows(admin: Any, schema: str) -> None:
    a, b = _rows(admin, schema)[:2]
    t = f"{schema}.ledger"
    admin.execute(f"UPDATE {t} SET seq = 1000000 WHERE run_id = 'victim' AND seq = %s", [a[0]])
    admin.execute(f"UPDATE {t} SET seq = %s, last_seq = %s WHERE run_id = 'victim' AND seq = %s", [a[0], a[1], b[0]])
    admin.execute(f"UPDATE {t} SET seq = %s, last_seq = %s WHERE run_id = 'victim' AND seq = 1000000", [b[0], b[1]])


def _swap_lines(admin: Any, schema: str) -> None:
    """Two rows' lines exchanged, their keys and columns left."""
    a, b = _multi(admin, schema)[:2] if len(_multi(admin, schema)) > 1 else _rows(admin, schema)[:2]
    _set_line(admin, schema, a[0], b[2].split(b"\n"))
    _set_line(admin, schema, b[0], a[2].split(b"\n"))


def _record_dropped_inside(admin: Any, schema: str) -> None:
    first, _, data, _, _ = _multi(admin, schema)[0]
    lines = data.split(b"\n")
    del lines[1]
    _set_line(admin, schema, first, lines)


def _record_doubled_inside(admin: Any, schema: str) -> None:
    first, _, data, _, _ = _multi(admin, schema)[0]
    lines = data.split(b"\n")
    lines.insert(1, lines[1])
    _set_line(admin, schema, first, lines)


def _split_shifted(admin: Any, schema: str) -> None:
    """A row cut in two, the second keyed one seq too far (the records keep their lines)."""
    first, last, data, h, s = _multi(admin, schema)[0]
    lines = data.split(b"\n")
    _set_line(admin, schema, first, lines[:1])
    admin.execute(f"UPDATE {schema}.ledger SET last_seq = NULL, record_hash = %s WHERE run_id = 'victim' AND seq = %s",
                  [json.loads(lines[0])["record_hash"], first])
    admin.execute(f"INSERT INTO {schema}.ledger (run_id, seq, last_seq, line, record_hash, status) "
                  "VALUES ('victim', %s, %s, %s, %s, %s)", [first + 2, last + 1, b"\n".join(lines[1:]), h, s])


def _row_key_moved(admin: Any, schema: str) -> None:
    """A row's first seq (its key) moved by one: its records no longer sit at their own seqs."""
    first = _multi(admin, schema)[-1][0]
    admin.execute(f"UPDATE {schema}.ledger SET seq = seq - 1 WHERE run_id = 'victim' AND seq = %s", [first])


def _columns(**values: Any) -> Callable[[Any, str], None]:
    def attack(admin: Any, schema: str) -> None:
        first = _multi(admin, schema)[-1][0]
        sets = ", ".join(f"{k} = %s" for k in values)
        admin.execute(f"UPDATE {schema}.ledger SET {sets} WHERE run_id = 'victim' AND seq = %s", [*values.values(), first])
    return attack


def _head_columns(**values: Any) -> Callable[[Any, str], None]:
    def attack(admin: Any, schema: str) -> None:
        sets = ", ".join(f"{k} = %s" for k in values)
        admin.execute(f"UPDATE {schema}.ledger SET {sets} WHERE run_id = 'victim' AND seq = "
                      f"(SELECT max(seq) FROM {schema}.ledger WHERE run_id = 'victim')", [*values.values()])
    return attack


# Attacks that change what the ledger says: verify reports, the copy leaves the run out.
CHANGING: dict[str, Callable[[Any, str], None]] = {
    "a record inside a row edited": _edit_inside,
    "a record inside a row edited and rehashed": _edit_inside_rehashed,
    "two rows swapped (keys and columns)": _swap_rows,
    "two rows' lines swapped": _swap_lines,
    "a record inside a row dropped": _record_dropped_inside,
    "a record inside a row doubled": _record_doubled_inside,
    "a row split with its second part keyed too far": _split_shifted,
    "a row's key moved back by one": _row_key_moved,
}

# Attacks on the columns beside the lines: the lines still hold the whole ledger.
COLUMNS: dict[str, Callable[[Any, str], None]] = {
    "last_seq raised": _columns(last_seq=10_000),
    "last_seq cleared": _columns(last_seq=None),
    "record_hash forged": _columns(record_hash="ab" * 32),
    "status set to completed": _columns(status="completed"),
    "the head row's last_seq raised": _head_columns(last_seq=10_000),
    "the head row's record_hash forged": _head_columns(record_hash="ab" * 32),
}


def _verify(store: Any) -> set[str]:
    from abstractruntime.storage.postgres.verify import verify_run

    return {p.type for p in verify_run(store, "victim").problems}


def _copy_out(store: Any, tmp_path: Path) -> list[str]:
    folder = FileStore(tmp_path / "out", durability="none")
    try:
        try:
            return list(copy_store(store, folder).copied)
        except AbstractRuntimeError as exc:
            return list((exc.details or {}).get("copied", []))
    finally:
        folder.close()


@pytest.mark.parametrize("name", sorted(CHANGING))
def test_a_row_edited_out_of_shape_is_reported_and_never_copied(open_pg: Callable[..., Any], admin: Any,
                                                                 pg_schema: str, tmp_path: Path, name: str) -> None:
    victim = _victim_in_multi_record_rows(open_pg, admin, pg_schema, tmp_path)
    CHANGING[name](admin, pg_schema)
    store = open_pg()
    problems = _verify(store)
    assert problems, "verify accepted the edited rows"
    if name in ("a row split with its second part keyed too far", "a row's key moved back by one"):
        assert "ledger_row_mismatch" in problems  # the lines still chain: only the rows are out of shape
    assert "victim" not in _copy_out(store, tmp_path)
    with pytest.raises(VerificationFailedError):
        export_archive(store, tmp_path / "runs.tar.gz", runs=["victim"])
    assert not (tmp_path / "runs.tar.gz").exists()
    outcome = probe(open_pg(), victim)
    # The edit is before the run's checkpoint, which the writer proves and continues from: the run
    # pays once, or the step is refused.
    assert paid_once(victim, outcome) or (not outcome.ran and victim.bank.payments == [])


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_columns_that_disagree_with_the_lines_make_nothing_happen_twice(open_pg: Callable[..., Any], admin: Any,
                                                                        pg_schema: str, tmp_path: Path,
                                                                        name: str) -> None:
    victim = _victim_in_multi_record_rows(open_pg, admin, pg_schema, tmp_path)
    COLUMNS[name](admin, pg_schema)
    before = [r[2] for r in _rows(admin, pg_schema)]
    outcome = probe(open_pg(), victim)
    after = [r[2] for r in _rows(admin, pg_schema)]
    assert after[:len(before)] == before, "a row's lines were changed"
    assert paid_once(victim, outcome) or (not outcome.ran and victim.bank.payments == [] and after == before), \
        (outcome, victim.bank.payments)
    # Whatever ran, the lines are one chain and replay: verify finds nothing in them.
    store = open_pg()
    problems = _verify(store)
    assert not {"record_hash_mismatch", "prev_hash_mismatch", "seq_gap"} & problems, problems


def test_the_same_lines_cut_into_other_rows_change_nothing(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                           tmp_path: Path) -> None:
    """Rows merged and split at other places, keys and columns right: the same ledger."""
    victim = _victim_in_multi_record_rows(open_pg, admin, pg_schema, tmp_path)
    rows = _rows(admin, pg_schema)
    lines = [line for r in rows for line in r[2].split(b"\n")]
    docs = [json.loads(line) for line in lines]
    admin.execute(f"DELETE FROM {pg_schema}.ledger WHERE run_id = 'victim'")
    for start in range(0, len(lines), 5):  # rows of five records
        part = docs[start:start + 5]
        admin.execute(f"INSERT INTO {pg_schema}.ledger (run_id, seq, last_seq, line, record_hash, status) "
                      "VALUES ('victim', %s, %s, %s, %s, %s)",
                      [part[0]["seq"], part[-1]["seq"] if len(part) > 1 else None,
                       b"\n".join(lines[start:start + 5]), part[-1]["record_hash"], part[0].get("status")])
    store = open_pg()
    assert _verify(store) == set()
    assert _copy_out(store, tmp_path) == ["victim"]
    assert paid_once(victim, probe(open_pg(), victim))


_WRITER = r"""
import sys
from abstractruntime import StepPlan, WorkflowSpec
from abstractruntime.storage.postgres.store import PostgresStore

def spin(run, ctx):
    run.vars["i"] = run.vars.get("i", 0) + 1
    run.vars.setdefault("log", []).append({"i": run.vars["i"], "text": "x" * 300})
    return StepPlan("spin", next_node="spin") if run.vars["i"] < 100000 else StepPlan("spin", complete_output={})

wf = WorkflowSpec("spinner", "spin", {"spin": spin})
store = PostgresStore(sys.argv[1], schema=sys.argv[2])
rt = store.runtime()
if not store.ledger.head("spun").seq:
    rt.start(workflow=wf, run_id="spun", vars={})
print("ready", flush=True)
while True:
    rt.tick(workflow=wf, run_id="spun", max_steps=500)
"""


def test_a_writer_killed_with_9_mid_append_leaves_rows_that_verify(open_pg: Callable[..., Any], postgres_url: str,
                                                                   pg_schema: str, admin: Any) -> None:
    """Killed at random moments while it appends rows of many records: each time, every row is
    whole (or absent), the ledger verifies, and the next writer goes on from it."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from abstractruntime.storage.postgres.verify import verify_run

    rnd = random.Random(7)
    open_pg().close()  # the schema exists before the writers race to create it
    heads = []
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, postgres_url, pg_schema],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rnd.uniform(0.2, 0.8))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        store = open_pg()
        assert store.ledger.row_problems("spun") == []
        report = verify_run(store, "spun")
        assert report.ok, [p.message for p in report.problems]
        heads.append(store.ledger.head("spun").seq)
    assert heads == sorted(heads) and heads[-1] > heads[0], heads
    multi = admin.execute(f"SELECT count(*) FROM {pg_schema}.ledger WHERE run_id = 'spun' AND last_seq IS NOT NULL")
    assert multi.fetchone()[0] > 0
