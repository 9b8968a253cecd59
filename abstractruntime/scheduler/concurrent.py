"""Advancing many runs at once on one event loop, still one writer per run.

:func:`advance_many` ticks up to ``concurrency`` runs at the same time with
:meth:`Runtime.atick <abstractruntime.core.runtime.Runtime.atick>`: while one run's effect
awaits an LLM or a tool, the others advance. Each run is still advanced under its own lock
(a run another process holds is skipped, not waited for), so a fleet of such workers never
has two writers on one run. Cancelling the call (e.g. on SIGTERM) cancels the in-flight ticks:
an effect interrupted that way is recorded as a failed attempt and runs again on the next tick,
every lock is released, and every ledger still verifies.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from ..core.errors import AbstractRuntimeError, RunLockedError
from ..core.models import RunState
from ..core.spec import WorkflowSpec


@dataclass
class BatchResult:
    """What :func:`advance_many` did: the states it produced, runs skipped as locked, errors by run."""

    states: list[RunState] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


async def advance_many(
    runtime: Any,
    work: Iterable[tuple[WorkflowSpec, str]],
    *,
    concurrency: int = 10,
    max_steps: int = 100,
    on_state: Optional[Callable[[RunState], None]] = None,
) -> BatchResult:
    """Tick every ``(workflow, run_id)`` of ``work``, at most ``concurrency`` at a time.

    A run locked by another writer is skipped (``locked``); a run whose tick raises a project
    error is reported in ``errors`` and the others go on.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)
    result = BatchResult()

    async def one(workflow: WorkflowSpec, run_id: str) -> None:
        async with gate:
            try:
                state = await runtime.atick(workflow=workflow, run_id=run_id, max_steps=max_steps)
            except RunLockedError:
                result.locked.append(run_id)
                return
            except AbstractRuntimeError as exc:
                result.errors[run_id] = str(exc)
                return
            result.states.append(state)
            if on_state is not None:
                on_state(state)

    tasks = [asyncio.create_task(one(workflow, run_id)) for workflow, run_id in work]
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        # Let every tick unwind (record its cancelled attempt, release its lock) before returning.
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return result


__all__ = ["BatchResult", "advance_many"]
