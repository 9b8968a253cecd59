"""Shared pieces of the schedule tests: stores of both kinds, workers on one fake clock."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from abstractruntime.core.clock import FixedClock
from abstractruntime.registry import WorkflowFileRegistry
from abstractruntime.scheduler import Scheduler, WorkflowRegistry
from abstractruntime.scheduler.schedules import Schedules
from abstractruntime.workflow_files import schedule_resolver

QUICK = '''from abstractruntime import StepPlan, WorkflowSpec

workflow = WorkflowSpec("quick", "end", {"end": lambda run, ctx: StepPlan(
    "end", complete_output={"team": run.vars.get("team")})})
'''

SLOW = '''from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def ask(run, ctx):
    effect = Effect(EffectType.ASK_USER, {"prompt": "done?", "wait_key": "done"}, result_key="done")
    return StepPlan("ask", effect=effect, next_node="end")


workflow = WorkflowSpec("slow", "ask", {"ask": ask, "end": lambda run, ctx: StepPlan("end", complete_output={})})
'''


def write_workflow(folder: Path, name: str, text: str) -> Path:
    """A workflow file under ``folder`` (the registry's directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    return path


class Opener:
    """Opens the same store again and again, as another worker process would (its own connections)."""

    def __init__(self, kind: str, tmp_path: Path, postgres_url: Optional[str]) -> None:
        self.kind = kind
        self.root = tmp_path / "store"
        self.url = postgres_url
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self.opened: list[Any] = []

    def __call__(self) -> Any:
        if self.kind == "folder":
            from abstractruntime.storage.store import FileStore

            store: Any = FileStore(self.root, durability="none")
        else:
            from abstractruntime.storage.postgres.store import PostgresStore

            assert self.url is not None
            store = PostgresStore(self.url, schema=self.schema)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()


class Worker:
    """A worker over its own opening of the store, on the shared fake clock."""

    def __init__(self, store: Any, clock: FixedClock, registry: WorkflowFileRegistry, name: str) -> None:
        self.store = store
        store.runtime_defaults["clock"] = clock
        self.errors: list[str] = []
        self.scheduler = Scheduler(runtime=store.runtime(), registry=WorkflowRegistry(), worker_id=name,
                                   schedules=Schedules(store.schedules, clock=clock),
                                   resolve_schedule=schedule_resolver(store, registry=registry),
                                   resolve_checkpoint=self._resolve_run,
                                   on_schedule_failed=lambda _name, message: self.errors.append(message),
                                   on_run_failed=lambda run_id, exc: self.errors.append(f"run {run_id}: {exc}"))
        self._registry = registry

    def _resolve_run(self, checkpoint: Any) -> Any:
        from abstractruntime.workflow_files import load_for_run

        loaded, runtime = load_for_run(self.store, checkpoint.run.run_id, registry=self._registry,
                                       checkpoint=checkpoint)
        return loaded.workflow, runtime

    def work_pass(self) -> list[Any]:
        return self.scheduler.work_pass()


def passes_together(workers: list[Worker]) -> None:
    """One work pass of every worker at the same moment (threads behind a barrier)."""
    barrier = threading.Barrier(len(workers))
    failures: list[BaseException] = []

    def go(worker: Worker) -> None:
        try:
            barrier.wait()
            worker.work_pass()
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=go, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def scheduled_runs(store: Any, name: str) -> dict[str, Any]:
    """The runs of a schedule, by id, with their checkpoints."""
    runtime = store.runtime()
    return {info.run_id: runtime.get_checkpoint(info.run_id) for info in store.runs.list_runs(limit=100_000)
            if info.run_id.startswith(f"{name}.")}


Step = Callable[[], None]
