"""One Runtime used from several threads at once (a scheduler's thread beside the caller's)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from abstractruntime.core.models import Effect, EffectType, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore

WF = WorkflowSpec("w", "a", {
    "a": lambda run, ctx: StepPlan("a", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}), next_node="b"),
    "b": lambda run, ctx: StepPlan("b", complete_output={}),
})


class MeetInEviction(dict):  # type: ignore[type-arg]
    """The runtime's warm cache, holding two threads together just before each evicts its oldest
    entry: what two unsynchronised evictions do at the worst moment (both chose the same one)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.barrier = threading.Barrier(2, timeout=1.0)

    def pop(self, key: Any, *default: Any) -> Any:
        if not default:  # an eviction (a lookup passes a default)
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                pass  # the other thread could not get here at the same time: the cache is guarded
        return super().pop(key, *default)


def test_two_threads_evicting_from_the_warm_cache_at_once_do_not_fail_a_tick(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", durability="none")
    rt = store.runtime()
    for i in range(64):  # a full cache: the next tick of a new run evicts the oldest entry
        rt.tick(workflow=WF, run_id=rt.start(workflow=WF, run_id=f"old-{i}"))
    rt._warm = MeetInEviction(rt._warm)
    errors: list[BaseException] = []
    states: list[Any] = []

    def tick(run_id: str) -> None:
        try:
            states.append(rt.tick(workflow=WF, run_id=rt.start(workflow=WF, run_id=run_id)))
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever a tick raised
            errors.append(exc)

    threads = [threading.Thread(target=tick, args=(f"new-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and [s.status for s in states] == [RunStatus.WAITING] * 2
    assert len(rt._warm) == 64 and {"new-0", "new-1"} <= set(rt._warm)
