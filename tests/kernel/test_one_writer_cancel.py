"""One writer when a tick is cancelled: nothing writes for a run once its lock is given up.

A synchronous effect handler runs in a worker thread under ``atick``; a thread cannot be
interrupted, so a cancellation waits for it, records what it returned, and only then gives the
run's lock up. A session that is given up (cancelled, or abandoned by an exception) is closed:
a late write from a thread the handler left behind raises and appends nothing. The file
store's conditional append is one compare-and-write, also against another process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime import Effect, EffectOutcome, EffectType, RunState, StepPlan, WorkflowSpec, current_effect, open_store
from abstractruntime.core.errors import LedgerConflictError, SessionClosedError
from abstractruntime.core.ports import LedgerHead
from abstractruntime.storage.ledger_files import JsonlLedgerStore
from abstractruntime.storage.verify import verify_run


def _flow() -> WorkflowSpec:
    return WorkflowSpec("slow", "work", {
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"r": run.vars["r"]}),
    })


class Calls:
    """A synchronous handler that takes ``seconds``, recording parts on the way; counts its runs."""

    def __init__(self, seconds: float, parts: int = 0) -> None:
        self.seconds, self.parts = seconds, parts
        self.begun = threading.Event()
        self.running = 0
        self.started = 0
        self.finished = 0
        self.overlaps = 0
        self.errors: list[BaseException] = []
        self._guard = threading.Lock()

    def __call__(self, run: RunState, effect: Effect) -> EffectOutcome:
        with self._guard:
            self.started += 1
            self.running += 1
            self.overlaps += self.running > 1
        self.begun.set()
        try:
            step = self.seconds / max(self.parts, 1)
            for index in range(max(self.parts, 1)):
                time.sleep(step)
                if self.parts:
                    current_effect().record_part(f"p{index}", index)  # type: ignore[union-attr]
            return EffectOutcome.completed({"done": True})
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            with self._guard:
                self.running -= 1
                self.finished += 1


async def _cancel_inside(rt: Any, wf: WorkflowSpec, run_id: str, calls: Calls) -> float:
    task = asyncio.create_task(rt.atick(workflow=wf, run_id=run_id))
    while not calls.begun.is_set():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.monotonic()


def test_a_cancelled_tick_waits_for_its_sync_handler_and_records_what_it_returned(tmp_path: Path) -> None:
    calls = Calls(0.4)
    wf = _flow()
    rt = open_store(tmp_path / "store").runtime(effect_handlers={EffectType.TOOL_CALLS: calls})
    run_id = rt.start(workflow=wf)
    asyncio.run(_cancel_inside(rt, wf, run_id, calls))
    # The cancellation returned only once the handler had ended: nothing runs for the run now.
    assert calls.finished == 1 and calls.running == 0
    ledger = rt.get_ledger(run_id)
    outcomes = [r for r in ledger if r["kind"] == "effect" and r["status"] != "started"]
    assert [r["status"] for r in outcomes] == ["completed"], ledger  # its result, not "cancelled"
    # The run goes on from there: the effect is not performed again.
    other = open_store(tmp_path / "store").runtime(effect_handlers={EffectType.TOOL_CALLS: calls})
    assert other.tick(workflow=wf, run_id=run_id).output == {"r": {"done": True}}
    assert calls.started == 1
    assert verify_run(tmp_path / "store", run_id).ok


def test_a_second_writer_after_a_cancel_never_runs_the_effect_beside_the_first(tmp_path: Path) -> None:
    calls = Calls(0.5, parts=5)
    wf = _flow()
    store = tmp_path / "store"
    rt = open_store(store).runtime(effect_handlers={EffectType.TOOL_CALLS: calls})
    run_ids = [rt.start(workflow=wf) for _ in range(3)]

    async def cancel_then_take_over() -> None:
        for run_id in run_ids:
            calls.begun.clear()
            await _cancel_inside(rt, wf, run_id, calls)
            # Another writer (its own stores, as another process would have) takes the run at once.
            other = open_store(store).runtime(effect_handlers={EffectType.TOOL_CALLS: calls})
            await asyncio.to_thread(other.tick, workflow=wf, run_id=run_id)

    asyncio.run(cancel_then_take_over())
    assert calls.overlaps == 0
    assert calls.errors == []
    assert calls.started == 3  # once per run
    for run_id in run_ids:
        assert verify_run(store, run_id).ok
        assert rt.get_state(run_id).output == {"r": {"done": True}}


def test_a_thread_left_behind_by_a_cancelled_async_handler_cannot_write(tmp_path: Path) -> None:
    late: list[BaseException] = []
    wrote = threading.Event()
    begun = threading.Event()

    def leftover(identity: Any) -> None:
        time.sleep(0.3)
        try:
            identity.record_part("late", 1)
        except BaseException as exc:  # noqa: BLE001 - what the stray thread got is the point
            late.append(exc)
        wrote.set()

    async def handler(run: RunState, effect: Effect) -> EffectOutcome:
        threading.Thread(target=leftover, args=(current_effect(),), daemon=True).start()
        begun.set()
        await asyncio.sleep(30)
        return EffectOutcome.completed({"done": True})

    wf = _flow()
    store = tmp_path / "store"
    rt = open_store(store).runtime(effect_handlers={EffectType.TOOL_CALLS: handler})
    run_id = rt.start(workflow=wf)

    async def cancel_it() -> None:
        task = asyncio.create_task(rt.atick(workflow=wf, run_id=run_id))
        while not begun.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    before = rt.get_ledger(run_id)
    assert before[-1]["status"] == "failed" and "cancelled" in before[-1]["error"]
    assert wrote.wait(5)
    assert len(late) == 1 and isinstance(late[0], SessionClosedError), late
    assert rt.get_ledger(run_id) == before  # nothing appended by the stray thread
    assert verify_run(store, run_id).ok


def test_the_file_append_is_one_compare_and_write_across_store_objects(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ledger stores on one folder (as two processes have) appending after the same head: one
    wins, the other gets LedgerConflictError, and the ledger stays a chain."""
    rt = open_store(tmp_path / "store").runtime()
    wf = WorkflowSpec("w", "end", {"end": lambda run, ctx: StepPlan("end", complete_output={})})
    run_id = rt.start(workflow=wf)
    first, second = JsonlLedgerStore(tmp_path / "store"), JsonlLedgerStore(tmp_path / "store")
    head = first.head(run_id)
    second.head(run_id)
    original = JsonlLedgerStore._refresh

    def slow_refresh(self: JsonlLedgerStore, *args: Any, **kwargs: Any) -> Any:
        cache = original(self, *args, **kwargs)
        time.sleep(0.2)  # both writers have read the head before either writes
        return cache

    monkeypatch.setattr(JsonlLedgerStore, "_refresh", slow_refresh)
    from abstractruntime.core.records import seal

    def batch(tag: str) -> tuple[list[dict[str, Any]], list[bytes]]:
        fields = {"format": 3, "seq": head.seq + 1, "kind": "metadata", "status": "completed",
                  "at": "2030-01-01T00:00:00+00:00", "prev_hash": head.head_hash, "result": {"updated": [tag]}}
        doc, line = seal(fields, chained=True)
        return [doc], [line]

    outcomes: dict[str, Any] = {}

    def append(name: str, store: JsonlLedgerStore) -> None:
        docs, lines = batch(name)
        try:
            outcomes[name] = store.append_lines(run_id, docs, lines, expect=LedgerHead(head.seq, head.head_hash,
                                                                                         offset=head.offset))
        except LedgerConflictError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=append, args=(n, s)) for n, s in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(JsonlLedgerStore, "_refresh", original)
    assert sorted(type(v).__name__ for v in outcomes.values()) == ["LedgerConflictError", "LedgerHead"], outcomes
    assert verify_run(tmp_path / "store", run_id).ok
    assert JsonlLedgerStore(tmp_path / "store").head(run_id).seq == head.seq + 1


