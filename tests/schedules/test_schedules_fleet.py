"""Two workers on one fake clock start exactly one run per tick, on both store kinds, across the
daylight-saving changes of Europe/Paris; pause, resume and remove hold on both."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

from abstractruntime.core.clock import FixedClock, parse_iso
from abstractruntime.core.errors import ScheduleExistsError, ScheduleNotFoundError
from abstractruntime.registry import WorkflowFileRegistry
from abstractruntime.scheduler.schedules import Schedules
from tests.schedules.schedule_support import QUICK, Opener, Worker, passes_together, scheduled_runs, write_workflow


@pytest.fixture(params=["folder", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    made = Opener(request.param, tmp_path, url)
    yield made
    made.close()


def _setup(opener: Opener, tmp_path: Path, start: str) -> tuple[FixedClock, Schedules, list[Worker], Any]:
    from abstractruntime.loader import file_sha256

    clock = FixedClock(start)
    path = write_workflow(tmp_path / "flows", "quick", QUICK)
    registry = WorkflowFileRegistry([str(tmp_path / "flows")])
    admin = opener()
    book = Schedules(admin.schedules, clock=clock)
    workers = [Worker(opener(), clock, registry, f"w{i}") for i in (1, 2)]
    return clock, book, workers, file_sha256(path)


def _walk(clock: FixedClock, workers: list[Worker], until: str, step_minutes: int = 30) -> None:
    end = parse_iso(until)
    while clock() < end:
        clock.advance(seconds=step_minutes * 60)
        passes_together(workers)


def test_two_workers_start_one_run_per_tick_across_both_dst_changes(opener: Opener, tmp_path: Path) -> None:
    clock, book, workers, sha = _setup(opener, tmp_path, "2030-03-29T23:00:00+00:00")
    book.add("nightly", cron="30 2 * * *", tz="Europe/Paris", workflow_id="quick", sha256=sha,
             vars={"team": "ops"}, catch_up="skip", grace_s=3600)
    # Spring forward on 2030-03-31: 02:30 does not exist in Paris that night.
    _walk(clock, workers, "2030-04-01T03:00:00+00:00")
    # Nothing between the two changes: paused, then resumed just before the autumn one.
    book.pause("nightly")
    clock.set("2030-10-25T22:00:00+00:00")
    passes_together(workers)
    assert book.decisions("nightly", limit=100)[0].tick == "2030-04-01T00:30:00+00:00"
    book.resume("nightly")
    # Fall back on 2030-10-27: 02:30 happens twice in Paris that night.
    _walk(clock, workers, "2030-10-28T03:00:00+00:00")

    runs = scheduled_runs(workers[0].store, "nightly")
    ticks = sorted(cp.metadata["schedule"]["tick"] for cp in runs.values())
    assert ticks == [
        "2030-03-30T01:30:00+00:00",  # 02:30 CET
        "2030-03-31T01:30:00+00:00",  # 02:30 does not exist: 03:30 CEST, once
        "2030-04-01T00:30:00+00:00",  # 02:30 CEST
        "2030-10-26T00:30:00+00:00",  # 02:30 CEST
        "2030-10-27T00:30:00+00:00",  # 02:30 happens twice: the first (CEST) only
        "2030-10-28T01:30:00+00:00",  # 02:30 CET
    ]
    assert sorted(runs) == ["nightly.20300330T013000Z", "nightly.20300331T013000Z", "nightly.20300401T003000Z",
                            "nightly.20301026T003000Z", "nightly.20301027T003000Z", "nightly.20301028T013000Z"]
    for checkpoint in runs.values():
        assert checkpoint.run.status.value == "completed" and checkpoint.run.output == {"team": "ops"}
        assert checkpoint.metadata["schedule"]["name"] == "nightly"
    decisions = book.decisions("nightly", limit=100)
    assert [d.action for d in decisions] == ["start"] * 6
    assert {d.worker for d in decisions} <= {"w1", "w2"}
    assert not workers[0].errors and not workers[1].errors
    # The pause is in the schedule's log, with the window that did not run.
    events = [r["event"] for r in opener().schedules.records("nightly")]
    assert events == ["added", "paused", "resumed"]


def test_pause_resume_remove_and_add_again(opener: Opener, tmp_path: Path) -> None:
    clock, book, workers, sha = _setup(opener, tmp_path, "2030-01-07T08:00:00+00:00")
    book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=sha)
    with pytest.raises(ScheduleExistsError):
        book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=sha)
    _walk(clock, workers, "2030-01-07T10:00:00+00:00", step_minutes=60)
    assert sorted(scheduled_runs(workers[0].store, "hourly")) == ["hourly.20300107T090000Z", "hourly.20300107T100000Z"]
    assert book.pause("hourly").paused
    _walk(clock, workers, "2030-01-07T12:00:00+00:00", step_minutes=60)
    assert len(scheduled_runs(workers[0].store, "hourly")) == 2  # nothing while paused
    clock.advance(seconds=600)
    assert not book.resume("hourly").paused
    resumed = opener().schedules.records("hourly")[-1]
    assert resumed["event"] == "resumed" and resumed["not_run_from"] == "2030-01-07T10:00:00+00:00"
    clock.set("2030-01-07T13:00:00+00:00")
    passes_together(workers)
    assert sorted(scheduled_runs(workers[0].store, "hourly"))[-1] == "hourly.20300107T130000Z"
    assert len(scheduled_runs(workers[0].store, "hourly")) == 3  # 11:00 and 12:00 fell while paused
    book.remove("hourly")
    with pytest.raises(ScheduleNotFoundError):
        book.get("hourly")
    assert [s.name for s in book.list()] == []
    _walk(clock, workers, "2030-01-07T16:00:00+00:00", step_minutes=60)
    assert len(scheduled_runs(workers[0].store, "hourly")) == 3
    # The name may be used again; its ticks count from the new add.
    book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=sha)
    _walk(clock, workers, "2030-01-07T17:00:00+00:00", step_minutes=60)
    assert sorted(scheduled_runs(workers[0].store, "hourly"))[-1] == "hourly.20300107T170000Z"
    assert len(scheduled_runs(workers[0].store, "hourly")) == 4


def test_a_decided_tick_whose_run_was_never_created_is_started_once(opener: Opener, tmp_path: Path) -> None:
    """A worker killed between its decision and the run's creation: the next pass makes it good."""
    from abstractruntime.scheduler.schedules import TickDecision, tick_key

    clock, book, workers, sha = _setup(opener, tmp_path, "2030-01-07T08:59:00+00:00")
    book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=sha)
    tick = parse_iso("2030-01-07T09:00:00+00:00")
    decision = TickDecision(schedule="hourly", tick=tick.isoformat(), action="start", decided_at=tick.isoformat(),
                            worker="killed")
    assert opener().schedules.decide("hourly", tick_key(tick), decision.to_dict())[1]
    clock.advance(seconds=90)
    passes_together(workers)
    passes_together(workers)
    assert list(scheduled_runs(workers[0].store, "hourly")) == ["hourly.20300107T090000Z"]
    assert [d.worker for d in book.decisions("hourly")] == ["killed"]


def test_many_ticks_decided_by_two_workers_at_once(opener: Opener, tmp_path: Path) -> None:
    """A schedule every minute, both workers deciding the same 120 ticks at the same instants."""
    clock, book, workers, sha = _setup(opener, tmp_path, "2030-01-07T08:00:00+00:00")
    book.add("minutely", cron="* * * * *", workflow_id="quick", sha256=sha, catch_up="all", overlap="allow")
    for _ in range(12):
        clock.advance(seconds=600)
        passes_together(workers)
    runs = scheduled_runs(workers[0].store, "minutely")
    assert len(runs) == 120
    start = parse_iso("2030-01-07T08:01:00+00:00")
    expected = {f"minutely.{(start + timedelta(minutes=i)).strftime('%Y%m%dT%H%M%SZ')}" for i in range(120)}
    assert set(runs) == expected
    assert len(book.decisions("minutely", limit=1000)) == 120
