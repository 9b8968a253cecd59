"""The append's statement marks the run's row and hands back the row's token before and after
the mark, so the store that last wrote the row keeps knowing it (the runtime keeps a run's state
warm on it). A change someone else commits to the row while the append waits for the row's lock
must not be taken for this store's own: the token it keeps must differ from the row's."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from abstractruntime.core.chain import seal_record_line
from abstractruntime.core.models import RunState, StepRecord
from abstractruntime.core.ports import LedgerHead, StoredCheckpoint


def _sealed(run_id: str, head: LedgerHead, count: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    docs, lines = [], []
    for i in range(count):
        rec = StepRecord.start(run=run, node_id=f"n{i}", effect=None)
        rec.finish_success({"i": i})
        doc, line = seal_record_line(rec, head=head)
        head = LedgerHead(doc["seq"], doc["record_hash"])
        docs.append(doc)
        lines.append(line)
    return docs, lines


def test_a_row_edited_while_the_append_waits_for_it_is_not_taken_for_the_stores_own(
        open_pg: Callable[..., Any], admin: Any, postgres_url: str, pg_schema: str) -> None:
    import psycopg

    store = open_pg()
    run = RunState.new(workflow_id="wf", entry_node="a", run_id="r1")
    document = {"run": run.to_dict(), "kernel": {"effects": 0, "pending": None, "metadata": {}, "workflow": None,
                                                 "origin": None}}
    store.runs.save_checkpoint(StoredCheckpoint(state=document, ledger=LedgerHead()))
    assert store.runs.written_token("r1") == store.runs.checkpoint_token("r1")
    docs, lines = _sealed("r1", LedgerHead(), 1)

    # Someone else changes the row (not its version) and holds it, uncommitted, while the
    # append's statement runs: the statement waits for the row, then marks it.
    editor = psycopg.connect(postgres_url)
    editor.execute(f'UPDATE "{pg_schema}".runs SET status = %s WHERE run_id = %s', ["cancelled", "r1"])
    done: list[Any] = []
    appender = threading.Thread(target=lambda: done.append(
        store.ledger.append_lines("r1", docs, lines, expect=LedgerHead())))
    appender.start()
    deadline = time.monotonic() + 30
    while not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0]:
        assert time.monotonic() < deadline, "the append never waited for the row"
        time.sleep(0.01)
    editor.commit()
    editor.close()
    appender.join(30)
    assert done and done[0].seq == 1
    row = admin.execute(f'SELECT ledger_ahead FROM "{pg_schema}".runs WHERE run_id = %s', ["r1"]).fetchone()
    assert row[0] is True  # the mark was made, on the edited row
    assert store.runs.load("r1") is not None
    assert store.runs.written_token("r1") != store.runs.checkpoint_token("r1"), \
        "another writer's change to the row was taken for this store's own"
