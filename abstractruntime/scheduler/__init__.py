"""Timers and explicit resumes: the scheduler, its workflow registry and a bundled runtime;
cron schedules (:class:`Schedules`, whose expressions need the ``schedules`` extra).

Standard library only. See docs/scheduler.md and docs/schedules.md.
"""

from __future__ import annotations

from .convenience import ScheduledRuntime, create_scheduled_runtime
from .registry import WorkflowNotRegisteredError, WorkflowRegistry
from .scheduler import Scheduler, SchedulerStats
from .schedules import Schedule, Schedules

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
