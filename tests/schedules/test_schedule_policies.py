"""Catch-up and overlap policies, each decision recorded; cron parsing; daylight-saving ticks."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import InvalidInputError, MissingExtraError
from abstractruntime.loader import file_sha256, load_workflow_file
from abstractruntime.registry import WorkflowFileRegistry
from abstractruntime.scheduler.cron import check_cron, ticks_between
from abstractruntime.scheduler.schedules import Schedules
from abstractruntime.storage.store import FileStore
from tests.schedules.schedule_support import QUICK, SLOW, Worker, scheduled_runs, write_workflow


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def _one_worker(tmp_path: Path, start: str, flow: str = QUICK, name: str = "quick") -> tuple[Any, ...]:
    clock = FixedClock(start)
    path = write_workflow(tmp_path / "flows", name, flow)
    store = FileStore(tmp_path / "store", durability="none")
    worker = Worker(store, clock, WorkflowFileRegistry([str(tmp_path / "flows")]), "w1")
    return clock, Schedules(store.schedules, clock=clock), worker, file_sha256(path), store


@pytest.mark.parametrize(("policy", "runs", "skips"), [
    ("skip", [], [("2030-01-07T13:00:00+00:00", 5, "2030-01-07T09:00:00+00:00")]),
    ("one", ["hourly.20300107T130000Z"], [("2030-01-07T12:00:00+00:00", 4, "2030-01-07T09:00:00+00:00")]),
    ("all", [f"hourly.20300107T{h:02d}0000Z" for h in range(9, 14)], []),
])
def test_missed_ticks_follow_the_catch_up_policy(tmp_path: Path, policy: str, runs: list[str],
                                                 skips: list[tuple[str, int, str]]) -> None:
    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T08:30:00+00:00")
    book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=sha, catch_up=policy, overlap="allow")
    clock.set("2030-01-07T13:30:00+00:00")  # no worker ran from 08:30 to 13:30
    worker.work_pass()
    assert sorted(scheduled_runs(store, "hourly")) == runs
    skipped = [(d.tick, d.ticks, d.first_tick) for d in book.decisions("hourly") if d.action == "skip"]
    assert skipped == skips
    assert all("missed" in d.reason for d in book.decisions("hourly") if d.action == "skip")
    worker.work_pass()  # nothing decided twice
    assert sorted(scheduled_runs(store, "hourly")) == runs


def test_a_tick_within_grace_starts_under_catch_up_skip(tmp_path: Path) -> None:
    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T08:30:00+00:00")
    book.add("hourly", cron="0 * * * *", workflow_id="quick", sha256=sha, grace_s=120)
    clock.set("2030-01-07T09:01:59+00:00")
    worker.work_pass()
    assert list(scheduled_runs(store, "hourly")) == ["hourly.20300107T090000Z"]


def _answer(store: Any, tmp_path: Path, run_id: str) -> None:
    workflow = load_workflow_file(tmp_path / "flows" / "slow.py").workflow
    store.runtime().resume(workflow=workflow, run_id=run_id, wait_key="done", payload={"ok": True})


def test_overlap_skip_records_the_tick_and_the_run_still_going(tmp_path: Path) -> None:
    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T08:59:00+00:00", SLOW, "slow")
    book.add("hourly", cron="0 * * * *", workflow_id="slow", sha256=sha)
    clock.set("2030-01-07T09:00:00+00:00")
    worker.work_pass()
    clock.set("2030-01-07T10:00:00+00:00")
    worker.work_pass()
    assert list(scheduled_runs(store, "hourly")) == ["hourly.20300107T090000Z"]
    latest = book.decisions("hourly")[0]
    assert (latest.action, latest.reason) == ("skip", "overlap: run hourly.20300107T090000Z is still going")


def test_overlap_allow_starts_beside_the_run_still_going(tmp_path: Path) -> None:
    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T08:59:00+00:00", SLOW, "slow")
    book.add("hourly", cron="0 * * * *", workflow_id="slow", sha256=sha, overlap="allow")
    for hour in ("09", "10"):
        clock.set(f"2030-01-07T{hour}:00:00+00:00")
        worker.work_pass()
    runs = scheduled_runs(store, "hourly")
    assert sorted(runs) == ["hourly.20300107T090000Z", "hourly.20300107T100000Z"]
    assert all(cp.run.status.value == "waiting" for cp in runs.values())


def test_overlap_queue_starts_the_tick_once_the_run_before_it_ends(tmp_path: Path) -> None:
    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T08:59:00+00:00", SLOW, "slow")
    book.add("hourly", cron="0 * * * *", workflow_id="slow", sha256=sha, overlap="queue")
    for hour in ("09", "10", "11"):
        clock.set(f"2030-01-07T{hour}:00:00+00:00")
        worker.work_pass()
    assert list(scheduled_runs(store, "hourly")) == ["hourly.20300107T090000Z"]
    assert [d.action for d in book.decisions("hourly")] == ["queue", "queue", "start"]
    _answer(store, tmp_path, "hourly.20300107T090000Z")
    worker.work_pass()
    assert sorted(scheduled_runs(store, "hourly")) == ["hourly.20300107T090000Z", "hourly.20300107T100000Z"]
    worker.work_pass()  # the 11:00 tick waits for the 10:00 run
    assert len(scheduled_runs(store, "hourly")) == 2
    _answer(store, tmp_path, "hourly.20300107T100000Z")
    worker.work_pass()
    runs = scheduled_runs(store, "hourly")
    assert sorted(runs)[-1] == "hourly.20300107T110000Z"
    assert runs["hourly.20300107T110000Z"].metadata["schedule"]["action"] == "queue"


@pytest.mark.parametrize("expression", ["0 9 * *", "61 * * * *", "0 9 * * FUNDAY", "", "0 0 9 * * *", "@often"])
def test_a_bad_cron_expression_is_refused_in_one_line(expression: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_cron(expression)
    assert "bad cron expression" in str(info.value) and "\n" not in str(info.value)


def test_cron_needs_the_schedules_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "croniter", None)  # as if it were not installed
    with pytest.raises(MissingExtraError) as info:
        check_cron("0 9 * * *")
    assert "schedules" in str(info.value)


def test_an_hourly_schedule_fires_once_in_the_repeated_hour() -> None:
    ticks = ticks_between("0 * * * *", "Europe/Paris", _utc(2030, 10, 26, 22, 30), _utc(2030, 10, 27, 3, 0))
    # 01:00 CEST, 02:00 CEST, (02:00 CET skipped: the same wall-clock hour again), 03:00 CET, 04:00 CET
    assert ticks == [_utc(2030, 10, 26, 23), _utc(2030, 10, 27, 0), _utc(2030, 10, 27, 2), _utc(2030, 10, 27, 3)]


def test_a_tick_in_the_spring_gap_lands_on_no_other_tick_twice() -> None:
    ticks = ticks_between("*/30 * * * *", "Europe/Paris", _utc(2030, 3, 30, 23, 59), _utc(2030, 3, 31, 2, 1))
    assert ticks == sorted(set(ticks))
    assert ticks == [_utc(2030, 3, 31, 0), _utc(2030, 3, 31, 0, 30), _utc(2030, 3, 31, 1), _utc(2030, 3, 31, 1, 30),
                     _utc(2030, 3, 31, 2)]


def test_a_removed_schedule_s_queue_never_starts_even_under_its_name_again(tmp_path: Path) -> None:
    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T08:59:00+00:00", SLOW, "slow")
    book.add("hourly", cron="0 * * * *", workflow_id="slow", sha256=sha, overlap="queue")
    for hour in ("09", "10"):
        clock.set(f"2030-01-07T{hour}:00:00+00:00")
        worker.work_pass()
    assert [d.action for d in book.decisions("hourly")] == ["queue", "start"]
    book.remove("hourly")
    _answer(store, tmp_path, "hourly.20300107T090000Z")
    clock.set("2030-01-07T10:30:00+00:00")
    book.add("hourly", cron="0 * * * *", workflow_id="slow", sha256=sha, overlap="queue")
    worker.work_pass()
    assert list(scheduled_runs(store, "hourly")) == ["hourly.20300107T090000Z"]  # 10:00 stays queued, unstarted
    clock.set("2030-01-07T11:00:00+00:00")
    worker.work_pass()
    assert sorted(scheduled_runs(store, "hourly")) == ["hourly.20300107T090000Z", "hourly.20300107T110000Z"]


def test_a_long_outage_is_skipped_as_one_range(tmp_path: Path) -> None:
    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T08:59:30+00:00")
    book.add("minutely", cron="* * * * *", workflow_id="quick", sha256=sha)
    clock.set("2030-01-10T12:00:30+00:00")  # three days, ~4,500 ticks, no worker
    worker.work_pass()
    assert list(scheduled_runs(store, "minutely")) == ["minutely.20300110T120000Z"]  # within grace
    decisions = book.decisions("minutely")
    assert [d.action for d in decisions] == ["start", "skip", "skip"]
    assert decisions[1].ticks == 59 and decisions[2].ticks is None
    assert decisions[2].first_tick == "2030-01-07T09:00:00+00:00"


def test_a_full_queue_skips_the_tick(tmp_path: Path) -> None:
    from abstractruntime.scheduler.schedules import QUEUE_LIMIT

    clock, book, worker, sha, store = _one_worker(tmp_path, "2030-01-07T00:30:00+00:00", SLOW, "slow")
    book.add("hourly", cron="0 * * * *", workflow_id="slow", sha256=sha, overlap="queue")
    for hour in range(1, QUEUE_LIMIT + 3):
        clock.set(f"2030-01-07T{hour:02d}:00:00+00:00")
        worker.work_pass()
    actions = [d.action for d in reversed(book.decisions("hourly", limit=100))]
    assert actions == ["start"] + ["queue"] * QUEUE_LIMIT + ["skip"]
    assert book.decisions("hourly")[0].reason == f"overlap: {QUEUE_LIMIT} ticks queued already"
    assert len(scheduled_runs(store, "hourly")) == 1
