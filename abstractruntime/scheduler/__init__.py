"""Timers and explicit resumes: the scheduler, its workflow registry and a bundled runtime.

Standard library only. See docs/scheduler.md.
"""

from __future__ import annotations

from .convenience import ScheduledRuntime, create_scheduled_runtime
from .registry import WorkflowNotRegisteredError, WorkflowRegistry
from .scheduler import Scheduler, SchedulerStats

__all__ = [
    "WorkflowRegistry",
    "WorkflowNotRegisteredError",
    "Scheduler",
    "SchedulerStats",
    "ScheduledRuntime",
    "create_scheduled_runtime",
]