def test_tools_running_in_threads_finish_and_are_recorded_when_their_effect_is_cancelled(tmp_path: Path) -> None:
    from abstractruntime.integrations.abstractcore.effect_handlers import make_tool_calls_handler
    from abstractruntime.integrations.abstractcore.tool_executor import LocalToolExecutor

    ran: list[str] = []
    started: list[str] = []
    begun = threading.Event()

    def slow(city: str) -> str:
        started.append(city)
        begun.set()
        time.sleep(0.4)
        ran.append(city)
        return f"sunny in {city}"

    calls = [{"name": "slow", "arguments": {"city": c}, "call_id": c} for c in ("Paris", "Rome")]
    wf = WorkflowSpec("tools", "work", {
        "work": lambda run, ctx: StepPlan("work", next_node="end",
                                          effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"r": run.vars["r"]}),
    })
    handler = make_tool_calls_handler(tools=LocalToolExecutor([slow], max_threads=2))
    rt = open_store(tmp_path / "store").runtime(effect_handlers={EffectType.TOOL_CALLS: handler})
    run_id = rt.start(workflow=wf)

    async def cancel_it() -> None:
        task = asyncio.create_task(rt.atick(workflow=wf, run_id=run_id))
        while not begun.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ran and sorted(ran) == sorted(started)  # what began ended before the cancellation was told

    asyncio.run(cancel_it())
    parts = [r["result"]["part"] for r in rt.get_ledger(run_id) if r["kind"] == "part"]
    assert sorted(parts) == sorted(ran)  # and is recorded
    state = open_store(tmp_path / "store").runtime(effect_handlers={EffectType.TOOL_CALLS: handler}).tick(
        workflow=wf, run_id=run_id)
    assert [r["output"] for r in state.output["r"]["results"]] == ["sunny in Paris", "sunny in Rome"]
    assert sorted(ran) == ["Paris", "Rome"]  # not run again
    assert verify_run(tmp_path / "store", run_id).ok
