"""What if someone edits a schedule: its log names another workflow id or hash, a path, or a tick
decision moves under another tick's name. Code is located by the operator's registry, never by
the schedule: refused, or the registry decides; no path is ever imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from abstractruntime.core.clock import FixedClock
from abstractruntime.loader import file_sha256
from abstractruntime.registry import WorkflowFileRegistry
from abstractruntime.scheduler.schedules import Schedules
from abstractruntime.storage.store import FileStore
from tests.schedules.schedule_support import QUICK, Worker, scheduled_runs, write_workflow

OTHER = '''from abstractruntime import StepPlan, WorkflowSpec

workflow = WorkflowSpec("other", "end", {"end": lambda run, ctx: StepPlan("end", complete_output={"by": "other"})})
'''


def _evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "imported.txt"
    evil = tmp_path / "outside" / "evil.py"
    evil.parent.mkdir()
    evil.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n" + QUICK, encoding="utf-8")
    return evil, marker


def _setup(tmp_path: Path) -> tuple[FixedClock, Schedules, Worker, Any, str]:
    clock = FixedClock("2030-01-07T08:59:00+00:00")
    quick = write_workflow(tmp_path / "flows", "quick", QUICK)
    write_workflow(tmp_path / "flows", "other", OTHER)
    store = FileStore(tmp_path / "store", durability="none")
    worker = Worker(store, clock, WorkflowFileRegistry([str(tmp_path / "flows")]), "w1")
    book = Schedules(store.schedules, clock=clock)
    book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=file_sha256(quick))
    return clock, book, worker, store, file_sha256(quick)


def _edit_added(store: Any, **changes: Any) -> None:
    log = store.root / "schedules" / "hourly" / "log.jsonl"
    record = json.loads(log.read_text(encoding="utf-8").splitlines()[0])
    record["schedule"].update(changes)
    log.write_text(json.dumps(record) + "\n", encoding="utf-8")


def test_a_hash_edited_to_code_nobody_registered_starts_nothing(tmp_path: Path) -> None:
    evil, marker = _evil(tmp_path)
    clock, book, worker, store, _ = _setup(tmp_path)
    _edit_added(store, sha256=file_sha256(evil), path=str(evil))
    clock.set("2030-01-07T09:00:00+00:00")
    worker.work_pass()
    assert scheduled_runs(store, "hourly") == {}
    assert book.decisions("hourly") == []  # nothing decided: the tick stays due
    assert len(worker.errors) == 1 and "schedule hourly" in worker.errors[0] and "changed since" in worker.errors[0]
    assert not marker.exists()  # the path in the record was never imported
    worker.work_pass()
    assert len(worker.errors) == 1  # said once, not every pass
    assert scheduled_runs(store, "hourly") == {}


def test_a_path_added_to_the_record_is_ignored(tmp_path: Path) -> None:
    evil, marker = _evil(tmp_path)
    clock, book, worker, store, _ = _setup(tmp_path)
    _edit_added(store, path=str(evil), file=str(evil))
    clock.set("2030-01-07T09:00:00+00:00")
    worker.work_pass()
    runs = scheduled_runs(store, "hourly")
    assert list(runs) == ["hourly.20300107T090000Z"] and runs["hourly.20300107T090000Z"].run.workflow_id == "quick"
    assert not marker.exists()


def test_an_id_edited_to_another_registered_workflow_is_the_registry_s_choice(tmp_path: Path) -> None:
    clock, book, worker, store, _ = _setup(tmp_path)
    _edit_added(store, workflow_id="other", sha256=file_sha256(tmp_path / "flows" / "other.py"))
    clock.set("2030-01-07T09:00:00+00:00")
    worker.work_pass()
    runs = scheduled_runs(store, "hourly")
    # Only code the operator registered can run: here the registered file of that id and hash.
    assert runs["hourly.20300107T090000Z"].run.output == {"by": "other"}


def test_an_id_edited_without_its_hash_is_refused(tmp_path: Path) -> None:
    clock, book, worker, store, _ = _setup(tmp_path)
    _edit_added(store, workflow_id="other")  # other's id, quick's hash
    clock.set("2030-01-07T09:00:00+00:00")
    worker.work_pass()
    assert scheduled_runs(store, "hourly") == {} and "changed since" in worker.errors[0]


def test_a_decision_moved_under_another_tick_is_corrupt(tmp_path: Path) -> None:
    clock, book, worker, store, _ = _setup(tmp_path)
    clock.set("2030-01-07T09:00:00+00:00")
    worker.work_pass()
    ticks = store.root / "schedules" / "hourly" / "ticks" / "20300107"
    (ticks / "20300107T100000Z.json").write_bytes((ticks / "20300107T090000Z.json").read_bytes())
    clock.set("2030-01-07T10:00:00+00:00")
    worker.work_pass()
    assert len(scheduled_runs(store, "hourly")) == 1
    assert "names tick" in worker.errors[-1] and "20300107T100000Z.json" in worker.errors[-1]


def test_a_torn_last_line_of_the_log_is_ignored_and_sealed(tmp_path: Path) -> None:
    clock, book, worker, store, _ = _setup(tmp_path)
    log = store.root / "schedules" / "hourly" / "log.jsonl"
    with log.open("ab") as handle:
        handle.write(b'{"format": 1, "event": "pau')  # a writer killed mid-append
    assert not book.get("hourly").paused
    book.pause("hourly")
    assert book.get("hourly").paused
    assert [r["event"] for r in store.schedules.records("hourly")] == ["added", "paused"]


def test_a_row_edited_in_postgres_is_refused_or_the_registry_s_choice(tmp_path: Path, postgres_url: str) -> None:
    import psycopg

    from tests.schedules.schedule_support import Opener

    opener = Opener("postgres", tmp_path, postgres_url)
    try:
        evil, marker = _evil(tmp_path)
        clock = FixedClock("2030-01-07T08:59:00+00:00")
        quick = write_workflow(tmp_path / "flows", "quick", QUICK)
        worker = Worker(opener(), clock, WorkflowFileRegistry([str(tmp_path / "flows")]), "w1")
        book = Schedules(opener().schedules, clock=clock)
        book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=file_sha256(quick))
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            (raw,) = admin.execute(f'SELECT record FROM "{opener.schema}".schedule_log WHERE seq = 1').fetchone()
            record = json.loads(bytes(raw))
            record["schedule"].update(sha256=file_sha256(evil), path=str(evil))
            admin.execute(f'UPDATE "{opener.schema}".schedule_log SET record = %s WHERE seq = 1',
                          [json.dumps(record).encode()])
        clock.set("2030-01-07T09:00:00+00:00")
        worker.work_pass()
        assert scheduled_runs(worker.store, "hourly") == {} and book.decisions("hourly") == []
        assert "changed since" in worker.errors[0] and not marker.exists()
    finally:
        opener.close()


def test_temporary_decision_files_of_killed_workers_are_swept(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from abstractruntime.storage.schedule_files import FileScheduleStore

    book = FileScheduleStore(tmp_path / "schedules", durability="none")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    ticks = tmp_path / "schedules" / "daily" / "ticks"
    yesterday, today = ticks / "20261205", ticks / "20261206"
    for folder in (yesterday, today):
        folder.mkdir(parents=True)
    left = [yesterday / f".20261205T090000Z.{pid}.1.tmp", today / f".20261206T080000Z.{pid}.2.tmp"]
    mine = today / f".20261206T070000Z.{os.getpid()}.3.tmp"  # a live writer's: kept
    for path in [*left, mine]:
        path.write_bytes(b"{}")
    _, won = book.decide("daily", "20261206T090000Z", {"tick": "2026-12-06T09:00:00+00:00", "action": "started"})
    assert won
    assert not any(p.exists() for p in left) and mine.exists()
    assert (today / "20261206T090000Z.json").exists()
