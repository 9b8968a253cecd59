"""One concurrent worker pass: the due runs of the store, up to N at a time on one event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from . import workflows
from .output import Settings


def concurrent_pass(s: Settings, *, limit: int, concurrency: int, stop: threading.Event,
                    llm: Any = None) -> tuple[list[Any], list[str]]:
    """Advance every due run, and every run left ``running``, with ``advance_many`` (``concurrency``
    at a time); returns (states, errors).

    Each run is loaded with the workflow file the hash chain trusts, exactly as ``tick --due``;
    runs another process holds are skipped. When ``stop`` is set (SIGINT/SIGTERM) the in-flight
    ticks are cancelled: each interrupted effect is recorded as a failed attempt and runs again on
    the next tick, and every lock is released.
    """
    from abstractruntime.core.errors import AbstractRuntimeError
    from abstractruntime.scheduler.concurrent import advance_many

    store = s.open_store()
    now_iso = store.runtime().now().isoformat()
    from abstractruntime.core.models import RunStatus

    due = store.runs.list_due_wait_until(now_iso=now_iso, limit=limit)
    # Runs left `running` (a stopped or killed worker, an interrupted effect) are picked up too;
    # one another process is advancing right now is locked, and skipped.
    listed = {run.run_id for run in due}
    due += [run for run in store.runs.list_runs(status=RunStatus.RUNNING, limit=limit) if run.run_id not in listed]
    groups: dict[tuple[str, str], tuple[Any, Any, list[tuple[Any, str]]]] = {}
    errors: list[str] = []
    for run in due:
        try:
            checkpoint = store.runtime().get_checkpoint(run.run_id)
            key = (workflows.recorded_source(checkpoint) or "", run.workflow_id)
            if key not in groups:
                loaded, runtime = workflows.load_for_run(store, run.run_id, llm=llm, info=s.info)
                groups[key] = (loaded, runtime, [])
            loaded, runtime, work = groups[key]
            work.append((loaded.workflow, run.run_id))
        except AbstractRuntimeError as exc:
            errors.append(f"run {run.run_id}: {exc}")

    async def drain() -> list[Any]:
        states: list[Any] = []
        for _loaded, runtime, work in groups.values():
            batch = asyncio.ensure_future(advance_many(runtime, work, concurrency=concurrency))
            while not batch.done():
                await asyncio.wait([batch], timeout=0.1)
                if stop.is_set() and not batch.done():
                    batch.cancel()  # SIGTERM: every in-flight tick unwinds and releases its run
            if batch.cancelled():
                break
            result = batch.result()
            states.extend(result.states)
            errors.extend(f"run {run_id}: {message}" for run_id, message in result.errors.items())
        return states

    states = asyncio.run(drain())
    listed = {run.run_id: run.waiting.wait_id if run.waiting else None for run in due}
    # A run another worker fired first comes back unchanged: not reported as advanced here.
    advanced = [st for st in states if not (st.waiting is not None and st.waiting.wait_id is not None
                                            and st.waiting.wait_id == listed.get(st.run_id))]
    return advanced, errors
