"""Timers and explicit resumes: the scheduler, its workflow registry and a bundled runtime;
cron schedules (:class:`Schedules`, whose expressions need the ``schedules`` extra).

Standard library only. See docs/scheduler.md and docs/schedules.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time each name loads on first use (below): `scheduler.events` alone stays light
    from .convenience import ScheduledRuntime, create_scheduled_runtime
    from .registry import WorkflowNotRegisteredError, WorkflowRegistry
    from .scheduler import Scheduler, SchedulerStats
    from .schedules import Schedule, Schedules

_EXPORTS = {
    "ScheduledRuntime": "convenience",
    "create_scheduled_runtime": "convenience",
    "WorkflowNotRegisteredError": "registry",
    "WorkflowRegistry": "registry",
    "Scheduler": "scheduler",
    "SchedulerStats": "scheduler",
    "Schedule": "schedules",
    "Schedules": "schedules",
}

__all__ = [
    "WorkflowRegistry",
    "WorkflowNotRegisteredError",
    "Scheduler",
    "SchedulerStats",
    "ScheduledRuntime",
    "create_scheduled_runtime",
    "Schedule",
    "Schedules",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
