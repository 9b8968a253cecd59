"""`emit --id` on PostgreSQL: the `events` table delivers an id at most once, across processes and
after a kill; `--keep` events go to the first run that waits, through a worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

CLI = str(Path(sys.executable).parent / "abstractruntime")

TWICE = textwrap.dedent('''
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def wait(name, then):
        return lambda run, ctx: StepPlan(name, next_node=then, effect=Effect(
            EffectType.WAIT_EVENT, {"wait_key": "go"}, name))

    workflow = WorkflowSpec("twice", "first", {"first": wait("first", "second"), "second": wait("second", "done"),
                                               "done": lambda run, ctx: StepPlan("done", complete_output={})})
''')

KILLED_EMIT = textwrap.dedent('''
    import os, sys
    from abstractruntime import open_store
    from abstractruntime.scheduler.events import emit_event

    store = open_store(sys.argv[1], create=False)

    def resolve(run):
        os._exit(9)  # killed after the event is recorded, before any run is resumed

    emit_event(store.runs, "go", {}, resolve=resolve, event_id=sys.argv[2], events=store.events)
''')


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    return subprocess.run([CLI, "--store", url, "--no-input", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=env)


def _start(url: str, tmp_path: Path, *run_ids: str) -> None:
    (tmp_path / "wf.py").write_text(TWICE)
    for run_id in run_ids:
        assert _cli(url, "run", str(tmp_path / "wf.py"), "--run-id", run_id).returncode == 5


def _deliveries(url: str, run_id: str) -> list[tuple[str, Any]]:
    ledger = json.loads(_cli(url, "ledger", "show", run_id, "--json").stdout)
    return [(r["result"]["wait_id"], r["result"].get("event_id")) for r in ledger if r["kind"] == "resume"]


def test_concurrent_emits_of_one_id_deliver_it_once_on_postgresql(database_url: str, tmp_path: Path) -> None:
    url = database_url
    runs = [f"r{k}" for k in range(6)]
    _start(url, tmp_path, *runs)
    procs = [subprocess.Popen([CLI, "--store", url, "emit", "go", "--id", "race", "--hand-off"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                              env={k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"})
             for _ in range(4)]
    outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [code for _, _, code in outcomes] == [0, 0, 0, 0], outcomes
    assert sum("already delivered" in err or "being delivered" in err for _, err, _ in outcomes) == 3, outcomes
    assert _cli(url, "worker", "--once").returncode == 0
    again = _cli(url, "emit", "go", "--id", "race")
    assert again.returncode == 0 and "already delivered" in again.stderr
    for run_id in runs:
        assert _deliveries(url, run_id) == [("w1", "race")]
        run = json.loads(_cli(url, "runs", "show", run_id, "--json").stdout)["run"]
        assert run["waiting"]["wait_id"] == "w2"


def test_an_emit_killed_after_recording_the_id_is_finished_once(database_url: str, tmp_path: Path) -> None:
    url = database_url
    _start(url, tmp_path, "a", "b")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_EMIT)
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    killed = subprocess.run([sys.executable, str(script), url, "e1"], capture_output=True, text=True, timeout=120,
                            env=env)
    assert killed.returncode == 9, killed.stderr
    assert _deliveries(url, "a") == [] and _deliveries(url, "b") == []
    assert _cli(url, "emit", "go", "--id", "e1").returncode == 0
    assert "already delivered" in _cli(url, "emit", "go", "--id", "e1").stderr
    for run_id in ("a", "b"):
        assert _deliveries(url, run_id) == [("w1", "e1")]


def test_a_kept_event_goes_to_the_first_run_through_a_worker(database_url: str, tmp_path: Path,
                                                             admin: Any) -> None:
    url = database_url
    (tmp_path / "wf.py").write_text(TWICE)
    from abstractruntime import open_store

    open_store(url).close()  # an empty store: emit never creates one
    kept = _cli(url, "emit", "go", "--id", "k", "--keep", "10m", "--payload", '{"n": 1}')
    assert kept.returncode == 0 and "kept until" in kept.stderr, kept
    _start(url, tmp_path, "first")
    _start(url, tmp_path, "second")
    assert _cli(url, "worker", "--once").returncode == 0
    assert _deliveries(url, "first") == [("w1", "k")] and _deliveries(url, "second") == []
    assert json.loads(_cli(url, "runs", "show", "first", "--json").stdout)["run"]["waiting"]["wait_id"] == "w2"


def test_the_events_table_holds_one_row_per_id(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    from abstractruntime.storage.event_ids import DELIVERED, OPEN, EventRecord, payload_digest

    store = open_pg()
    record = EventRecord(event_id="e", event_key="go", payload_sha256=payload_digest({}),
                         targets=[{"run_id": "r", "wait_id": "w1"}])
    with store.events.lock("e") as held:
        assert held
        with open_pg().events.lock("e") as other:
            assert other is False
        store.events.create(record)
        with pytest.raises(Exception, match="already recorded"):
            store.events.create(record)
    assert open_pg().events.get("e").state == OPEN
    with store.events.lock("e"):
        store.events.finish("e", DELIVERED)
    assert open_pg().events.get("e").state == DELIVERED
    rows = admin.execute(f'SELECT event_id, state FROM "{pg_schema}".events').fetchall()
    assert rows == [("e", "delivered")]


def _copy(source: str, target: str, *runs: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    return subprocess.run([CLI, "--store", source, "store", "copy", *runs, "--to", target, "--json"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)


def _records(store: Any) -> list[dict[str, Any]]:
    from abstractruntime.core.clock import parse_iso

    out = []
    for record in store.events.records():
        doc = record.to_dict()
        for key in ("created_at", "keep_until", "finished_at"):
            doc[key] = parse_iso(doc[key]) if doc[key] else None
        out.append(doc)
    return out


def test_store_copy_carries_event_ids_both_ways(database_url: str, tmp_path: Path) -> None:
    from abstractruntime.storage.postgres.store import PostgresStore
    from abstractruntime.storage.store import open_store

    folder, back = str(tmp_path / "folder"), str(tmp_path / "back")
    _start(folder, tmp_path, "a")
    assert _cli(folder, "emit", "go", "--id", "pay-1", "--payload", '{"n": 1}').returncode == 0
    kept = _cli(folder, "emit", "other", "--id", "later-1", "--keep", "1h", "--payload", '{"n": 2}')
    assert kept.returncode == 0 and "kept until" in kept.stderr
    copied = _copy(folder, database_url)
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["events"] == 2
    pg = PostgresStore(database_url)
    try:
        assert _records(pg) == _records(open_store(folder, create=False))
        assert pg.events.get("later-1").payload == {"n": 2}  # still kept, with its payload
        # A retried emit against the destination is still a no-op: run a waits on w2, untouched.
        again = _cli(database_url, "emit", "go", "--id", "pay-1", "--payload", '{"n": 1}')
        assert again.returncode == 0 and "already delivered" in again.stderr, again.stderr
        assert _deliveries(database_url, "a") == [("w1", "pay-1")]
        # Back to a folder, after a delivery made in PostgreSQL: the same records, both ways.
        assert _cli(database_url, "emit", "go", "--id", "pay-2", "--payload", '{"n": 3}').returncode == 0
        assert _copy(database_url, back).returncode == 0
        assert _records(open_store(back, create=False)) == _records(pg)
        assert [r["state"] for r in _records(pg)] == ["delivered", "open", "delivered"]
        # Copying again changes nothing.
        again_copy = _copy(database_url, back)
        assert again_copy.returncode == 0 and json.loads(again_copy.stdout)["events"] == 0
        again = _cli(back, "emit", "go", "--id", "pay-2", "--payload", '{"n": 3}')
        assert again.returncode == 0 and "already delivered" in again.stderr
    finally:
        pg.close()
