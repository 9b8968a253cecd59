"""The store-level record of delivered event ids (folder and memory), and emit_event's use of it."""

from __future__ import annotations

import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    FixedClock,
    InMemoryLedgerStore,
    InMemoryRunStore,
    Runtime,
    StepPlan,
    WorkflowSpec,
)
from abstractruntime.core.errors import CorruptRecordError, InvalidInputError, NotFoundError, StorageError
from abstractruntime.scheduler import Scheduler, WorkflowRegistry
from abstractruntime.scheduler.events import deliver_kept_events, emit_event, parse_duration
from abstractruntime.storage.event_files import FileEventLog
from abstractruntime.storage.event_ids import (
    DELIVERED,
    EXPIRED,
    OPEN,
    EventRecord,
    InMemoryEventLog,
    payload_digest,
)

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "files"])
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    if request.param == "memory":
        log = InMemoryEventLog()
        return lambda: log
    return lambda: FileEventLog(tmp_path / "events")


def _record(event_id: str = "e1", **changes: Any) -> EventRecord:
    base: dict[str, Any] = {"event_id": event_id, "event_key": "go", "payload_sha256": payload_digest({"n": 1}),
                            "created_at": T0.isoformat(), "targets": [{"run_id": "r1", "wait_id": "w1"}]}
    return EventRecord(**{**base, **changes})


def test_an_event_is_recorded_once_and_closes(make_log: Callable[[], Any]) -> None:
    log = make_log()
    assert log.get("e1") is None
    with log.lock("e1") as held:
        assert held
        log.create(_record())
        with pytest.raises(StorageError, match="already recorded"):
            log.create(_record())
    again = make_log().get("e1")
    assert again.state == OPEN and again.targets == [{"run_id": "r1", "wait_id": "w1"}] and again.payload is None
    with log.lock("e1"):
        log.finish("e1", DELIVERED)
    assert make_log().get("e1").state == DELIVERED


def test_a_kept_event_keeps_its_payload_until_it_closes(make_log: Callable[[], Any]) -> None:
    log = make_log()
    kept = _record("k", targets=[], keep_until=(T0 + timedelta(minutes=10)).isoformat(), payload={"n": 1})
    with log.lock("k"):
        log.create(kept)
        log.add_target("k", {"run_id": "r2", "wait_id": "w3"})
    listed = make_log().open_kept()
    assert [(r.event_id, r.payload, r.targets) for r in listed] == [("k", {"n": 1}, [{"run_id": "r2", "wait_id": "w3"}])]
    with log.lock("k"):
        log.finish("k", EXPIRED)
    assert make_log().open_kept() == [] and make_log().get("k").payload is None


def test_the_lock_is_exclusive_and_waits(make_log: Callable[[], Any]) -> None:
    log = make_log()
    with log.lock("e1") as first:
        assert first
        results: list[bool] = []

        def try_it() -> None:
            with make_log().lock("e1", wait=0.0) as held:
                results.append(held)

        other = threading.Thread(target=try_it)
        other.start()
        other.join()
        assert results == [False]
    with make_log().lock("e1", wait=0.5) as later:
        assert later


def test_event_files_are_private_and_a_torn_line_is_cut(tmp_path: Path) -> None:
    log = FileEventLog(tmp_path / "events")
    with log.lock("e1"):
        log.create(_record())
    path = next((tmp_path / "events").glob("*.jsonl"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "events").stat().st_mode) == 0o700
    with path.open("ab") as handle:
        handle.write(b'{"state": "deliv')  # a writer killed mid-line
    assert log.get("e1").state == OPEN
    with log.lock("e1"):
        log.finish("e1", DELIVERED)
    assert log.get("e1").state == DELIVERED and path.read_bytes().count(b"\n") == 2


def test_a_damaged_or_misplaced_event_file_is_corruption(tmp_path: Path) -> None:
    log = FileEventLog(tmp_path / "events")
    with log.lock("e1"):
        log.create(_record())
    with log.lock("e2"):
        log.create(_record("e2"))
    one, two = (next(p for p in (tmp_path / "events").glob("*.jsonl") if p.read_text().find(f'"{i}"') > 0)
                for i in ("e1", "e2"))
    one.write_bytes(two.read_bytes())  # e2's record under e1's name
    with pytest.raises(CorruptRecordError):
        log.get("e1")
    two.write_bytes(b"not json\n" + two.read_bytes())
    with pytest.raises(CorruptRecordError, match=":1:"):
        log.get("e2")


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2) and parse_duration(5) == timedelta(seconds=5)
    for bad in ("soon", "0s", "-1m", "", "10"):
        with pytest.raises(InvalidInputError):
            parse_duration(bad)


def _waiting_runs(count: int, clock: FixedClock | None = None) -> tuple[Runtime, WorkflowSpec, list[str]]:
    wf = WorkflowSpec("once", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="done", effect=Effect(
            EffectType.WAIT_EVENT, {"wait_key": "go"}, "got")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"got": run.vars["got"]})})
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(),
                      clock=clock or FixedClock(T0))
    ids = []
    for _ in range(count):
        ids.append(runtime.start(workflow=wf))
        runtime.tick(workflow=wf, run_id=ids[-1])
    return runtime, wf, ids


