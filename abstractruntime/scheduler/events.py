"""Delivering an event to every run waiting on its key: :func:`emit_event`.

The runs are found with the store's indexed query on the wait key (not a scan of all waiting
runs), oldest first. Each one is answered with exactly the wait seen in the listing: another
emitter that got there first makes it "already answered", never an answer to the run's next
wait. By default each run is then advanced at once by the emitter; with ``hand_off=True`` the
answer is recorded and the run left ``running`` for a worker (``abstractruntime worker``) to
advance, and the store's workers are woken (``NOTIFY`` on PostgreSQL) so one claims it now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..core.errors import AbstractRuntimeError, AlreadyAnsweredError, NotFoundError
from ..core.models import RunState
from ..storage.query import waiting_on

if TYPE_CHECKING:
    from ..core.runtime import Runtime
    from ..core.spec import WorkflowSpec

# Seconds an emit waits for a run another process holds (most likely another emitter resuming it).
EMIT_LOCK_WAIT = 10.0


@dataclass
class EmitResult:
    """What :func:`emit_event` did: new states, runs another process answered first, errors by run."""

    states: list[RunState] = field(default_factory=list)
    already_answered: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def emit_event(
    run_store: Any,
    event_key: str,
    payload: Any,
    *,
    resolve: Callable[[RunState], "tuple[WorkflowSpec, Runtime]"],
    hand_off: bool = False,
    allow_drift: bool = False,
    lock_wait: float = EMIT_LOCK_WAIT,
    limit: int = 100_000,
    check: Optional[Callable[[RunState, Any], None]] = None,
) -> EmitResult:
    """Answer every run waiting on ``event_key`` with ``payload``.

    ``resolve(run) -> (workflow, runtime)`` gives what each run is resumed with; ``check(run,
    payload)`` may refuse a run's answer before anything is written (raise a project error).
    :class:`NotFoundError` when no run waits on the key. A failing run is reported in
    ``errors`` and the others go on.
    """
    runs = waiting_on(run_store, event_key, limit=limit)
    if not runs:
        raise NotFoundError(f"no run is waiting on {event_key!r}", event_key=event_key)
    result = EmitResult()
    for run in runs:
        try:
            if check is not None:
                check(run, payload)
            workflow, runtime = resolve(run)
            # A short lock wait lets a concurrent emitter finish with the run first.
            state = runtime.resume(workflow=workflow, run_id=run.run_id, wait_key=event_key,
                                   wait_id=run.waiting.wait_id if run.waiting else None, payload=payload,
                                   allow_drift=allow_drift, lock_wait=lock_wait, max_steps=0 if hand_off else 100)
            result.states.append(state)
        except AlreadyAnsweredError:
            result.already_answered.append(run.run_id)
        except AbstractRuntimeError as exc:
            result.errors[run.run_id] = str(exc)
    wake = getattr(run_store, "wake", None)
    if hand_off and result.states and callable(wake):
        wake([state.run_id for state in result.states])
    return result


__all__ = ["EMIT_LOCK_WAIT", "EmitResult", "emit_event"]