def test_emit_event_with_an_id_delivers_once_and_records_the_id_in_the_resume() -> None:
    runtime, wf, ids = _waiting_runs(2)
    events = InMemoryEventLog()
    first = emit_event(runtime.run_store, "go", {"n": 1}, resolve=lambda run: (wf, runtime), event_id="e",
                       events=events)
    assert first.outcome == "delivered" and sorted(s.run_id for s in first.states) == sorted(ids)
    resume = [r for r in runtime.get_ledger(ids[0]) if r["kind"] == "resume"]
    assert resume[0]["result"]["event_id"] == "e" and resume[0]["result"]["payload"] == {"n": 1}
    late = runtime.start(workflow=wf)
    runtime.tick(workflow=wf, run_id=late)
    again = emit_event(runtime.run_store, "go", {"n": 1}, resolve=lambda run: (wf, runtime), event_id="e",
                       events=events)
    assert again.outcome == "already_delivered" and again.states == []
    assert runtime.get_state(late).status.value == "waiting"
    with pytest.raises(InvalidInputError, match="events=store.events"):
        emit_event(runtime.run_store, "go", {}, resolve=lambda run: (wf, runtime), event_id="f")
    with pytest.raises(NotFoundError):
        emit_event(runtime.run_store, "nobody", {}, resolve=lambda run: (wf, runtime), event_id="g", events=events)
    assert events.get("g") is None  # nothing recorded when nothing was delivered or kept


def test_an_open_event_retried_with_another_payload_is_refused() -> None:
    runtime, wf, ids = _waiting_runs(1)
    events = InMemoryEventLog()
    with events.lock("e"):
        events.create(_record("e", targets=[{"run_id": ids[0], "wait_id": "w1"}]))
    with pytest.raises(InvalidInputError, match="another key or payload"):
        emit_event(runtime.run_store, "go", {"n": 2}, resolve=lambda run: (wf, runtime), event_id="e", events=events)
    done = emit_event(runtime.run_store, "go", {"n": 1}, resolve=lambda run: (wf, runtime), event_id="e",
                      events=events)
    assert [s.run_id for s in done.states] == ids and events.get("e").state == DELIVERED


def test_kept_events_go_to_the_first_waiting_run_through_a_worker_pass_and_expire() -> None:
    clock = FixedClock(T0)
    runtime, wf, _ = _waiting_runs(0, clock)
    events = InMemoryEventLog()
    resolve = lambda run: (wf, runtime)  # noqa: E731
    kept = emit_event(runtime.run_store, "go", {"n": 1}, resolve=resolve, event_id="k", events=events, keep="10m",
                      now=T0)
    assert kept.outcome == "kept" and kept.kept_until == (T0 + timedelta(minutes=10)).isoformat()
    emit_event(runtime.run_store, "go", {"n": 2}, resolve=resolve, event_id="old", events=events, keep="1m",
               now=T0 - timedelta(minutes=5))
    assert deliver_kept_events(events, runtime.run_store, resolve=resolve, now=T0).states == []
    assert events.get("old").state == EXPIRED
    registry = WorkflowRegistry()
    registry.register(wf)
    first = runtime.start(workflow=wf)
    runtime.tick(workflow=wf, run_id=first)
    clock.advance(seconds=1)  # the second run starts waiting later
    second = runtime.start(workflow=wf)
    runtime.tick(workflow=wf, run_id=second)
    advanced = Scheduler(runtime=runtime, registry=registry, events=events).work_pass()
    assert [s.run_id for s in advanced] == [first]
    assert runtime.get_state(first).output == {"got": {"n": 1}}
    assert runtime.get_state(second).status.value == "waiting" and events.get("k").state == DELIVERED


def test_copy_event_writes_whole_records_once_and_refuses_a_different_one(make_log: Callable[[], Any]) -> None:
    from abstractruntime.storage.event_ids import copy_event

    log = make_log()
    closed = _record("c1", state=DELIVERED, finished_at=(T0 + timedelta(seconds=5)).isoformat())
    kept = _record("k1", keep_until=(T0 + timedelta(hours=1)).isoformat(), payload={"n": 1}, targets=[])
    assert [copy_event(r, log) for r in (closed, kept)] == ["copied", "copied"]
    assert [copy_event(r, log) for r in (closed, kept)] == ["already", "already"]
    assert log.get("c1").state == DELIVERED and log.get("c1").finished_at == closed.finished_at
    assert log.get("k1").payload == {"n": 1} and [r.event_id for r in log.open_kept()] == ["k1"]
    assert [r.event_id for r in log.records()] == ["c1", "k1"]
    other = _record("c1", event_key="elsewhere", state=DELIVERED, finished_at=closed.finished_at)
    assert copy_event(other, log) == "different" and log.get("c1").event_key == "go"


def test_a_copied_closed_event_is_one_line_and_a_torn_copy_leaves_nothing(tmp_path: Path) -> None:
    from abstractruntime.storage.event_ids import copy_event

    log = FileEventLog(tmp_path / "events")
    closed = _record("c1", state=DELIVERED, finished_at=T0.isoformat(), keep_until=T0.isoformat())
    with log.lock("c1"):
        path = log._path("c1")
        path.write_bytes(b'{"format": 1, "event_id": "c1", "ev')  # a copy killed mid-line
    assert log.get("c1") is None and log.records() == []
    assert copy_event(closed, log) == "copied"
    assert path.read_bytes().count(b"\n") == 1  # the torn line was cut; the event is one whole line
    assert log.get("c1").state == DELIVERED and log.open_kept() == []
